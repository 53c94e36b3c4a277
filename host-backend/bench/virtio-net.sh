#!/usr/bin/env bash
# virtio-net port benchmark: DPDK virtio_user txonly → switch → virtio_user rxonly, with
# ptnetd's VALE as the switch against DPDK's own vhost backend as the switch, in the same
# run. One command:
#
#   sudo host-backend/bench/virtio-net.sh [--seconds S] [--repeat N] [--out DIR] [--only LIST]
#
# (defaults: --seconds 5 --repeat 3, about 5–6 minutes; --only takes a comma-separated list of
# the scenarios below, e.g. --only ovs-dpdk,dpdk-vhost, for a quick look; the published table
# is one run of them all.)
#
# Rows (each the median by received Mpps of N runs, default 3), 64- and 1514-byte frames:
#   ptnetd-eventfd   dpdk-testpmd txonly (virtio_user) → ptnetd virtio-net port vale0:vm1 →
#                    VALE → virtio-net port vale0:vm2 → dpdk-testpmd rxonly (virtio_user);
#                    the ports' workers sleep on eventfds after a 20 µs linger (the default)
#   ptnetd-busypoll  the same with `ptnetd --busy-poll` (the workers never sleep)
#   dpdk-vhost       the same two testpmds, with `dpdk-testpmd --vdev net_vhost0
#                    --vdev net_vhost1 --forward-mode=io` as the switch (the peer to beat)
#   ovs-dpdk         the same two testpmds, with Open vSwitch's userspace datapath as the
#                    switch (bookworm's OVS 3.1 with DPDK 22.11, ci/prereqs.sh ovs-dpdk): a
#                    private instance per run (its own ovsdb-server and database in a temp
#                    folder, ovs-vswitchd in its own network namespace so that the bridge's tap
#                    devices never reach the host's), a netdev bridge with two dpdkvhostuser
#                    ports (OVS is the vhost-user server, as the other switches are), the
#                    flows in_port=1→output:2 and in_port=2→output:1 (no MAC learning), one
#                    PMD thread pinned to CPU 1 (pmd-cpu-mask=0x2) and the main thread on CPU
#                    0 (dpdk-lcore-mask=0x1), like DPDK's switch above. DPDK runs without huge
#                    pages: dpdk-extra="--no-huge -m 1024 --no-pci --legacy-mem
#                    --file-prefix=...". OVS adds --in-memory unless --legacy-mem is given, and
#                    DPDK refuses --in-memory with --no-huge (which implies legacy memory), so
#                    --legacy-mem must be explicit; per-port-memory=true, because the shared
#                    pool OVS asks for by default (262144 mbufs) does not fit in -m 1024.
#                    The row also carries what the PMD took from the sender and its own cost
#                    of a frame: "avg processing cycles per packet" of pmd-stats-show (busy
#                    cycles only, not the empty polls; TSC cycles, converted with cpu MHz).
#                    Skipped, with the reason (printed and in DIR/ovs-dpdk.skipped), when
#                    ovs-vswitchd-dpdk is not installed or does not start; to try other EAL
#                    options, set PTNET_OVS_DPDK_EXTRA (it replaces dpdk-extra).
# The receiver starts with `--tx-first` (one burst from its own MAC, 02:00:00:00:00:02), so
# that both switches know where it is and forward the sender's frames to it alone instead of
# flooding them. Each testpmd has a main and one forwarding lcore (`-l 0,1`, --no-huge); on a 2-CPU machine
# the two clients' forwarding cores are pinned to different CPUs and the switch (ptnetd's
# workers, or DPDK's forwarding core) shares them. Sent and received rates are the testpmd
# totals over the sender's S seconds; `switch_cpu` is the switch process's CPU time over the
# same window, in cores. Prints the table (report.py --virtio-net), draws it in
# DIR/virtio-net.svg and leaves the rows in DIR/virtio-net.jsonl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

secs=5
out=target/bench
repeat=3
scenarios=(ptnetd-eventfd ptnetd-busypoll dpdk-vhost ovs-dpdk)
# shellcheck source=lib.sh
source "$here/lib.sh"
# --only is this script's own option; the rest are the benchmarks' common ones.
common=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only) IFS=, read -r -a scenarios <<<"$2"; shift 2 ;;
        *) common+=("$1"); shift ;;
    esac
done
bench_args "${common[@]}"
for what in "${scenarios[@]}"; do
    case $what in
        ptnetd-eventfd|ptnetd-busypoll|dpdk-vhost|ovs-dpdk) ;;
        *) die "unknown scenario $what (see the header of $0)" ;;
    esac
done
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (ci/prereqs.sh dpdk)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
res="$out/virtio-net.jsonl"
: > "$res"
rm -f "$out/ovs-dpdk.skipped"

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
    # DPDK's runtime folders of the processes started here (their --file-prefix).
    rm -rf "/var/run/dpdk/ptvn-rx-$$" "/var/run/dpdk/ptvn-tx-$$" "/var/run/dpdk/ptvn-sw-$$" \
        "/var/run/dpdk/ptvn-ovs-$$"
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
    RUST_LOG=warn "$bin/ptnetd" --socket "$tmp/ctl.sock" --vm-socket-dir "$tmp" "${args[@]}" \
        > "$tmp/ptnetd.log" 2>&1 &
    pid=$!
    echo "$pid" >> "$tmp/pids"
    for _ in $(seq 50); do [ -S "$tmp/ctl.sock" ] && break; sleep 0.1; done
    "$bin/ptnetctl" --socket "$tmp/ctl.sock" serve-virtio-net vale0:vm1 --socket vm1.sock \
        --mac 02:00:00:00:00:01 >/dev/null
    "$bin/ptnetctl" --socket "$tmp/ctl.sock" serve-virtio-net vale0:vm2 --socket vm2.sock \
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

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 10 s; reaps it.
stop_pid() {
    local p=$1
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

ovs_vswitchd=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
ovs_schema=/usr/share/openvswitch/vswitch.ovsschema
ovs_skip=""   # why the ovs-dpdk rows are missing, once known
# PTNET_OVS_DPDK_EXTRA replaces OVS's EAL options, to try others (it then needs its own
# --file-prefix or --in-memory).
ovs_dpdk_extra=${PTNET_OVS_DPDK_EXTRA:-"--no-huge -m 1024 --no-pci --legacy-mem --file-prefix=ptvn-ovs-$$"}

# ovs_run SIZE: one run through a private OVS-DPDK instance. Prints the row, or "skip: WHY"
# when OVS-DPDK cannot run here.
ovs_run() {
    local size=$1 d="$tmp/ovs" db dbp swp vs line cycles took why
    rm -rf "$d" "/var/run/dpdk/ptvn-ovs-$$"
    mkdir -p "$d"
    # Every OVS tool finds its sockets, database and logs here, never in the system's
    # /var/run/openvswitch or /etc/openvswitch.
    export OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d OVS_SYSCONFDIR=$d
    db="unix:$d/db.sock"
    vs=(ovs-vsctl "--db=$db" --timeout=30)
    ovsdb-tool create "$d/conf.db" "$ovs_schema"
    ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
        --unixctl="$d/ovsdb-server.ctl" --log-file="$d/ovsdb-server.log" --no-chdir \
        > "$d/ovsdb-server.out" 2>&1 &
    dbp=$!
    echo "$dbp" >> "$tmp/pids"
    for _ in $(seq 50); do [ -S "$d/db.sock" ] && break; sleep 0.1; done
    "${vs[@]}" --no-wait init
    "${vs[@]}" --no-wait set Open_vSwitch . other_config:dpdk-init=true \
        other_config:dpdk-lcore-mask=0x1 other_config:pmd-cpu-mask=0x2 \
        other_config:per-port-memory=true "other_config:dpdk-extra=$ovs_dpdk_extra"
    # Its own network namespace: a netdev bridge makes (persistent) tap devices, which go
    # away with the namespace. unshare execs, so $! is ovs-vswitchd itself.
    unshare --net "$ovs_vswitchd" "$db" --pidfile="$d/ovs-vswitchd.pid" \
        --unixctl="$d/ovs-vswitchd.ctl" --log-file="$d/ovs-vswitchd.log" --no-chdir \
        > "$d/ovs-vswitchd.out" 2>&1 &
    swp=$!
    echo "$swp" >> "$tmp/pids"
    for _ in $(seq 300); do
        kill -0 "$swp" 2>/dev/null || break
        [ "$("${vs[@]}" get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ] && break
        sleep 0.1
    done
    if ! kill -0 "$swp" 2>/dev/null \
        || [ "$("${vs[@]}" get Open_vSwitch . dpdk_initialized 2>/dev/null)" != true ]; then
        # OVS's own log lines: the EAL arguments it built and DPDK's errors, in order.
        why=$(grep -E '\|dpdk\|(ERR|EMER)\||EAL ARGS' "$d/ovs-vswitchd.log" 2>/dev/null \
            | sed 's/^[^|]*|[^|]*|[^|]*|[^|]*|//' | awk '!seen[$0]++' | paste -sd ';' - || true)
        cp "$d/ovs-vswitchd.log" "$out/ovs-vswitchd.log" 2>/dev/null || true
        stop_pid "$swp"
        stop_pid "$dbp"
        echo "skip: ovs-vswitchd-dpdk did not initialise DPDK with dpdk-extra=\"${ovs_dpdk_extra}\": ${why:-no EAL error logged} (log in $out/ovs-vswitchd.log)"
        return
    fi
    "${vs[@]}" add-br br0 -- set bridge br0 datapath_type=netdev \
        -- add-port br0 vh0 -- set Interface vh0 type=dpdkvhostuser ofport_request=1 \
        -- add-port br0 vh1 -- set Interface vh1 type=dpdkvhostuser ofport_request=2
    ovs-ofctl del-flows br0
    ovs-ofctl add-flow br0 in_port=1,actions=output:2
    ovs-ofctl add-flow br0 in_port=2,actions=output:1
    for _ in $(seq 50); do [ -S "$d/vh0" ] && [ -S "$d/vh1" ] && break; sleep 0.1; done
    if ! [ -S "$d/vh0" ] || ! [ -S "$d/vh1" ]; then
        cp "$d/ovs-vswitchd.log" "$out/ovs-vswitchd.log" 2>/dev/null || true
        stop_pid "$swp"
        stop_pid "$dbp"
        die "OVS made no vhost-user sockets (log in $out/ovs-vswitchd.log)"
    fi
    ovs-appctl -t "$d/ovs-vswitchd.ctl" dpif-netdev/pmd-stats-clear >/dev/null
    line=$(clients "$swp" "$d/vh0" "$d/vh1" "$size")
    ovs-appctl -t "$d/ovs-vswitchd.ctl" dpif-netdev/pmd-stats-show > "$d/pmd-stats" || true
    cycles=$(awk '/pmd thread/ { p = 1 } p && /avg processing cycles per packet/ { print $6; exit }' \
        "$d/pmd-stats")
    took=$(awk '/pmd thread/ { p = 1 } p && /packets received/ { print $3; exit }' "$d/pmd-stats")
    cp "$d/ovs-vswitchd.log" "$out/ovs-vswitchd.log" 2>/dev/null || true
    stop_pid "$swp"
    stop_pid "$dbp"
    rm -rf "/var/run/dpdk/ptvn-ovs-$$"
    # shellcheck disable=SC2086
    row ovs-dpdk pmd "$size" $line | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
cycles, mhz, took = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if took:
    r["switch_rx_packets"] = int(took)  # what the PMD took from the sender
    # The sender filled its 256-entry ring and the PMD never emptied it: OVS did not poll
    # the port of the sender at all (seen once in ten runs, its queue enabled while the
    # PMD reloaded). A set-up failure, not a rate: the run is tried again.
    if r["tx_packets"] >= 256 and int(took) < 256:
        r["setup_failed"] = "OVS never polled the port of the sender"
if cycles:
    r["switch_busy_cycles_per_packet"] = round(float(cycles), 1)
    r["tsc_mhz"] = mhz
    r["switch_busy_ns_per_packet"] = round(float(cycles) / mhz * 1000, 1)
print(json.dumps(r))' "${cycles:-}" "$(awk '/^cpu MHz/ { print $4; exit }' /proc/cpuinfo)" "${took:-}"
}

for size in 64 1514; do
    for what in "${scenarios[@]}"; do
        if [ "$what" = ovs-dpdk ] && [ -z "$ovs_skip" ]; then
            for t in "$ovs_vswitchd" "$ovs_schema"; do
                [ -e "$t" ] || ovs_skip="$t not found (ci/prereqs.sh ovs-dpdk installs it)"
            done
            for t in ovsdb-tool ovsdb-server ovs-vsctl ovs-ofctl ovs-appctl unshare; do
                command -v "$t" >/dev/null || ovs_skip="$t not found (ci/prereqs.sh ovs-dpdk)"
            done
        fi
        if [ "$what" = ovs-dpdk ] && [ -n "$ovs_skip" ]; then
            log "ovs-dpdk, $size-byte frames: skipped: $ovs_skip"
            printf 'ovs-dpdk: %s\n' "$ovs_skip" > "$out/ovs-dpdk.skipped"
            continue
        fi
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
                    ovs-dpdk) line=$(ovs_run "$size") ;;
                esac
                case $line in skip:*) break ;; esac
                if grep -q '"setup_failed"' <<<"$line"; then
                    log "$what: $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["setup_failed"])' "$line") (attempt $attempt of 6)"
                    continue
                fi
                grep -q '"tx_packets": 0,' <<<"$line" || break
                log "$what: the sender sent nothing (attempt $attempt of 6)"
            done
            case $line in
                skip:*) ovs_skip=${line#skip: }; break ;;
            esac
            if grep -q '"setup_failed"' <<<"$line"; then
                log "$what: six failed set-ups in a row; this run has no row"
                continue
            fi
            printf '%s\n' "$line" >> "$out/run.tmp"
        done
        if [ "$what" = ovs-dpdk ] && [ -n "$ovs_skip" ]; then
            log "ovs-dpdk: skipped: $ovs_skip"
            printf 'ovs-dpdk: %s\n' "$ovs_skip" > "$out/ovs-dpdk.skipped"
            continue
        fi
        if [ -s "$out/run.tmp" ]; then
            median "$out/run.tmp" >> "$res"
        else
            log "$what, $size-byte frames: no run measured, no row"
        fi
    done
done

python3 "$here/report.py" --virtio-net "$res" --svg "$out/virtio-net.svg"
