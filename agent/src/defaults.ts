/** Every default of the agent, in one place. */
export const DEFAULTS = {
  interface: 'any',
  logFile: '/var/log/imds-tracer/calls.jsonl',
  logDirMode: 0o700,
  logFileMode: 0o600,
  backend: 'auto' as const,
  ancestors: 4,
  /** IMDS endpoints on every EC2 instance. */
  imdsIPv4: ['169.254.169.254'],
  imdsIPv6: ['fd00:ec2::254'],
  imdsPort: 80,
  /**
   * The capture helper's libpcap ring (native/imds_capture's third argument; it has no default of its
   * own). The ring is mmap'd whole when capture starts, so all of it counts in the helper's RSS from
   * the first second. libpcap cuts it into 256 KiB TPACKET_V3 blocks, each retired after 10 ms even if
   * nearly empty, so what matters is how long the helper may be kept off the CPU: 16 blocks = 160 ms
   * at any rate the IMDS allows. Measured (bench/RESULTS.md, Memory under load and Replay, 2026-12-02):
   * 4 MiB lost nothing at 5,000 req/s nor in a top-speed replay of 63,000 packets in 0.15 s; 2 MiB
   * (8 blocks) lost 236 packets at 5,000 req/s on the loaded 2-vCPU lab; 8 MiB cost 4 MiB more RSS
   * for nothing. Bursts longer than the ring wait in the helper's own output queue, not here.
   */
  pcapBufferBytes: 4 * 1024 * 1024,
  /**
   * A loss (packets the capture dropped, kernel events the eBPF loader lost) is one `error` when its
   * counter starts to grow and one `notice`, with how many were lost and when, once the counter has
   * not grown for this long.
   */
  lossQuietMs: 10_000,
  /** The in-process `cap` binding's buffer (fallback of source builds: TPACKET_V2, 64 KiB per frame, so 128 frames). */
  pcapBindingBufferBytes: 8 * 1024 * 1024,
  /** How long a request waits for its response before its record is written anyway. */
  responseWaitMs: 1500,
  /** How long a request waits for attribution to finish before its record is written anyway. */
  attributionWaitMs: 3000,
  /** `read`: packets pushed between two turns of the event loop (records are written out in between). */
  readBatchPackets: 5000,
  /** `read`: packets pushed between two turns of the event loop, where the records they decided are made (a divisor of readBatchPackets). */
  readTurnPackets: 100,
  /** `read -`: a quiet pipe is read again after this long, then twice as long each time (signals heard, records written meanwhile). */
  readQuietMs: 10,
  /** `read -`: the longest a quiet pipe waits before it is read again. */
  readQuietMaxMs: 100,
  /** `read`: idle flows are swept every this much file time. */
  readSweepMs: 10_000,
  /** How long a closed connection of the agent's own stays known as its own (its frames may be late). */
  ownSocketKeepMs: 30_000,
  /** Bounds of the wire state (each eviction is counted in stats). */
  maxFlows: 10_000,
  maxBufferedBytesPerDirection: 64 * 1024,
  maxOutOfOrderSegments: 64,
  /** A request head larger than this is parsed in part (flagged headers_truncated). */
  maxHeaderBytes: 16 * 1024,
  /** Per direction: delivered bytes not yet acknowledged, kept to compare retransmitted copies with. */
  maxUnackedWindowBytes: 16 * 1024,
  /** All flows together hold at most this many bytes (heads in progress, out-of-order segments). */
  maxBufferedBytesTotal: 32 * 1024 * 1024,
  maxPendingCalls: 10_000,
  /**
   * Calls whose records wait for their caller's attribution (at most attributionWaitMs each) at
   * most: past it a record is written at once, attribution `none`, counted in
   * stats.calls_unattributed_overload. Bounds the memory of a burst attribution cannot keep up with
   * (a replayed capture, a flood from callers the kernel cannot name).
   */
  maxAttributingCalls: 4096,
  /** Attribution lookups started at SYN time at once; beyond it a flow is looked up at its first request. */
  maxEarlyLookups: 256,
  /** An idle TCP flow is forgotten after this long. */
  flowIdleMs: 120_000,
  /** How long a kernel connect event and a wire flow may be apart and still be joined. */
  joinWindowMs: 10_000,
  /** How long a new connection waits for its kernel event before /proc is asked instead. */
  joinWaitMs: 2000,
  /**
   * Kernel connect events kept for joining (each eviction is counted). An event is kept 2 ×
   * joinWindowMs whether joined or not, and holds its process (argv, ancestors: ~2.5 KB of heap), so
   * 10,000 cost ~25 MB under a connect flood. 4,096 still keeps every event twice joinWaitMs at the
   * per-source kernel budget (1,000/s × 2 s × 2); the oldest, long joined, go first. Measured
   * (bench/connect-rate.mjs, 15 s at 1,000 connects/s): node's anonymous RSS 69 → 53 MB, every
   * connect still joined (14,998 of 14,998; 10,000: 14,987 of 14,991).
   */
  maxPendingJoins: 4096,
  /**
   * Kernel budget per source (network namespace + cgroup): events per second, and burst. The IMDS
   * itself answers at most 1,024 packets/s per network interface (three or more per connection), so a
   * working service cannot sustain more than a few hundred new IMDS connections a second: 1,000/s
   * (burst 2,000) never throttles one, and still bounds a source that loops on connect() (its excess
   * counted in stats.kernel.sources_over_budget, its calls attributed from /proc). The pipeline
   * behind it takes 5,000/s from one source with none lost (bench/RESULTS.md); IMDS_TRACER_EBPF_BUDGET
   * raises or removes the budget.
   */
  ebpfBudgetRate: 1000,
  ebpfBudgetBurst: 2000,
  /**
   * At exit, network namespaces with connections still waiting for the wire and no verdict yet are
   * judged once more: at most this many, for at most this long, before those connections are written.
   */
  ebpfExitJudgeMax: 64,
  ebpfExitJudgeMs: 2000,
  /** How often network namespaces are judged reachable (kept) or not (filtered in the kernel). */
  netnsRefreshMs: 10_000,
  /** Network namespaces with a verdict at most (the kernel map's size). */
  maxNetns: 1024,
  /** eBPF: cgroup paths whose container / systemd unit are kept, so a cgroup's are worked out once. */
  maxCgroupFacts: 1024,
  statsIntervalMs: 60_000,
  /** Records for connections the kernel saw and the wire did not: a burst of this many, then this many a minute; beyond, counted only. */
  unseenRecordBurst: 100,
  unseenRecordsPerMinute: 60,
  // --- logs, report, resources, CloudWatch ---
  /** The log file is rotated before a line would take it past this size (`--log-max-bytes`). */
  logMaxBytes: 10 * 1024 * 1024,
  /** Rotated files kept: calls.jsonl.1 (newest) … calls.jsonl.N (oldest) (`--log-files`). */
  logFiles: 5,
  /** `imds-tracer report`: distinct paths listed per caller before "+N more". */
  reportMaxPaths: 5,
  /** How often the agent's own CPU time and RSS are sampled for the stats record. */
  resourceSampleMs: 5000,
  // --- memory bounds (a 512 MiB instance) ---
  /** Bytes of records that may wait for a slow stdout reader; past it lines are dropped and counted. */
  stdoutMaxBufferBytes: 4 * 1024 * 1024,
  /** The same for stderr (diagnostics only). */
  stderrMaxBufferBytes: 1024 * 1024,
  /** Lines kept in memory while the log file cannot be written; the oldest dropped (counted) beyond it. */
  logFileMaxPendingBytes: 4 * 1024 * 1024,
  /**
   * V8 heap limits the agent is started with (bin/imds-tracer.js's first line, the command
   * scripts/install.sh writes, a release's bin/imds-tracer, the lab's launcher): a young generation of 2 MiB semi-spaces instead of
   * 16 (most of the RSS under load was young-generation garbage), and an old generation capped at
   * 128 MB, twice what the bounded state can hold. test/unit/node-flags.test.ts keeps the copies equal.
   */
  agentNodeFlags: ['--max-semi-space-size=2', '--max-old-space-size=128'],
  /**
   * Environment the installed command and a release's launcher start node with (exported before the
   * exec; test/unit/node-flags.test.ts keeps the copies equal). glibc gives each thread that mallocs
   * (V8's compiler and GC workers, libuv's pool) an arena of its own, each keeping freed memory; two
   * arenas: node's RSS under load 5-20 MB lower at equal CPU (Node 24, 2,000-5,000 req/s, 3 rounds,
   * bench/RESULTS.md 2026-12-02). A fixed mmap threshold of 1 MiB turns off glibc's sliding one: by
   * default each freed mmap'd block raises the threshold to its size and the heap-top trim threshold
   * to twice that, so an arena may keep up to 64 MiB of freed memory at its top; fixed, the top is
   * trimmed past 128 KiB: the main arena under 5,000 req/s 7 MB instead of 13, the tree's RSS max 106 MB instead
   * of 113 (medians of 10 runs in turn), CPU the same within noise (bench/RESULTS.md, "Where node's
   * RSS goes").
   */
  agentEnv: { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '1048576' },
  /** At exit, how long the agent waits for stdout's reader to take what is still waiting. */
  stdoutExitFlushMs: 5000,
  cloudwatch: {
    /** A batch is sent at least this often (sooner when it is full). */
    flushIntervalMs: 5000,
    /** PutLogEvents limits. */
    maxBatchEvents: 10_000,
    maxBatchBytes: 1_048_576,
    eventOverheadBytes: 26,
    maxEventBytes: 256 * 1024 - 26,
    maxBatchSpanMs: 24 * 3600 * 1000,
    /** Events older than this are rejected by the service: dropped (and counted) before sending. */
    maxEventAgeMs: 14 * 24 * 3600 * 1000 - 3600 * 1000,
    /**
     * Lines kept while CloudWatch cannot be reached; the oldest are dropped (and counted) beyond it.
     * 16 MiB (~25,000 records, hours of a busy instance's IMDSv1 calls) rather than 50: the queue lives
     * on the V8 heap, capped at 128 MB (agentNodeFlags), on instances with 512 MiB; the log file keeps
     * every record anyway.
     */
    maxQueueBytes: 16 * 1024 * 1024,
    retryBaseMs: 500,
    retryMaxMs: 30_000,
    requestTimeoutMs: 15_000,
    /** At exit, how long the agent waits for the last batches to be accepted. */
    exitFlushMs: 5000,
    /** IMDSv2 look-up of the instance id (the default log stream name). */
    imdsTimeoutMs: 1000,
  },
  // --- secrets on command lines, argv bounds ---
  /**
   * Words that mark an argument or key name as holding a secret: matched case-insensitively anywhere
   * inside a name (`--db-password`, `MYSQL_PWD`, `"X-aws-ec2-metadata-token"`), whose value is then
   * replaced by [REDACTED]. Datadog's process-agent default list (password, passwd, mysql_pwd,
   * access_token, auth_token, api_key, apikey, pwd, secret, credentials, stripetoken) plus AWS's.
   * `run --scrub-word <word>` adds more.
   */
  scrubWords: [
    'password', 'passwd', 'mysql_pwd', 'access_token', 'auth_token', 'api_key', 'apikey', 'pwd', 'secret',
    'credentials', 'stripetoken',
    'aws_secret_access_key', 'aws_session_token', 'x-aws-ec2-metadata-token', 'token',
  ],
  /** Names that contain a scrub word but hold no secret (the token TTL header). */
  scrubExempt: ['x-aws-ec2-metadata-token-ttl-seconds'],
  /** Bytes of argv kept per process, the caller's and each ancestor's: as the eBPF program (IMDS_ARGV_MAX). */
  argvMaxBytes: 1024,
  // --- migration advice (report --verdict, rates, fleet) ---
  advice: {
    /** A caller fetching its role's credentials this many times in one minute is not caching them. */
    credentialFetchesPerMinute: 5,
    /** Seconds of rate buckets kept per caller while reading records (older ones are done with). */
    rateWindowS: 120,
  },
  /** Container names (Docker, the kubelet, the ECS agent); the roots can be moved under IMDS_TRACER_NAMES_ROOT. */
  names: {
    dockerRoot: '/var/lib/docker',
    podsLogRoot: '/var/log/pods',
    containersLogRoot: '/var/log/containers',
    /** The ECS agent's introspection API (IMDS_TRACER_ECS_AGENT_URL; `off` never asks). */
    ecsAgentUrl: 'http://127.0.0.1:51678',
    ecsTimeoutMs: 300,
    /** Containers whose names are kept. */
    cacheEntries: 1024,
    /** A container whose names were not (all) found is looked up again after this long. */
    missTtlMs: 30_000,
  },
  /** `imds-tracer fleet`: how often a running Insights query is asked for its results, and for how long. */
  fleet: {
    pollMs: 1000,
    queryTimeoutMs: 15 * 60_000,
  },
} as const;

export type Backend = 'auto' | 'ebpf' | 'proc';
