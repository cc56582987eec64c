/**
 * Real IMDS clients as people run them on instances, from Debian's packages: the AWS SDKs' own
 * credential code (botocore, the legacy boto, aws-sdk-go v1 and v2, aws-sdk-ruby), amazon-ec2-utils'
 * `ec2-metadata`, and cloud-init's EC2 datasource. Each is driven through the code path an
 * application or the boot takes (credential chains, the datasource's own service discovery), with
 * every other credential source turned off and every endpoint pointed at the lab's address only.
 *
 * stdout may hold credentials: tests may assert on it but must never print it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IMDS_V4, type Lab } from '../../lab/netns.js';
import { runClient, type ClientRun } from './clients.js';

const PY = '/usr/bin/python3';

/** The environment every SDK client runs with (on top of clientEnv's): lab endpoint only, no other source. */
export function sdkEnv(home: string): NodeJS.ProcessEnv {
  return {
    HOME: home, // no ~/.aws, ~/.boto, ~/.gem of the host
    AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://${IMDS_V4}/`,
    AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: 'IPv4',
    AWS_EC2_METADATA_DISABLED: 'false',
    BOTO_CONFIG: '/dev/null', // boto (and botocore's boto2 config provider): no /etc/boto.cfg
    AWS_REGION: 'us-east-1', // no region lookups anywhere else
    AWS_DEFAULT_REGION: 'us-east-1',
  };
}

/** What a driver printed on stdout: the access key it got (IMDSv1 and IMDSv2 callers get different ones). */
export interface SdkOutput {
  accessKeyId?: string;
  instanceId?: string;
}

export interface SdkClient {
  name: string;
  /** Debian package(s) it comes from. */
  packages: string[];
  /** The User-Agent its requests carry (what the library or tool names itself, or its HTTP stack). */
  userAgent: RegExp;
  run(lab: Lab, ns: string, home: string, timeoutMs: number): Promise<ClientRun>;
}

// ---------------------------------------------------------------------------------------------
// Python

const PY_BOTOCORE = `
import json, sys
import botocore.session
creds = botocore.session.get_session().get_credentials()
if creds is None:
    sys.stderr.write('no credentials\\n')
    sys.exit(1)
print(json.dumps({'accessKeyId': creds.get_frozen_credentials().access_key, 'method': creds.method}))
`;

const PY_BOTO = `
import json, sys
import boto.provider
key = boto.provider.Provider('aws').get_access_key()
if not key:
    sys.stderr.write('no credentials\\n')
    sys.exit(1)
print(json.dumps({'accessKeyId': key}))
`;

// cloud-init's EC2 datasource as at boot on AWS: on EC2 it knows it is on AWS from the DMI data
// (which the lab has not), so that one fact is set; everything else is the datasource's own code:
// service discovery (token PUT), then the metadata crawl.
const PY_CLOUD_INIT = `
import json, logging, sys
from cloudinit import distros, helpers, util
from cloudinit.sources import DataSourceEc2 as ec2
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
run = sys.argv[1]
paths = helpers.Paths({'run_dir': run, 'cloud_dir': run})
distro = distros.fetch('debian')('debian', {}, paths)
# max_wait = timeout: one attempt. (Its retry loop rounds the time left down to whole seconds, and
# 0 becomes "no timeout": with e.g. max_wait 4, timeout 1 its last token PUT waits forever when the
# answer never comes. Its EC2 defaults, 120 and 50, give up after two attempts.)
cfg = {'datasource': {'Ec2': {'metadata_urls': ['http://169.254.169.254'], 'max_wait': 2, 'timeout': 2}}}
ds = ec2.DataSourceEc2(sys_cfg=cfg, distro=distro, paths=paths)
ds._cloud_name = ec2.CloudNames.AWS
# Its DNS-redirection probe resolves made-up names through the host's resolver: the lab has no DNS,
# and no query may leave it. The metadata address is a literal IP, which needs no lookup.
util._DNS_REDIRECT_IP = set()
if not ds.wait_for_metadata_service():
    sys.stderr.write('no metadata service\\n')
    sys.exit(1)
crawled = ds.crawl_metadata()
md = crawled.get('meta-data', {}) if crawled else {}
print(json.dumps({'instanceId': md.get('instance-id')}))
`;

// ---------------------------------------------------------------------------------------------
// Ruby

const RUBY_SDK = `
require 'json'
require 'aws-sdk-core'
# The default credential chain, as a client gets it (env, files, ECS, then the instance profile).
creds = Aws::CredentialProviderChain.new.resolve
key = creds && creds.credentials && creds.credentials.access_key_id
if key.nil? || key.empty?
  warn 'no credentials'
  exit 1
end
puts JSON.generate({ accessKeyId: key, provider: creds.class.name })
`;

// ---------------------------------------------------------------------------------------------
// Go

const GO_SDK_V1 = `package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go/aws/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go/aws/ec2metadata"
	"github.com/aws/aws-sdk-go/aws/session"
)

func main() {
	sess := session.Must(session.NewSession())
	v, err := ec2rolecreds.NewCredentialsWithClient(ec2metadata.New(sess)).Get()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]string{"accessKeyId": v.AccessKeyID})
	fmt.Println(string(out))
}
`;

const GO_SDK_V2 = `package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

func main() {
	client := imds.New(imds.Options{Endpoint: os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")})
	v, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]string{"accessKeyId": v.AccessKeyID})
	fmt.Println(string(out))
}
`;

export interface GoBuild {
  /** Binaries by SDK: 'v1', 'v2'. */
  bin: Record<'v1' | 'v2', string>;
  remove(): void;
}

/** Whether Go and Debian's aws-sdk-go sources are installed (GOPATH mode, no module downloads). */
export function goSdkSupport(): { ok: boolean; reason?: string } {
  if (spawnSync('go', ['version']).status !== 0) return { ok: false, reason: 'go not installed (golang-go)' };
  for (const [dir, pkg] of [['github.com/aws/aws-sdk-go', 'golang-github-aws-aws-sdk-go-dev'],
    ['github.com/aws/aws-sdk-go-v2', 'golang-github-aws-aws-sdk-go-v2-dev']]) {
    if (!existsSync(join('/usr/share/gocode/src', dir))) return { ok: false, reason: `${pkg} not installed` };
  }
  return { ok: true };
}

/**
 * Compile both Go programs once, into a temp dir, against Debian's packaged SDK sources (GOPATH
 * mode: nothing is downloaded; GOPROXY=off makes sure of it).
 */
export function buildGoClients(): GoBuild {
  const dir = mkdtempSync(join(tmpdir(), 'imdst-go-'));
  const env = {
    ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOPROXY: 'off', GOFLAGS: '',
    GOCACHE: join(dir, 'cache'), HOME: dir, CGO_ENABLED: '0',
  };
  const bin = { v1: join(dir, 'sdk-go-v1'), v2: join(dir, 'sdk-go-v2') };
  for (const [name, src] of [['v1', GO_SDK_V1], ['v2', GO_SDK_V2]] as const) {
    const srcDir = join(dir, `src-${name}`);
    mkdirSync(srcDir);
    writeFileSync(join(srcDir, 'main.go'), src);
    const r = spawnSync('go', ['build', '-o', bin[name], '.'], { cwd: srcDir, env, encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`go build (aws-sdk-go ${name}) failed: ${r.stderr}`);
    }
  }
  rmSync(join(dir, 'cache'), { recursive: true, force: true });
  return { bin, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------
// The catalogue

const run = (cmd: string, args: string[]) => (lab: Lab, ns: string, home: string, timeoutMs: number): Promise<ClientRun> =>
  runClient(lab, cmd, args, { ns, timeoutMs, env: sdkEnv(home) });

/** How long ec2-metadata may wait for an answer before it is killed. */
export const EC2_METADATA_LIMIT_S = 5;

/** The clients that need nothing built; the Go ones come from goClients(). */
export const SDK_CLIENTS: SdkClient[] = [
  { name: 'botocore', packages: ['python3-botocore'], userAgent: /^Botocore\/\d/, run: run(PY, ['-c', PY_BOTOCORE]) },
  { name: 'boto (legacy)', packages: ['python3-boto'], userAgent: /^Python-urllib\/3/, run: run(PY, ['-c', PY_BOTO]) },
  { name: 'aws-sdk-ruby', packages: ['ruby-aws-sdk-core'], userAgent: /^aws-sdk-ruby3\/\d/, run: run('ruby', ['-e', RUBY_SDK]) },
  // ec2-metadata runs curl without a time limit: when the token answer never comes it waits (minutes),
  // so it runs under timeout(1), which kills its whole process group.
  {
    name: 'ec2-metadata', packages: ['amazon-ec2-utils'], userAgent: /^curl\/\d/,
    run: run('timeout', ['-s', 'KILL', String(EC2_METADATA_LIMIT_S), 'ec2-metadata', '--instance-id']),
  },
  // cloud-init's token PUTs and first GET name it; its metadata crawl sends requests' own User-Agent.
  {
    name: 'cloud-init', packages: ['cloud-init'], userAgent: /^(Cloud-Init|python-requests)\/\d/,
    run: (lab, ns, home, timeoutMs) => run(PY, ['-c', PY_CLOUD_INIT, join(home, 'cloud')])(lab, ns, home, timeoutMs),
  },
];

export function goClients(build: GoBuild): SdkClient[] {
  return [
    { name: 'aws-sdk-go', packages: ['golang-github-aws-aws-sdk-go-dev', 'golang-go'], userAgent: /^aws-sdk-go\/\d/, run: run(build.bin.v1, []) },
    { name: 'aws-sdk-go-v2', packages: ['golang-github-aws-aws-sdk-go-v2-dev', 'golang-go'], userAgent: /^aws-sdk-go-v2\/\d/, run: run(build.bin.v2, []) },
  ];
}

/** Parse a driver's stdout line (credentials inside: never print it). */
export function sdkOutput(r: ClientRun): SdkOutput {
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as SdkOutput;
  } catch {
    return {};
  }
}
