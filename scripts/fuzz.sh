#!/usr/bin/env bash
# The long fuzz run: every property of test/unit/properties.test.ts (frame decoding, TCP reassembly,
# HTTP parsing, the flow table, classification, TCP copies that disagree, and the differential
# against Node's own HTTP parser (llhttp on a local 127.0.0.1 socket: one connection per case)) with
# many generated and mutated cases each.
#   bash scripts/fuzz.sh [--cases N]      (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --cases) cases="$2"; shift 2 ;;
    *) echo "usage: bash scripts/fuzz.sh [--cases N]" >&2; exit 2 ;;
  esac
done
echo "fuzz: $cases cases per property"
IMDS_TRACER_FUZZ_CASES="$cases" npx vitest run test/unit/properties.test.ts --testTimeout=0
