#!/usr/bin/env bash
# virtio-net port benchmark: DPDK virtio_user txonly → switch → virtio_user rxonly, with
# ptnetd's VALE as the switch against DPDK's own vhost backend as the switch, in the same
# run. One command:
#
#   sudo host-backend/bench/virtio-net.sh [--seconds S] [--repeat N] [--out DIR]
#
# Rows (each the median by received Mpps of N runs, default 3), 64- and 1514-byte frames:
#   ptnetd-eventfd   dpdk-testpmd txonly (virtio_user) → ptnetd virtio-net port vale0:vm1 →
#                    VALE → virtio-net port vale0:vm2 → dpdk-testpmd rxonly (virtio_user);
#                    the ports' workers sleep on eventfds after a 20 µs linger (the default)
#   ptnetd-busypoll  the same with `ptnetd --busy-poll` (the workers never sleep)
#   dpdk-vhost       the same two testpmds, with `dpdk-testpmd --vdev net_vhost0
#                    --vdev net_vhost1 --forward-mode=io` as the switch (the peer to beat)
# The receiver starts with `--tx-first` (one burst from its own MAC, 02:00:00:00:00:02), so
# that both switches know where it is and forward the sender's frames to it alone instead of
# flooding them. Each testpmd has a main and one forwarding lcore (`-l 0,1`, --no-huge); on a 2-CPU machine
# the two clients' forwarding cores are pinned to different CPUs and the switch (ptnetd's
# workers, or DPDK's forwarding core) shares them. Sent and received rates are the testpmd
# totals over the sender's S seconds; `switch_cpu` is the switch process's CPU time over the
# same window, in cores. Prints the table (report.py --virtio-net) and leaves the rows in
# DIR/virtio-net.jsonl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

secs=5
out=target/bench
repeat=3
# shellcheck source=lib.sh
source "$here/lib.sh"
bench_args "$@"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (ci/prereqs.sh dpdk)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
res="$out/virtio-net.jsonl"
: > "$res"

log "building ptnetd and ptnetctl (release)"
cargo build --release --quiet -p ptnetd -p ptnetctl
bin=$PWD/target/release
tmp=$(mktemp -d /tmp/ptnet-vnet-bench.XXXXXX)
# Every process started here, by PID (runs happen in subshells: the list is a file).
cleanup() {
    local p
    for p in $(cat "$tmp/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# cpu_ticks PID: user + system clock ticks of a process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# testpmd_total LOG FIELD: the port-0 total (RX-packets, TX-packets) testpmd printed at exit.
testpmd_total() {
    awk -v f="$2:" '/Forward statistics for port 0/ { s = 1 }
        s { for (i = 1; i < NF; i++) if ($i == f) { print $(i + 1); exit } }' "$1"
}

# clients SWITCH_PID SOCK_TX SOCK_RX SIZE: runs rxonly on SOCK_RX and txonly on SOCK_TX,
# prints "sent received switch_cpu_cores".
clients() {
    local sw=$1 stx=$2 srx=$3 size=$4 rxp t0 t1
    timeout -s INT $((secs + 6)) dpdk-testpmd -l 0,1 --main-lcore 0 --no-huge -m 512 --no-pci \
        --file-prefix="ptvn-rx-$$" \
        --vdev "net_virtio_user0,path=$srx,queues=1,mac=02:00:00:00:00:02" -- \
        --forward-mode=rxonly --tx-first --nb-cores=1 --total-num-mbufs=16384 \
        --stats-period 1 > "$tmp/rx.log" 2>&1 &
    rxp=$!
    echo "$rxp" >> "$tmp/pids"
    # testpmd flushes its queues when forwarding starts; let it get there first.
    sleep 2
    t0=$(cpu_ticks "$sw")
    timeout -s INT "$secs" dpdk-testpmd -l 0,1 --main-lcore 1 --no-huge -m 512 --no-pci \
        --file-prefix="ptvn-tx-$$" \
        --vdev "net_virtio_user0,path=$stx,queues=1,mac=02:00:00:00:00:01" -- \
        --forward-mode=txonly --txpkts="$size" --eth-peer=0,02:00:00:00:00:02 \
        --nb-cores=1 --total-num-mbufs=16384 --stats-period 1 > "$tmp/tx.log" 2>&1 || true
    t1=$(cpu_ticks "$sw")
    wait "$rxp" || true
    local sent got
    if grep -q "Failed to start device" "$tmp/tx.log" "$tmp/rx.log"; then
        # virtio_user gave up during its set-up (see the retry below).
        echo "0 0 0"
        return
    fi
    sent=$(testpmd_total "$tmp/tx.log" TX-packets)
    got=$(testpmd_total "$tmp/rx.log" RX-packets)
    if [ -z "$sent" ] || [ -z "$got" ]; then
        cp "$tmp"/*.log "$out/" 2>/dev/null || true
        die "testpmd printed no totals (its logs are in $out)"
    fi
    echo "$sent $got $(awk -v a="$t0" -v b="$t1" -v s="$secs" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.3f", (b - a) / hz / s }')"
}

# row SCENARIO MODE SIZE SENT RECEIVED CPU: one JSON line.
row() {
    python3 - "$secs" "$@" <<'PY'
import json, sys
secs, scen, mode, size, sent, got, cpu = sys.argv[1:]
secs, size, sent, got, cpu = float(secs), int(size), int(sent), int(got), float(cpu)
print(json.dumps({
    "scenario": scen, "mode": mode, "size": size, "seconds": secs,
    "tx_packets": sent, "rx_packets": got,
    "tx_mpps": round(sent / secs / 1e6, 3), "rx_mpps": round(got / secs / 1e6, 3),
    "rx_gbps": round(got * size * 8 / secs / 1e9, 3),
    "switch_cpu": cpu,
    "switch_ns_per_packet": round(cpu * secs * 1e9 / got) if got else None,
}))
PY
}

# ptnetd_run MODE SIZE: one run through ptnetd.
ptnetd_run() {
    local mode=$1 size=$2 args=() pid line
    [ "$mode" = busypoll ] && args=(--busy-poll)
    rm -f "$tmp"/*.sock
    RUST_LOG=warn "$bin/ptnetd" --socket "$tmp/ctl.sock" "${args[@]}" > "$tmp/ptnetd.log" 2>&1 &
    pid=$!
    echo "$pid" >> "$tmp/pids"
    for _ in $(seq 50); do [ -S "$tmp/ctl.sock" ] && break; sleep 0.1; done
    "$bin/ptnetctl" --socket "$tmp/ctl.sock" serve-virtio-net vale0:vm1 --socket "$tmp/vm1.sock" \
        --mac 02:00:00:00:00:01 >/dev/null
    "$bin/ptnetctl" --socket "$tmp/ctl.sock" serve-virtio-net vale0:vm2 --socket "$tmp/vm2.sock" \
        --mac 02:00:00:00:00:02 >/dev/null
    line=$(clients "$pid" "$tmp/vm1.sock" "$tmp/vm2.sock" "$size")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    # shellcheck disable=SC2086
    row "ptnetd-$mode" "$mode" "$size" $line
}

# dpdk_run SIZE: one run through DPDK's vhost PMD (io forwarding between two vhost ports).
dpdk_run() {
    local size=$1 pid line
    rm -f "$tmp"/*.sock
    timeout -s INT $((secs + 20)) dpdk-testpmd -l 0,1 --main-lcore 0 --no-huge -m 1024 --no-pci \
        --file-prefix="ptvn-sw-$$" \
        --vdev "net_vhost0,iface=$tmp/vh0.sock,queues=1" \
        --vdev "net_vhost1,iface=$tmp/vh1.sock,queues=1" -- \
        --forward-mode=io --nb-cores=1 --total-num-mbufs=32768 --stats-period 1 \
        < /dev/null > "$tmp/sw.log" 2>&1 &
    pid=$!
    echo "$pid" >> "$tmp/pids"
    for _ in $(seq 50); do [ -S "$tmp/vh1.sock" ] && break; sleep 0.1; done
    sleep 1
    # The switch's own testpmd pid (timeout's child) for its CPU time.
    local sw
    sw=$(pgrep -P "$pid" dpdk-testpmd || true)
    [ -n "$sw" ] || { cp "$tmp/sw.log" "$out/"; die "the DPDK switch did not start (log in $out/sw.log)"; }
    line=$(clients "$sw" "$tmp/vh0.sock" "$tmp/vh1.sock" "$size")
    kill -INT "$sw" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # shellcheck disable=SC2086
    row dpdk-vhost pmd "$size" $line
}

for size in 64 1514; do
    for what in ptnetd-eventfd ptnetd-busypoll dpdk-vhost; do
        log "$what, $size-byte frames (x$repeat, ${secs} s each)"
        : > "$out/run.tmp"
        for _ in $(seq "$repeat"); do
            # virtio_user sometimes fails its set-up on a loaded machine ("Failed to start
            # device" after an interrupted recv): a run that sent nothing is tried again.
            for attempt in 1 2 3 4 5 6; do
                case $what in
                    ptnetd-eventfd) line=$(ptnetd_run eventfd "$size") ;;
                    ptnetd-busypoll) line=$(ptnetd_run busypoll "$size") ;;
                    dpdk-vhost) line=$(dpdk_run "$size") ;;
                esac
                grep -q '"tx_packets": 0,' <<<"$line" || break
                log "$what: the sender sent nothing (attempt $attempt of 6)"
            done
            printf '%s\n' "$line" >> "$out/run.tmp"
        done
        median "$out/run.tmp" >> "$res"
    done
done

python3 "$here/report.py" --virtio-net "$res"
