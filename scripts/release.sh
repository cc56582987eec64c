#!/usr/bin/env bash
# Builds the self-contained release tarballs (npm run release):
#
#   release/imds-tracer-<version>-linux-x64.tar.gz
#   release/imds-tracer-<version>-linux-arm64.tar.gz
#   release/SHA256SUMS        (sha256sum format: the tarballs and install.sh)
#   release/install.sh        (scripts/install.sh, to run before anything is unpacked)
#
# Each tarball runs on a bare instance (glibc >= 2.34: Amazon Linux 2023, RHEL 9, Ubuntu 22.04+,
# Debian 12) with nothing installed: the Node.js runtime (official build, from the npm registry
# package node-linux-<arch>), the agent bundled with esbuild (no node_modules), and the capture
# helper, the notify helper and the eBPF loader linked statically against libpcap, libbpf, libelf
# and zlib (only glibc is dynamic). The npm "cap" binding is not shipped: the capture helper is the
# capture path; `cap` is the fallback of source builds only.
#
#   bash scripts/release.sh [--arch x64|arm64|all] [--out DIR] [--skip-ts-build]
#
# Environment: RELEASE_NODE_VERSION (default below), RELEASE_CACHE (downloaded runtimes; default
# /var/cache/imds-tracer-release, else ~/.cache/imds-tracer-release), SOURCE_DATE_EPOCH (file
# times in the tarball; default: the last commit's time, so a rebuild of one commit is identical
# byte for byte given the same toolchain).
#
# Needs (build machine, Debian 12): gcc, clang, llvm-strip, bpftool, libpcap-dev, libbpf-dev,
# libelf-dev, zlib1g-dev; for arm64 also gcc-aarch64-linux-gnu and the :arm64 -dev packages
# (scripts/setup-dev.sh installs them); network access to the npm registry the first time per version.
set -euo pipefail
umask 022

NODE_VERSION=${RELEASE_NODE_VERSION:-24.22.3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/release
ARCHES=(x64 arm64)
TS_BUILD=1

say() { echo "release.sh: $*" >&2; }
die() { echo "release.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --arch) case "${2:-}" in x64|arm64) ARCHES=("$2") ;; all) ARCHES=(x64 arm64) ;; *) die "--arch x64|arm64|all" ;; esac; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --skip-ts-build) TS_BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done

if [ -z "${RELEASE_CACHE:-}" ]; then
  if [ -w /var/cache ] || [ -d /var/cache/imds-tracer-release ]; then RELEASE_CACHE=/var/cache/imds-tracer-release
  else RELEASE_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/imds-tracer-release; fi
fi
VERSION=$(node -p "require('$REPO/package.json').version")
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
COMMIT=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
mkdir -p "$OUT" "$RELEASE_CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imds-tracer-release.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# The agent: one esbuild bundle for every architecture (the code is the same)
# ---------------------------------------------------------------------------------------------
[ "$TS_BUILD" -eq 0 ] || (cd "$REPO" && node_modules/.bin/tsc -p tsconfig.json --noEmit && node_modules/.bin/tsc -p lab/tsconfig.json --noEmit) || die "TypeScript does not compile"
BUNDLE=$WORK/bundle
# Node >= 22 (the bundled runtime is $NODE_VERSION); ESM with code splitting, so what a command
# does not use (the AWS SDK, demo, report) is loaded only when it is used, as in dist/.
# CommonJS dependencies inside an ESM bundle call require(): the banner gives them one.
# Entry points: the command; and the lab (lab/, not part of the agent), which only `imds-tracer demo`
# loads, at run time, from dist/lab: the namespaces, the tracer as a child process, and the IMDS
# stand-in that the demo runs as its own process.
"$REPO/node_modules/.bin/esbuild" "cli=$REPO/agent/src/cli.ts" "lab/imds-server=$REPO/lab/imds-server.ts" \
  "lab/netns=$REPO/lab/netns.ts" "lab/traced=$REPO/lab/traced.ts" --bundle --platform=node --target=node22 \
  --format=esm --splitting --outdir="$BUNDLE/dist" --chunk-names='chunks/[name]-[hash]' \
  --external:cap --minify-syntax --minify-whitespace --legal-comments=none --metafile="$WORK/meta.json" \
  --banner:js="import { createRequire as __imdsRequire } from 'node:module'; const require = __imdsRequire(import.meta.url);" \
  --log-level=warning || die "esbuild failed"

# Licences of what the bundle holds: every npm package esbuild took code from.
third_party() {
  node -e '
    const fs = require("fs"), path = require("path");
    const meta = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const pkgs = new Map();
    for (const input of Object.keys(meta.inputs)) {
      const m = input.match(/^(?:.*\/)?node_modules\/((?:@[^/]+\/)?[^/]+)\//);
      if (!m) continue;
      const dir = input.slice(0, input.lastIndexOf("node_modules/" + m[1]) + ("node_modules/" + m[1]).length);
      pkgs.set(m[1], dir);
    }
    for (const [name, dir] of [...pkgs].sort()) {
      const abs = path.resolve(process.argv[2], dir);
      const pj = JSON.parse(fs.readFileSync(path.join(abs, "package.json"), "utf8"));
      const lic = fs.readdirSync(abs).find((f) => /^(licen[cs]e|copying)/i.test(f));
      console.log(`==== npm ${name}@${pj.version} (${pj.license ?? "see below"})`);
      console.log(lic ? fs.readFileSync(path.join(abs, lic), "utf8").trim() : `licence: ${pj.license}`);
      console.log();
    }
  ' "$WORK/meta.json" "$REPO"
}

# ---------------------------------------------------------------------------------------------
# Per architecture: runtime, native helpers, eBPF loader, tarball
# ---------------------------------------------------------------------------------------------
runtime() {  # $1 = x64|arm64 → path of the unpacked package
  local arch=$1 pkg="node-linux-$1" tgz="$RELEASE_CACHE/node-linux-$1-$NODE_VERSION.tgz"
  if [ ! -s "$tgz" ]; then
    say "fetching $pkg@$NODE_VERSION from the npm registry"
    (cd "$RELEASE_CACHE" && npm pack "$pkg@$NODE_VERSION" --silent >/dev/null) || die "npm pack $pkg@$NODE_VERSION failed"
  fi
  mkdir -p "$WORK/node-$arch"
  tar -C "$WORK/node-$arch" -xzf "$tgz" package/bin/node package/LICENSE
  echo "$WORK/node-$arch/package"
}

native_build() {  # $1 = x64|arm64, $2 = output dir
  local arch=$1 out=$2 cc cflags bpfarch triplet
  case "$arch" in
    x64) cc=${CC_X64:-gcc}; bpfarch=x86; triplet=x86_64-linux-gnu ;;
    arm64) cc=${CC_ARM64:-aarch64-linux-gnu-gcc}; bpfarch=arm64; triplet=aarch64-linux-gnu ;;
  esac
  command -v "$cc" >/dev/null || die "$cc not found (arm64: apt-get install gcc-aarch64-linux-gnu; scripts/setup-dev.sh does)"
  local libdir=/usr/lib/$triplet
  for a in libpcap.a libbpf.a libelf.a libz.a; do
    [ -e "$libdir/$a" ] || die "$libdir/$a missing (apt-get install libpcap-dev:$([ "$arch" = x64 ] && echo amd64 || echo arm64) libbpf-dev libelf-dev zlib1g-dev for that architecture)"
  done
  # -ffile-prefix-map: no build directory in the debug information (a rebuild is byte-identical)
  cflags="-g -O2 -Wall -Wextra -Wno-unused-parameter -fstack-protector-strong -D_FORTIFY_SOURCE=2 -ffile-prefix-map=$WORK=/build -ffile-prefix-map=$REPO=."
  # Only glibc stays dynamic (every fleet system has it, >= 2.34); the -dev packages' static
  # archives for the rest: libpcap's soname differs between Debian (.so.0.8) and AL2023 (.so.1).
  local static=(-Wl,-Bstatic) dynamic=(-Wl,-Bdynamic)
  mkdir -p "$out/native/.output" "$out/bpf/.output" "$WORK/obj-$arch"
  "$cc" $cflags "$REPO/native/imds_capture.c" "$REPO/native/pcap_no_dbus.c" -o "$out/native/.output/imds_capture" \
    -L"$libdir" "${static[@]}" -lpcap "${dynamic[@]}" || die "capture helper ($arch) failed to link"
  "$cc" $cflags "$REPO/native/imds_notify.c" -o "$out/native/.output/imds_notify" || die "notify helper ($arch) failed"
  # eBPF object: BTF types from the checked-in vmlinux.h (x86), else the minimal CO-RE header.
  local vmdir=$REPO/bpf/vmlinux/$bpfarch
  [ -e "$vmdir/vmlinux.h" ] || vmdir=$REPO/bpf/vmlinux/core
  local o=$WORK/obj-$arch
  clang -g -O2 -Wall -target bpf -D__TARGET_ARCH_$bpfarch -I"$vmdir" -I"$REPO/bpf" -ffile-prefix-map="$REPO"=. \
    -c "$REPO/bpf/imds_connect.bpf.c" -o "$o/imds_connect.bpf.o" || die "eBPF object ($arch) failed"
  llvm-strip -g "$o/imds_connect.bpf.o"
  local bpftool
  bpftool=$(command -v bpftool || echo /usr/sbin/bpftool)
  "$bpftool" gen skeleton "$o/imds_connect.bpf.o" name imds_connect_bpf > "$o/imds_connect.skel.h" || die "bpftool gen skeleton failed"
  "$cc" $cflags -I"$o" -I"$REPO/bpf" -I/usr/include/$triplet "$REPO/bpf/imds_connect.c" -o "$out/bpf/.output/imds_connect" \
    -L"$libdir" "${static[@]}" -lbpf -lelf -lz "${dynamic[@]}" || die "eBPF loader ($arch) failed to link"
}

# The highest GLIBC_x.y a binary needs (readelf works for any architecture).
glibc_max() { readelf -W --dyn-syms "$1" | grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2 -n | tail -1; }

files=()
for arch in "${ARCHES[@]}"; do
  name=imds-tracer-$VERSION-linux-$arch
  stage=$WORK/stage/$name
  say "building $name (Node.js $NODE_VERSION)"
  mkdir -p "$stage/bin" "$stage/runtime/bin" "$stage/scripts" "$stage/systemd"
  node_dir=$(runtime "$arch")
  install -m 0755 "$node_dir/bin/node" "$stage/runtime/bin/node"
  install -m 0644 "$node_dir/LICENSE" "$stage/runtime/LICENSE"
  cp -r "$BUNDLE/dist" "$stage/dist"
  native_build "$arch" "$stage"
  for b in native/.output/imds_capture native/.output/imds_notify bpf/.output/imds_connect; do
    v=$(glibc_max "$stage/$b")
    [ "${v#GLIBC_2.}" -le 34 ] || die "$b ($arch) needs $v: the fleet's oldest glibc is 2.34 (AL2023, RHEL 9)"
  done
  install -m 0755 "$REPO/bin/imds-tracer.js" "$stage/bin/imds-tracer.js"
  cat > "$stage/bin/imds-tracer" <<'EOF'
#!/bin/sh
# imds-tracer from a release: the bundled Node.js runtime runs the bundled agent, with the agent's
# V8 heap limits (DEFAULTS.agentNodeFlags; a runtime started by path does not read the shebang).
here=$(dirname "$(readlink -f "$0")")
export MALLOC_ARENA_MAX=2  # DEFAULTS.agentEnv: fewer malloc arenas, less RSS
export MALLOC_MMAP_THRESHOLD_=1048576  # DEFAULTS.agentEnv: a fixed mmap threshold, the heap top trimmed past 128 KiB
exec "$here/../runtime/bin/node" --max-semi-space-size=2 --max-old-space-size=128 "$here/imds-tracer.js" "$@"
EOF
  chmod 0755 "$stage/bin/imds-tracer"
  install -m 0755 "$REPO/scripts/install.sh" "$REPO/scripts/uninstall.sh" "$stage/scripts/"
  install -m 0644 "$REPO/systemd/imds-tracer.service" "$stage/systemd/"
  cp -r "$REPO/docs" "$stage/docs"
  install -m 0644 "$REPO/README.md" "$REPO/SCHEMA.md" "$REPO/LICENSE" "$stage/"
  node -e '
    const p = require(process.argv[1]);
    const out = { name: p.name, version: p.version, description: p.description, license: p.license, type: "module",
      bin: { "imds-tracer": "bin/imds-tracer" }, engines: { node: ">=22" } };
    process.stdout.write(JSON.stringify(out, null, 2) + "\n");
  ' "$REPO/package.json" > "$stage/package.json"
  {
    third_party
    echo "==== Node.js $NODE_VERSION (runtime/bin/node): see runtime/LICENSE"
    echo
    for deb in libpcap0.8-dev libbpf-dev libelf-dev zlib1g-dev; do
      f=/usr/share/doc/$deb/copyright
      [ -r "$f" ] || continue
      echo "==== $deb (linked statically into native/.output/imds_capture, bpf/.output/imds_connect)"
      cat "$f"
      echo
    done
  } > "$stage/THIRD_PARTY_LICENSES"
  cat > "$stage/RELEASE" <<EOF
version=$VERSION
arch=$arch
node=$NODE_VERSION
commit=$COMMIT$DIRTY
glibc_min=2.34
EOF
  # MANIFEST: every file's checksum, checked by install.sh after unpacking.
  (cd "$stage" && find . -type f ! -name MANIFEST -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum > MANIFEST)
  find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar -C "$WORK/stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    --format=gnu -cf - "$name" | gzip -n -6 > "$OUT/$name.tar.gz.tmp"
  mv "$OUT/$name.tar.gz.tmp" "$OUT/$name.tar.gz"
  files+=("$name.tar.gz")
  say "wrote $OUT/$name.tar.gz ($(du -h "$OUT/$name.tar.gz" | cut -f1))"
done

install -m 0755 "$REPO/scripts/install.sh" "$OUT/install.sh"
# SHA256SUMS lists what this run built: a tarball left from an earlier build (another commit,
# say) is not vouched for; install.sh refuses a tarball SHA256SUMS does not list.
for f in "$OUT"/imds-tracer-*.tar.gz; do
  case " ${files[*]} " in *" $(basename "$f") "*) ;; *) say "not in SHA256SUMS (not built by this run): $f" ;; esac
done
(cd "$OUT" && sha256sum install.sh "${files[@]}" > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
say "wrote $OUT/SHA256SUMS"
