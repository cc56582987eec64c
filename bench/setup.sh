#!/usr/bin/env bash
# Installs what the benchmarks need beyond scripts/setup.sh: iperf3 (unrelated traffic), bpftrace
# (peer), tcpdump (peer), a C compiler (the connect() loop). Debian packages only; idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then echo "bench/setup.sh: run as root" >&2; exit 2; fi
packages=(iperf3 bpftrace tcpdump tcpreplay gcc libc6-dev curl iproute2)
bash "$(cd "$(dirname "$0")/.." && pwd)/scripts/ensure-packages.sh" "${packages[@]}"
# iperf3's Debian package may enable a system-wide server: the benchmark runs its own, inside the lab.
systemctl disable --now iperf3.service >/dev/null 2>&1 || true
echo "bench/setup.sh: ready"
