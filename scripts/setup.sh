#!/usr/bin/env bash
# Sets up imds-tracer from this checkout on Debian/Ubuntu, as root: system packages, npm packages,
# build (TypeScript and the eBPF program). Idempotent: a second run installs nothing new.
# What only the tests and release builds need (more SDK clients, cross compilers, a systemd box) is
# installed by scripts/setup-dev.sh, which `npm test` and `npm run release` run first.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  libpcap-dev build-essential python3            # npm "cap" (libpcap binding) builds with node-gyp
  clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev   # the CO-RE eBPF program and its loader
  iproute2 iptables procps                       # the lab (network namespaces), the demo
  curl wget python3-botocore                     # real IMDS clients the demo and the tests drive
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages): sudo bash scripts/setup.sh" >&2
  exit 2
fi
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup.sh: Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 2
fi

bash scripts/ensure-packages.sh "${packages[@]}"

npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
echo "setup.sh: ready ($(node -p 'require("./package.json").version'))"
