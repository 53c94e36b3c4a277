#!/usr/bin/env bash
# Benchmarks of the host datapath against named peers, in one run, on one machine.
#
#   sudo host-backend/bench/run.sh [--seconds S] [--repeat N] [--out DIR] [--no-peers]
#
# Each row is the median (by received Mpps) of N runs (default 3): these machines are shared
# and noisy, and a single run can be off by a third.
#
# ptnet rows come from `ptnet-bench` (the real sync loops and client library, in-process).
# Peers: the kernel path a user would otherwise take, AF_PACKET with TPACKET_V3 rings over a
# veth pair (`ptnet-bench af-packet`), and DPDK 22.11's dpdk-testpmd (memif between two
# processes: a switchless shared-memory channel like a pipe; its AF_PACKET PMD over the veth
# pair, TPACKET_V2). Every row is one JSON line in DIR/results.jsonl; report.py prints the
# table (and writes DIR/benchmarks.svg).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

secs=3
out=target/bench
peers=1
repeat=3
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) secs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-peers) peers=0; shift ;;
        --repeat) repeat=$2; shift 2 ;;
        *) die "unknown option $1 (see the header of $0)" ;;
    esac
done
mkdir -p "$out"
res="$out/results.jsonl"
: > "$res"

log "building ptnet-bench (release)"
cargo build --release --quiet -p ptnet-bench
bench=target/release/ptnet-bench

# shellcheck source=lib.sh
source "$here/lib.sh"

run pipe
run pipe --busy-poll
run vale
run vale --busy-poll
run vale --size 1514
run pipe --size 1514
for n in 1 4 16 64; do
    run one-to-n --ports "$n"
    run n-to-one --ports "$n"
done

# A DPDK testpmd pair: $1 name, $2 rx vdev, $3 tx vdev, $4 frame size. Prints one JSON line
# with the receiver's average Rx-pps over the measured seconds.
testpmd_pair() {
    local name=$1 rxdev=$2 txdev=$3 size=$4 tag=ptb$$
    local rxlog="$out/$name-rx.log" txlog="$out/$name-tx.log"
    local common=(--no-huge -m 512 --no-pci --log-level=lib.eal:error)
    # Each side in a subshell whose `times` reports the CPU its children (timeout, testpmd) used.
    local t0
    t0=$(date +%s.%N)
    ( timeout -s INT $((secs + 6)) dpdk-testpmd -l 0,1 --main-lcore 0 "${common[@]}" \
        --file-prefix="${tag}r" --vdev="$rxdev" -- --forward-mode=rxonly --nb-cores=1 \
        --total-num-mbufs=16384 --stats-period 1 > "$rxlog" 2>&1 || true; times > "$rxlog.cpu" ) &
    local rxpid=$!
    sleep 2
    ( timeout -s INT $((secs + 2)) dpdk-testpmd -l 0,1 --main-lcore 1 "${common[@]}" \
        --file-prefix="${tag}t" --vdev="$txdev" -- --forward-mode=txonly --txpkts="$size" \
        --nb-cores=1 --total-num-mbufs=16384 --stats-period 1 > "$txlog" 2>&1 || true; \
        times > "$txlog.cpu" )
    wait "$rxpid" || true
    local wall
    wall=$(echo "$(date +%s.%N) - $t0" | bc)
    python3 - "$rxlog" "$name" "$size" "$secs" "$wall" >> "$out/peer.tmp" <<'PY'
import json, re, sys
log, name, size, secs, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])

def cpu(path):
    # `times` prints two lines (shell, children) of "XmY.YYYs XmY.YYYs" (user, sys).
    try:
        line = open(path).read().splitlines()[1]
    except (OSError, IndexError):
        return 0.0
    total = 0.0
    for m in re.finditer(r"(\d+)m([\d.]+)s", line):
        total += int(m.group(1)) * 60 + float(m.group(2))
    return total

pps = [int(m.group(1)) for m in re.finditer(r"Rx-pps:\s+(\d+)", open(log, errors="replace").read())]
busy = [p for p in pps if p > 0]
# Drop the first and last second (start-up and shut-down).
mid = busy[1:-1] if len(busy) > 2 else busy
rate = sum(mid) / len(mid) if mid else 0.0
print(json.dumps({"scenario": name, "mode": "dpdk busy-poll", "size": size, "batch": 32,
                  "ports": 1, "seconds": len(mid), "rx_mpps": rate / 1e6,
                  "rx_gbps": rate * (size + 24) * 8 / 1e9,
                  # CPU seconds per second of each side over its whole run (start-up included).
                  "client_cpu": cpu(log + ".cpu") / wall,
                  "daemon_cpu": cpu(log.replace("-rx.log", "-tx.log") + ".cpu") / max(wall - 4, 1.0),
                  "peer": True}))
PY
}

if [ "$peers" = 1 ]; then
    need_root "the peer benchmarks (veth, DPDK)"
    ci/prereqs.sh dpdk
    sock="$out/memif.sock"
    rm -f "$sock"
    for size in 60 1514; do
        log "peer: DPDK memif, $size B"
        : > "$out/peer.tmp"
        for _ in $(seq "$repeat"); do
            testpmd_pair "dpdk-memif" "net_memif0,role=server,socket=$sock" \
                "net_memif0,role=client,socket=$sock" "$size"
            rm -f "$sock"
        done
        median "$out/peer.tmp" >> "$res"
    done
    ip link del ptbench-a 2>/dev/null || true
    ip link add ptbench-a type veth peer name ptbench-b
    ip link set ptbench-a up
    ip link set ptbench-b up
    for size in 60 1514; do
        run af-packet --size "$size" --tx-if ptbench-a --rx-if ptbench-b
    done
    log "peer: AF_PACKET over veth (DPDK net_af_packet), 60 B"
    : > "$out/peer.tmp"
    for _ in $(seq "$repeat"); do
        testpmd_pair "veth-af_packet" "net_af_packet0,iface=ptbench-b,qdisc_bypass=1" \
            "net_af_packet0,iface=ptbench-a,qdisc_bypass=1" 60
    done
    median "$out/peer.tmp" >> "$res"
    ip link del ptbench-a
fi

python3 "$here/report.py" "$res" --svg "$out/benchmarks.svg"
