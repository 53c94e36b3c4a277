#!/usr/bin/env bash
# The ten-minute soak of docs/benchmarks.md ("Soak"): tier 2's soak test
# (tests/host/tests/soak.rs) for SECONDS instead of CI's 60: the real ptnetd with eight
# steady switch port pairs and a pipe, host clients joining and leaving on-demand ports all
# along, and VMs (DPDK's virtio_user in dpdk-testpmd) coming and going on two virtio-net
# ports. It fails unless the daemon's memory and descriptors stayed flat, no ring got stuck,
# the pipe lost nothing and every frame each VM sent entered the switch.
#
#   host-backend/bench/soak.sh [--seconds N] [--out DIR]     (root; default 600 s, target/bench)
#
# Leaves the numbers in DIR/soak.jsonl (one JSON line per run, appended) and prints them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

secs=600
out=target/bench
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) secs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
need_root "host-backend/bench/soak.sh"
ensure_cargo
ci/prereqs.sh base dpdk
mkdir -p "$out"
cargo build --quiet -p ptnetd -p ptnetctl -p ptnet-pktgen -p ptnet-host-tests
line=$(mktemp)
log "soak: ${secs} s (the test asserts; its numbers follow)"
PTNET_SOAK_SECONDS=$secs PTNET_SOAK_OUT=$line \
    cargo test --quiet -p ptnet-host-tests --features host-tests --test soak -- --nocapture >&2
python3 - "$line" "$(date -u +%Y-%m-%dT%H:%MZ)" <<'PY' | tee -a "$out/soak.jsonl"
import json, sys
r = json.load(open(sys.argv[1]))
r["date"] = sys.argv[2]
print(json.dumps(r))
PY
rm -f "$line"
