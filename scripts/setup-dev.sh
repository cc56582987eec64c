#!/usr/bin/env bash
# The Debian packages that only the tests and release builds need, on a developer's machine or CI
# (never on an instance): more real IMDS clients for test/lab/sdk-clients, the arm64 cross toolchain
# and multiarch -dev packages for `npm run release`, and what the systemd-box test boots.
# Run by `npm test` and `npm run release` before they start; idempotent (asks no mirror when all is
# there). Not root: installs nothing and says so (the root-only tests skip then too).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-dev.sh: not root: test and release packages not checked (root-only tests will skip)" >&2
  exit 0
fi

packages=(
  python3-boto ruby-aws-sdk-core amazon-ec2-utils cloud-init   # more real clients (test/lab/sdk-clients)
  golang-go golang-github-aws-aws-sdk-go-dev golang-github-aws-aws-sdk-go-v2-dev  # Go SDKs, compiled by that test
  binutils debootstrap systemd-container                       # release checks; the systemd-box test
  tcpdump tshark                                               # capture files for test/lab/read (pcap; pcapng by dumpcap), bench/offline
  tcpreplay                                                    # bench/replay.mjs: a capture sent at top speed into the lab's veth
)
# arm64 is cross-built with Debian's toolchain and multiarch -dev packages, its helpers smoke-tested
# under qemu-user.
if [ "$(dpkg --print-architecture)" = amd64 ] && grep -qx 'ID=debian' /etc/os-release; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
    libpcap-dev:arm64 libbpf-dev:arm64 libelf-dev:arm64 zlib1g-dev:arm64)
fi

# cloud-init is here only for its EC2 datasource code, which the tests drive in the lab. Where this
# script is what brings it, it must never run at boot (it would look for metadata services): it is
# disabled. Where it was already installed, it is left alone.
cloud_init_before=$(dpkg-query -W -f='${Status}' cloud-init 2>/dev/null || true)
bash scripts/ensure-packages.sh "${packages[@]}"
if [[ "$cloud_init_before" != *"install ok installed"* ]]; then
  mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
fi
