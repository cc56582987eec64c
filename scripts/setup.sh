#!/usr/bin/env bash
# Sets up imds-tracer from this checkout on Debian/Ubuntu, as root: system packages, npm packages,
# build (TypeScript and the eBPF program). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  libpcap-dev build-essential python3            # npm "cap" (libpcap binding) builds with node-gyp
  clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev   # the CO-RE eBPF program and its loader
  iproute2 iptables procps                       # the lab (network namespaces), the demo
  curl wget python3-botocore                     # real IMDS clients the demo and the tests drive
  python3-boto ruby-aws-sdk-core amazon-ec2-utils cloud-init   # more real clients (test/lab/sdk-clients)
  golang-go golang-github-aws-aws-sdk-go-dev golang-github-aws-aws-sdk-go-v2-dev  # Go SDKs, compiled by that test
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages): sudo bash scripts/setup.sh" >&2
  exit 2
fi
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup.sh: Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 2
fi

# Release builds (npm run release, test/release): static libraries come with the -dev packages
# above; arm64 is cross-built with Debian's toolchain and multiarch -dev packages, its helpers
# smoke-tested under qemu-user; the systemd-box test boots a Debian rootfs (debootstrap, nspawn).
packages+=(binutils debootstrap systemd-container)
if [ "$(dpkg --print-architecture)" = amd64 ] && grep -qx 'ID=debian' /etc/os-release; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
    libpcap-dev:arm64 libbpf-dev:arm64 libelf-dev:arm64 zlib1g-dev:arm64)
fi

# cloud-init is here only for its EC2 datasource code, which the tests drive in the lab. Where this
# script is what brings it, it must never run at boot (it would look for metadata services): it is
# disabled. Where it was already installed (a real instance), it is left alone.
cloud_init_before=$(dpkg-query -W -f='${Status}' cloud-init 2>/dev/null || true)
bash scripts/ensure-packages.sh "${packages[@]}"
if [[ "$cloud_init_before" != *"install ok installed"* ]]; then
  mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
fi

npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
echo "setup.sh: ready ($(node -p 'require("./package.json").version'))"
