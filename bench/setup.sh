#!/usr/bin/env bash
# Installs what the benchmarks need beyond scripts/setup.sh: iperf3 (unrelated traffic), bpftrace
# (peer), tcpdump (peer), a C compiler (the connect() loop). Debian packages only; idempotent.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then echo "bench/setup.sh: run as root" >&2; exit 2; fi
packages=(iperf3 bpftrace tcpdump gcc libc6-dev curl iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench/setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# iperf3's Debian package may enable a system-wide server: the benchmark runs its own, inside the lab.
systemctl disable --now iperf3.service >/dev/null 2>&1 || true
echo "bench/setup.sh: ready"
