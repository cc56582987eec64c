#!/usr/bin/env bash
# Installs imds-tracer as a systemd service, from a release tarball (fleets) or from this checkout
# (developers). Runs as root with no prompts (EC2 user data, SSM Run Command, State Manager), on
# Amazon Linux 2023 (dnf) and Debian/Ubuntu (apt). Idempotent: a second run with the same options
# changes nothing.
#
#   bash install.sh --from-release imds-tracer-VERSION-linux-ARCH.tar.gz [--log-group NAME] ...
#   bash install.sh --from-release DIR    (DIR holds SHA256SUMS and the tarball of this machine's arch)
#   bash scripts/install.sh [--log-group NAME] [--agent-args "OPTIONS"] [--no-start]   (from source)
#
# From a release (npm run release makes it): nothing is needed on the instance but glibc >= 2.34
# and systemd: no compiler, no npm, no Node.js (the release brings its own), no network. The
# tarball's checksum is verified against SHA256SUMS next to it (or --sha256 HEX), then every
# unpacked file against the tarball's MANIFEST. Steps 1 and 2 below are replaced by unpacking it
# into /opt/imds-tracer (skipped when that same tarball is installed already).
#
# What it does from source (docs/fleet.md has the details):
#   1. system packages: Node.js >= 20, libpcap, libbpf, libelf and the build tools (skip: --skip-packages)
#   2. /opt/imds-tracer: a copy of the sources, then npm ci + npm run build + npm prune --omit=dev
#      there (or, with --from-build, this checkout's dist/, native and eBPF binaries and production
#      node_modules); skipped when what would be installed is unchanged (a stamp file)
#   3. /usr/local/bin/imds-tracer, /etc/systemd/system/imds-tracer.service,
#      /etc/default/imds-tracer (IMDS_TRACER_ARGS, from --log-group and --agent-args); the log
#      directory is systemd's (LogsDirectory=), made at the first start
#   4. systemctl daemon-reload, enable, start (restart when something changed); not with
#      --no-systemctl, nor when systemd is not running (then the unit is enabled offline).
#
# Options:
#   --from-release F     install release tarball F (or the one for this machine in directory F)
#   --sha256 HEX         the tarball's expected SHA-256 (instead of SHA256SUMS next to it)
#   --log-group NAME     ship records to this CloudWatch Logs group (--cloudwatch-log-group NAME)
#   --agent-args "…"     more options for `imds-tracer run`, split on whitespace
#                        (without --log-group/--agent-args an existing /etc/default/imds-tracer is kept)
#   --no-start           install and enable, do not start (AMI baking)
#   --from-build         install this checkout's build (npm ci && npm run build done already);
#                        no network needed
#   --force              reinstall /opt/imds-tracer even when unchanged
#   --root DIR           install under DIR instead of / (tests, image builds); --prefix is the same
#   --skip-packages      do not call apt-get/dnf
#   --no-systemctl       do not call systemctl
set -euo pipefail
umask 022

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit "${2:-1}"; }
# The staged tree ($STAGE) replaces $OPT with one rename: stamped, readable by the service's
# (dynamic, unprivileged) user, writable by root only.
swap_in() {
  echo "$STAMP" > "$STAGE/.install-stamp"
  chmod -R u+rwX,go+rX,go-w "$STAGE"
  chmod 0755 "$STAGE"
  [ "$(id -u)" -ne 0 ] || chown -R 0:0 "$STAGE"
  if [ -e "$OPT" ]; then mv "$OPT" "$OPT.old.$$"; fi
  mv "$STAGE" "$OPT"
  rm -rf "$OPT.old.$$"
  trap - EXIT
}

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/
LOG_GROUP=''
AGENT_ARGS=''
SET_ARGS=0
START=1
FROM_BUILD=0
FORCE=0
PACKAGES=1
SYSTEMCTL=1
RELEASE=''
RELEASE_SHA=''

while [ $# -gt 0 ]; do
  case "$1" in
    --log-group) [ $# -ge 2 ] || die "--log-group needs a name" 2; LOG_GROUP=$2; SET_ARGS=1; shift 2 ;;
    --log-group=*) LOG_GROUP=${1#*=}; SET_ARGS=1; shift ;;
    --agent-args) [ $# -ge 2 ] || die "--agent-args needs a value" 2; AGENT_ARGS=$2; SET_ARGS=1; shift 2 ;;
    --agent-args=*) AGENT_ARGS=${1#*=}; SET_ARGS=1; shift ;;
    --root|--prefix) [ $# -ge 2 ] || die "$1 needs a directory" 2; ROOT=$2; shift 2 ;;
    --root=*|--prefix=*) ROOT=${1#*=}; shift ;;
    --no-start) START=0; shift ;;
    --from-build) FROM_BUILD=1; shift ;;
    --from-release) [ $# -ge 2 ] || die "--from-release needs a tarball or a directory" 2; RELEASE=$2; shift 2 ;;
    --from-release=*) RELEASE=${1#*=}; shift ;;
    --sha256) [ $# -ge 2 ] || die "--sha256 needs a checksum" 2; RELEASE_SHA=$2; shift 2 ;;
    --sha256=*) RELEASE_SHA=${1#*=}; shift ;;
    --force) FORCE=1; shift ;;
    --skip-packages) PACKAGES=0; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || [ "$ROOT" != / ] || die "run it as root: sudo bash scripts/install.sh" 2
[ -d "$ROOT" ] || die "--root $ROOT is not a directory" 2
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}   # prefix for every path written: "" for /

# CloudWatch Logs group names: 1-512 of [A-Za-z0-9_./#-].
if [ -n "$LOG_GROUP" ] && ! [[ "$LOG_GROUP" =~ ^[A-Za-z0-9_./#-]{1,512}$ ]]; then
  die "--log-group '$LOG_GROUP' is not a valid CloudWatch Logs group name (letters, digits, _ . / # -)" 2
fi
# The environment file is parsed by systemd: keep values free of quoting and expansion characters.
if [[ "$AGENT_ARGS" =~ [\"\'\\\$\`] ]] || [[ "$AGENT_ARGS" == *$'\n'* ]]; then
  die "--agent-args may not contain quotes, backslashes, \$, backticks or newlines (options are split on whitespace)" 2
fi

# ---------------------------------------------------------------------------------------------
# From a release: verify, unpack into /opt/imds-tracer (instead of steps 1 and 2)
# ---------------------------------------------------------------------------------------------
CHANGED=0
if [ -n "$RELEASE" ]; then
  [ "$FROM_BUILD" -eq 0 ] || die "--from-release and --from-build exclude each other" 2
  case "$(uname -m)" in x86_64) ARCH=x64 ;; aarch64) ARCH=arm64 ;; *) die "no release for $(uname -m) (x86_64 and aarch64 only); build from source" ;; esac
  if [ -d "$RELEASE" ]; then
    shopt -s nullglob
    cands=("$RELEASE"/imds-tracer-*-linux-"$ARCH".tar.gz)
    shopt -u nullglob
    [ "${#cands[@]}" -eq 1 ] || die "--from-release $RELEASE: expected one imds-tracer-*-linux-$ARCH.tar.gz there, found ${#cands[@]}" 2
    RELEASE=${cands[0]}
  fi
  [ -f "$RELEASE" ] || die "--from-release $RELEASE: no such file" 2
  rel_name=$(basename "$RELEASE")
  [[ "$rel_name" =~ ^imds-tracer-.+-linux-(x64|arm64)\.tar\.gz$ ]] || die "--from-release $rel_name: not an imds-tracer-VERSION-linux-ARCH.tar.gz" 2
  [ "${BASH_REMATCH[1]}" = "$ARCH" ] || die "$rel_name is for ${BASH_REMATCH[1]}; this machine is $(uname -m): use imds-tracer-*-linux-$ARCH.tar.gz" 2
  got=$(sha256sum "$RELEASE" | cut -d' ' -f1)
  if [ -z "$RELEASE_SHA" ]; then
    sums=$(dirname "$RELEASE")/SHA256SUMS
    [ -f "$sums" ] || die "no checksum for $rel_name: put SHA256SUMS (from the release) next to it, or pass --sha256 HEX" 2
    RELEASE_SHA=$(awk -v f="$rel_name" '$2 == f || $2 == "*" f { print $1 }' "$sums")
    [ -n "$RELEASE_SHA" ] || die "$sums does not list $rel_name" 2
  fi
  [ "$got" = "$RELEASE_SHA" ] || die "checksum mismatch for $rel_name: SHA-256 $got, expected $RELEASE_SHA (a corrupt or altered download); nothing was changed"
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }' || true)
  if [ -n "$glibc" ] && [ "${glibc%%.*}" -eq 2 ] 2>/dev/null && [ "${glibc#*.}" -lt 34 ] 2>/dev/null; then
    die "glibc $glibc here; the release needs glibc >= 2.34 (Amazon Linux 2023, RHEL 9, Ubuntu 22.04+, Debian 12+). Build from source on this system"
  fi
  OPT=$R/opt/imds-tracer
  STAMP="release $got"
  if [ "$FORCE" -eq 0 ] && [ -f "$OPT/.install-stamp" ] && [ "$(cat "$OPT/.install-stamp")" = "$STAMP" ] &&
     [ -x "$OPT/runtime/bin/node" ]; then
    say "$OPT is up to date ($rel_name)"
  else
    CHANGED=1
    mkdir -p "$R/opt"
    STAGE=$(mktemp -d "$R/opt/.imds-tracer.XXXXXX")
    trap 'rm -rf "$STAGE"' EXIT
    tar -C "$STAGE" --strip-components=1 --no-same-owner -xzf "$RELEASE" || die "cannot unpack $rel_name; nothing was changed"
    [ -f "$STAGE/MANIFEST" ] && [ -x "$STAGE/runtime/bin/node" ] || die "$rel_name is not an imds-tracer release (no MANIFEST or runtime); nothing was changed"
    (cd "$STAGE" && sha256sum --quiet --strict -c MANIFEST) >&2 || die "files of $rel_name do not match its MANIFEST; nothing was changed"
    swap_in
    say "installed $OPT from $rel_name"
  fi
  NODE_REL=opt/imds-tracer/runtime/bin/node
  PACKAGES=0
fi

if [ -z "$RELEASE" ]; then
# ---------------------------------------------------------------------------------------------
# 1. System packages
# ---------------------------------------------------------------------------------------------
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
find_node() {
  local c
  for c in node node-20 node20 node-22 node22; do
    if command -v "$c" >/dev/null && [ "$(node_major "$c")" -ge 20 ]; then command -v "$c"; return 0; fi
  done
  return 1
}

install_packages() {
  if command -v dnf >/dev/null; then
    local pkgs=(libpcap libbpf elfutils-libelf zlib                 # run time
      gcc gcc-c++ make python3 clang llvm bpftool tar                # build: node-gyp, eBPF program
      libbpf-devel libpcap-devel elfutils-libelf-devel zlib-devel)
    find_node >/dev/null || pkgs+=(nodejs20 nodejs20-npm)
    say "dnf install ${pkgs[*]}"
    dnf install -y -q "${pkgs[@]}" >/dev/null
  elif command -v apt-get >/dev/null; then
    local pkgs=(libpcap0.8 libbpf1 libelf1 zlib1g                   # run time
      build-essential python3 clang llvm                             # build: node-gyp, eBPF program
      libbpf-dev libpcap-dev libelf-dev zlib1g-dev)
    local missing=() p
    # bpftool: its own package on Debian; part of linux-tools on Ubuntu.
    if ! command -v bpftool >/dev/null && ! [ -x /usr/sbin/bpftool ]; then
      if apt-cache show bpftool >/dev/null 2>&1; then pkgs+=(bpftool); else pkgs+=(linux-tools-common "linux-tools-$(uname -r)"); fi
    fi
    for p in "${pkgs[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ! find_node >/dev/null; then
      local candidate
      candidate=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ { print $2 }' | sed -E 's/^[0-9]+://; s/\..*//')
      [ "${candidate:-0}" -ge 20 ] 2>/dev/null ||
        die "Node.js 20 or newer is needed and apt offers nodejs ${candidate:-none}: add a Node.js 20+ repository first (e.g. NodeSource: https://github.com/nodesource/distributions), then run this again"
      missing+=(nodejs)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
      say "apt-get install ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
  else
    die "neither dnf nor apt-get found: install Node.js >= 20, libpcap, libbpf, libelf and the build tools, then run this again with --skip-packages"
  fi
}

[ "$PACKAGES" -eq 0 ] || install_packages
NODE=$(find_node) || die "Node.js 20 or newer not found (found: $(node --version 2>/dev/null || echo none)); install it (Amazon Linux 2023: dnf install nodejs20) or drop --skip-packages"

# ---------------------------------------------------------------------------------------------
# 2. /opt/imds-tracer
# ---------------------------------------------------------------------------------------------
OPT=$R/opt/imds-tracer
# What is copied from the checkout (sources; the build is made in /opt/imds-tracer, or with
# --from-build copied as well). Missing optional entries are skipped.
ITEMS=(package.json package-lock.json tsconfig.json bin agent bpf native include docs systemd README.md SCHEMA.md
  scripts/install.sh scripts/uninstall.sh)
BUILT=(dist bpf/.output/imds_connect)
[ -d "$SRC/native" ] && BUILT+=(native/.output/imds_capture)
[ ! -f "$SRC/RELEASE" ] || die "$SRC is an unpacked release: install the tarball itself, which is checksummed: bash install.sh --from-release imds-tracer-VERSION-linux-ARCH.tar.gz (or the directory holding it and SHA256SUMS)" 2
for f in package.json package-lock.json bin agent bpf; do
  [ -e "$SRC/$f" ] || die "$SRC is not an imds-tracer checkout: $f is missing"
done
present=()
for f in "${ITEMS[@]}"; do [ -e "$SRC/$f" ] && present+=("$f"); done

if [ "$FROM_BUILD" -eq 1 ]; then
  for f in "${BUILT[@]}" node_modules/cap/build/Release/cap.node; do
    [ -e "$SRC/$f" ] || die "--from-build: $SRC/$f is missing; build the checkout first (npm ci && npm run build)"
  done
fi

# The stamp names everything the installation is made from; equal stamps: nothing to do.
stamp() {
  {
    echo "mode=$([ "$FROM_BUILD" -eq 1 ] && echo from-build || echo source) node=$("$NODE" --version)"
    cd "$SRC"
    local inputs=("${present[@]}")
    [ "$FROM_BUILD" -eq 0 ] || inputs+=("${BUILT[@]}" node_modules/cap/build/Release/cap.node)
    # (a path given outright, like bpf/.output/imds_connect, is listed; .output/ inside a tree is not)
    find "${inputs[@]}" \( -name .output -o -name node_modules \) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
STAMP=$(stamp)

if [ "$FORCE" -eq 0 ] && [ -f "$OPT/.install-stamp" ] && [ "$(cat "$OPT/.install-stamp")" = "$STAMP" ] &&
   [ -f "$OPT/dist/cli.js" ]; then
  say "$OPT is up to date"
else
  CHANGED=1
  mkdir -p "$R/opt"
  STAGE=$(mktemp -d "$R/opt/.imds-tracer.XXXXXX")
  trap 'rm -rf "$STAGE"' EXIT
  tar -C "$SRC" --exclude=.output --exclude=node_modules -cf - "${present[@]}" | tar -C "$STAGE" --no-same-owner -xf -
  # npm (and node-gyp) need "node" and "npm" on PATH; a private cache leaves nothing in $HOME.
  mkdir -p "$STAGE/.tools"
  ln -s "$NODE" "$STAGE/.tools/node"
  NPM=$(command -v npm || command -v npm-20 || command -v npm20 || true)
  export PATH="$STAGE/.tools:$PATH" npm_config_cache="$STAGE/.npm-cache" npm_config_update_notifier=false
  export HOME=${HOME:-/root}
  if [ "$FROM_BUILD" -eq 1 ]; then
    say "copying the build of $SRC"
    tar -C "$SRC" -cf - "${BUILT[@]}" node_modules | tar -C "$STAGE" --no-same-owner -xf -
    [ -n "$NPM" ] || die "npm not found (it comes with Node.js; Amazon Linux 2023: dnf install nodejs20-npm)"
    (cd "$STAGE" && "$NPM" prune --omit=dev --offline --no-audit --no-fund --loglevel=error >/dev/null)
  else
    [ -n "$NPM" ] || die "npm not found (it comes with Node.js; Amazon Linux 2023: dnf install nodejs20-npm)"
    say "building in $OPT (npm ci, npm run build)"
    (cd "$STAGE" && "$NPM" ci --no-audit --no-fund --loglevel=error >/dev/null && "$NPM" run --silent build >/dev/null &&
      "$NPM" prune --omit=dev --no-audit --no-fund --loglevel=error >/dev/null) ||
      die "the build failed in $STAGE (see the messages above); nothing was changed"
  fi
  rm -rf "$STAGE/.tools" "$STAGE/.npm-cache"
  swap_in
  say "installed $OPT"
fi
fi  # from source

# ---------------------------------------------------------------------------------------------
# 3. Command, unit, environment file, log directory
# ---------------------------------------------------------------------------------------------
# Writes stdin to $1 with mode $2 when the content differs; CHANGED=1 if it did.
put() {
  local dest=$1 mode=$2 tmp
  mkdir -p "$(dirname "$dest")"
  tmp=$(mktemp "$(dirname "$dest")/.imds-tracer.XXXXXX")
  cat > "$tmp"
  # (sha256sum, not cmp: diffutils is not on every minimal image)
  if [ -f "$dest" ] && [ ! -L "$dest" ] && [ "$(sha256sum < "$tmp")" = "$(sha256sum < "$dest")" ] && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    rm -f "$tmp"
    return 0
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  CHANGED=1
  say "wrote ${dest#"$R"}"
}

# The command finds /opt/imds-tracer relative to itself, so it also works under --root.
if [ -n "$RELEASE" ]; then
put "$R/usr/local/bin/imds-tracer" 0755 <<EOF
#!/bin/sh
# imds-tracer, installed by install.sh from a release: its own Node.js runtime runs /opt/imds-tracer.
here=\$(dirname "\$(readlink -f "\$0")")
export MALLOC_ARENA_MAX=2  # DEFAULTS.agentEnv: fewer malloc arenas, less RSS
export MALLOC_MMAP_THRESHOLD_=1048576  # DEFAULTS.agentEnv: a fixed mmap threshold, the heap top trimmed past 128 KiB
exec "\$here/../../../$NODE_REL" --max-semi-space-size=2 --max-old-space-size=128 "\$here/../../../opt/imds-tracer/bin/imds-tracer.js" "\$@"
EOF
else
put "$R/usr/local/bin/imds-tracer" 0755 <<EOF
#!/bin/sh
# imds-tracer, installed by scripts/install.sh: runs /opt/imds-tracer with Node.js >= 20.
here=\$(dirname "\$(readlink -f "\$0")")
export MALLOC_ARENA_MAX=2  # DEFAULTS.agentEnv: fewer malloc arenas, less RSS
export MALLOC_MMAP_THRESHOLD_=1048576  # DEFAULTS.agentEnv: a fixed mmap threshold, the heap top trimmed past 128 KiB
exec $NODE --max-semi-space-size=2 --max-old-space-size=128 "\$here/../../../opt/imds-tracer/bin/imds-tracer.js" "\$@"
EOF
fi

# From a release: the unit it brings (it matches its runtime and helpers), else the checkout's.
put "$R/etc/systemd/system/imds-tracer.service" 0644 < "$([ -n "$RELEASE" ] && echo "$OPT" || echo "$SRC")/systemd/imds-tracer.service"

ENV_FILE=$R/etc/default/imds-tracer
if [ "$SET_ARGS" -eq 1 ] || [ ! -e "$ENV_FILE" ]; then
  args=$AGENT_ARGS
  [ -z "$LOG_GROUP" ] || args="--cloudwatch-log-group $LOG_GROUP${args:+ $args}"
  args=$(echo "$args" | tr -s ' \t' ' ' | sed 's/^ //; s/ $//')
  put "$ENV_FILE" 0644 <<EOF
# Options for \`imds-tracer run\` in imds-tracer.service, split on whitespace (docs/fleet.md).
# Written by scripts/install.sh (--log-group, --agent-args); after editing:
#   systemctl restart imds-tracer
IMDS_TRACER_ARGS="$args"
EOF
fi

# /var/log/imds-tracer is systemd's (LogsDirectory=): under DynamicUser= it makes
# /var/log/private/imds-tracer (0700, the service user's) and the link /var/log/imds-tracer to it
# at the first start. Not made here: a plain directory would have to be migrated by systemd. A
# manual `imds-tracer run` as root makes it itself (0700).

# ---------------------------------------------------------------------------------------------
# 4. systemd
# ---------------------------------------------------------------------------------------------
if [ "$SYSTEMCTL" -eq 0 ]; then
  say "not calling systemctl (--no-systemctl)"
elif ! command -v systemctl >/dev/null; then
  say "systemctl not found: enable and start imds-tracer.service yourself"
elif [ "$ROOT" = / ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet imds-tracer.service
  if [ "$START" -eq 0 ]; then
    say "enabled; not started (--no-start)"
  elif [ "$CHANGED" -eq 1 ] && systemctl is-active --quiet imds-tracer.service; then
    systemctl restart imds-tracer.service
    say "restarted imds-tracer.service"
  else
    systemctl start imds-tracer.service
    say "imds-tracer.service is $(systemctl is-active imds-tracer.service || true)"
  fi
else
  # systemd is not running (image build, container) or another root: enable offline (symlinks).
  systemctl --root="$ROOT" enable --quiet imds-tracer.service 2>/dev/null &&
    say "enabled under $ROOT (systemd not running here: not started)" ||
    say "could not enable imds-tracer.service under $ROOT; enable it on the instance"
fi
say "done: imds-tracer $(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$OPT/package.json" | head -1) in ${OPT#"$R"}"
