#!/usr/bin/env bash
# Runs every benchmark in the network-namespace lab and appends the results to bench/RESULTS.md.
#   sudo bash bench/run.sh            full run (~10 min on 2 vCPUs; the recorded one)
#   sudo bash bench/run.sh --quick    smoke run (~2 min, short durations)
#   sudo bash bench/run.sh --no-build --no-record …   skip `npm run build` / don't write RESULTS.md
# Needs `bash scripts/setup.sh` first (Node, npm ci, build deps). Traffic stays inside the lab's
# namespaces; every script removes its namespaces and processes on exit, error and Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "bench/run.sh: run as root (network namespaces, packet capture, eBPF)" >&2; exit 2; fi

mode=full; build=1; pass=()
for a in "$@"; do
  case "$a" in
    --quick) mode=quick; pass+=(--quick) ;;
    --no-build) build=0 ;;
    --no-record) pass+=(--no-record) ;;
    *) echo "bench/run.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

bash bench/setup.sh
if [ ! -d node_modules/autocannon ]; then echo "bench/run.sh: node_modules missing: run bash scripts/setup.sh first" >&2; exit 2; fi
if [ "$build" = 1 ]; then npm run --silent build >/dev/null; fi

current=""
cleanup() {
  if [ -n "$current" ] && kill -0 "$current" 2>/dev/null; then kill -TERM "$current" 2>/dev/null || true; wait "$current" 2>/dev/null || true; fi
  # Labs whose owning process is gone (never another live run's).
  node --input-type=module -e "const m = await import('./dist/lab/netns.js'); await m.cleanupStaleLabs();" 2>/dev/null || true
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

if [[ " ${pass[*]-} " != *" --no-record "* ]]; then
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  {
    echo
    echo "## Run $(date -u +%Y-%m-%dT%H:%M:%SZ) ($mode)"
    echo
    echo "Machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Node $(node --version), commit $commit$( [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (uncommitted changes in the working tree)')."
  } >> bench/RESULTS.md
fi

start=$(date +%s)
failed=()
scripts=(throughput latency shortlived overhead startup connect-rate offline)
if [ -n "${BENCH_ONLY:-}" ]; then read -r -a scripts <<< "$BENCH_ONLY"; fi   # e.g. BENCH_ONLY="latency startup"
for s in "${scripts[@]}"; do
  echo "== bench/$s.mjs ${pass[*]-}"
  node "bench/$s.mjs" "${pass[@]}" &
  current=$!
  if ! wait "$current"; then failed+=("$s"); echo "bench/run.sh: $s failed (see above); going on"; fi
  current=""
done
echo "bench/run.sh: done in $(( $(date +%s) - start )) s; results appended to bench/RESULTS.md"
if [ "${#failed[@]}" -gt 0 ]; then echo "bench/run.sh: failed: ${failed[*]}" >&2; exit 1; fi
