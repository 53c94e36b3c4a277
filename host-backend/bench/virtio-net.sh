#!/usr/bin/env bash
# virtio-net ports per core: ptnetd against DPDK's vhost PMD and OVS-DPDK, each switch pinned
# alone on one CPU and the DPDK virtio_user client alone on another, in the same run. One
# command:
#
#   host-backend/bench/virtio-net.sh [--seconds S] [--repeat N] [--out DIR]
#       [--only SCENARIOS] [--directions DIRS] [--sizes SIZES]
#       [--switch-cpu N] [--client-cpu N]
#
# (as root; defaults: --seconds 5 --repeat 3, every scenario, direction and size, switch on
# CPU 1, client on CPU 0: about 15 minutes. The lists are comma-separated.)
#
# The placement is the point: every process of the switch under test (ptnetd with `--cpus`,
# a DPDK testpmd or ovs-vswitchd and ovsdb-server under `taskset`, their lcores or PMD
# threads on that CPU too) runs on the switch CPU only, and the client testpmd (both lcores)
# on the client CPU only. No polling process shares a CPU with another polling process of
# the other side, so a rate is what one switch core does, not who wins the scheduler.
#
# Directions (the client is `dpdk-testpmd` with `net_virtio_user` ports, `-i`, commands fed
# through a FIFO; its rate is testpmd's own Rx-pps or Tx-pps between two `show port stats
# all`, S seconds apart, after 2 s of warm-up):
#   tx  guest TX: the client runs txonly (frames to 02:00:00:00:00:02); the switch takes
#       them off the virtqueue and disposes of them. Rate: the client's Tx-pps, the frames
#       the switch took (a full ring is testpmd's TX-dropped, not counted).
#         ptnetd: one virtio-net port vale0:vm1 and no other port, so VALE floods to nobody.
#         dpdk-vhost: testpmd net_vhost0 rxonly.  ovs-flows: one dpdkvhostuser port and the
#         flow in_port=1,actions=drop.  ovs-normal: the NORMAL action (learning, flooding
#         to the one other, unconnected, port).
#   rx  guest RX: the switch side produces, the client runs rxonly (`start tx_first`: its one
#       burst tells a learning switch where 02:00:00:00:00:01 is). Rate: the client's Rx-pps.
#         ptnetd: a `ptnet-pktgen tx` host client on vale0 pinned to the switch CPU with the
#         daemon (its cost is on the switch core).  dpdk-vhost: testpmd net_vhost0 txonly.
#         OVS has no traffic generator: no OVS row.
#   gg  guest to guest through the switch: one client with two virtio_user ports (MACs
#       ..:01 and ..:02) in mac-forwarding mode, `start tx_first 8` (8 bursts of 32 per port
#       in flight): what arrives on one port goes out of the other, addressed to the first,
#       so two streams circle client → switch → client, one each way. Rate: the client's
#       Rx-pps over both ports, i.e. frames the switch forwarded.
#         ptnetd: virtio-net ports vale0:vm1 and vale0:vm2.  dpdk-vhost: testpmd
#         net_vhost0 + net_vhost1, io forwarding.  ovs-flows: in_port=1→2, 2→1.
#         ovs-normal: the NORMAL action (MAC learning).
# Scenarios: ptnetd-eventfd (a worker thread per queue pair, sleeping on kicks after a 20 µs
# linger, the default), ptnetd-busypoll (`--busy-poll`: every pair's worker spins; two
# ports' workers share the one CPU), ptnetd-group-eventfd and ptnetd-group-busypoll (the
# same with `--poll-groups 1`: one thread serves every pair, as an OVS PMD thread does),
# dpdk-vhost, ovs-flows, ovs-normal (bookworm's OVS 3.1 with DPDK 22.11, a private
# instance per run: its own ovsdb-server and database in a temp folder, ovs-vswitchd in its
# own network namespace, DPDK without huge pages: dpdk-extra="--no-huge -m 1024 --no-pci
# --legacy-mem --file-prefix=...", per-port-memory=true; see docs/benchmarks.md for why;
# skipped with the reason when ovs-vswitchd-dpdk is missing: ci/prereqs.sh ovs-dpdk).
#
# Each row: the median of N runs by rate, with the range; `switch_core_busy` is the share of
# the switch CPU's time not idle over the measured window (/proc/stat), and
# `switch_ns_per_frame` that time over the frames. Prints the table (report.py --per-core),
# draws DIR/virtio-net.svg, leaves the rows in DIR/virtio-net.jsonl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

secs=5
out=target/bench
repeat=3
scenarios=(ptnetd-eventfd ptnetd-busypoll ptnetd-group-eventfd ptnetd-group-busypoll dpdk-vhost
    ovs-flows ovs-normal)
directions=(tx rx gg)
sizes=(64 1514)
sw_cpu=1
cl_cpu=0
# shellcheck source=lib.sh
source "$here/lib.sh"
common=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only) IFS=, read -r -a scenarios <<<"$2"; shift 2 ;;
        --directions) IFS=, read -r -a directions <<<"$2"; shift 2 ;;
        --sizes) IFS=, read -r -a sizes <<<"$2"; shift 2 ;;
        --switch-cpu) sw_cpu=$2; shift 2 ;;
        --client-cpu) cl_cpu=$2; shift 2 ;;
        *) common+=("$1"); shift ;;
    esac
done
bench_args "${common[@]}"
for what in "${scenarios[@]}"; do
    case $what in
        ptnetd-eventfd|ptnetd-busypoll|ptnetd-group-eventfd|ptnetd-group-busypoll) ;;
        dpdk-vhost|ovs-flows|ovs-normal) ;;
        *) die "unknown scenario $what (see the header of $0)" ;;
    esac
done
for d in "${directions[@]}"; do
    case $d in tx|rx|gg) ;; *) die "unknown direction $d (tx, rx, gg)" ;; esac
done
[ "$sw_cpu" != "$cl_cpu" ] || die "the switch and the client need CPUs of their own"
for c in "$sw_cpu" "$cl_cpu"; do
    taskset -c "$c" true 2>/dev/null || die "CPU $c is not available here"
done
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (ci/prereqs.sh dpdk)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
res="$out/virtio-net.jsonl"
: > "$res"
rm -f "$out/ovs-dpdk.skipped"

log "building ptnetd, ptnetctl and ptnet-pktgen (release)"
cargo build --release --quiet -p ptnetd -p ptnetctl -p ptnet-pktgen
bin=$PWD/target/release
tmp=$(mktemp -d /tmp/ptnet-vnet-bench.XXXXXX)
# Every process started here, by PID (runs happen in subshells: the list is a file).
cleanup() {
    local p
    for p in $(cat "$tmp/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
    # DPDK's runtime folders of the processes started here (their --file-prefix).
    rm -rf "/var/run/dpdk/ptvn-cl-$$" "/var/run/dpdk/ptvn-sw-$$" "/var/run/dpdk/ptvn-ovs-$$"
}
trap cleanup EXIT

# cpu_busy CPU: "busy total" clock ticks of one CPU so far (/proc/stat; busy is all but idle
# and iowait).
cpu_busy() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i
        print t - $5 - $6, t }' /proc/stat
}

# stop_pid PID: SIGTERM (SIGINT for testpmd's sake first), then SIGKILL after 10 s; reaps it.
stop_pid() {
    local p=$1
    kill -INT "$p" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

# client DIR SIZE SOCK0 [SOCK1]: the client testpmd on the client CPU against the switch's
# vhost-user socket(s). Prints "frames_per_second switch_core_busy", or "fail: WHY".
client() {
    local dir=$1 size=$2 s0=$3 s1=${4:-} start field ports=1 cpid b0 b1
    local vdevs=(--vdev "net_virtio_user0,path=$s0,queues=1,mac=02:00:00:00:00:01")
    local fwd=(--txpkts="$size")
    case $dir in
        tx) fwd+=(--forward-mode=txonly --eth-peer=0,02:00:00:00:00:02)
            start=start; field=Tx-pps ;;
        rx) fwd+=(--forward-mode=rxonly --eth-peer=0,02:00:00:00:00:02)
            start="start tx_first"; field=Rx-pps ;;
        gg) vdevs+=(--vdev "net_virtio_user1,path=$s1,queues=1,mac=02:00:00:00:00:02")
            fwd+=(--forward-mode=mac --eth-peer=0,02:00:00:00:00:02 --eth-peer=1,02:00:00:00:00:01)
            start="start tx_first 8"; field=Rx-pps; ports=2 ;;
    esac
    rm -f "$tmp/cmd"
    mkfifo "$tmp/cmd"
    taskset -c "$cl_cpu" dpdk-testpmd --lcores "0@$cl_cpu,1@$cl_cpu" --main-lcore 0 --no-huge \
        -m 512 --no-pci --file-prefix="ptvn-cl-$$" "${vdevs[@]}" -- -i --nb-cores=1 \
        --total-num-mbufs=16384 "${fwd[@]}" < "$tmp/cmd" > "$tmp/client.log" 2>&1 &
    cpid=$!
    echo "$cpid" >> "$tmp/pids"
    exec 3> "$tmp/cmd"
    for _ in $(seq 200); do
        grep -q "testpmd> " "$tmp/client.log" 2>/dev/null && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "testpmd> " "$tmp/client.log" || grep -q "Failed to start device" "$tmp/client.log"; then
        exec 3>&-
        stop_pid "$cpid"
        cp "$tmp/client.log" "$out/client.log"
        echo "fail: the client did not start (log in $out/client.log)"
        return
    fi
    echo "$start" >&3
    sleep 2
    b0=$(cpu_busy "$sw_cpu")
    echo "show port stats all" >&3
    sleep "$secs"
    b1=$(cpu_busy "$sw_cpu")
    echo "show port stats all" >&3
    sleep 0.5
    echo "stop" >&3
    echo "quit" >&3
    exec 3>&-
    for _ in $(seq 100); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$cpid"
    cp "$tmp/client.log" "$out/client-last.log"
    # The last show printed one block per port; their rates summed.
    awk -v f="$field:" -v n="$ports" -v b0="$b0" -v b1="$b1" '
        { for (i = 1; i < NF; i++) if ($i == f) v[++k] = $(i + 1) }
        END {
            if (k < 2 * n) { print "fail: testpmd printed " k " " f " values"; exit }
            s = 0; for (j = k - n + 1; j <= k; j++) s += v[j]
            split(b0, a, " "); split(b1, b, " ")
            busy = (b[2] > a[2]) ? (b[1] - a[1]) / (b[2] - a[2]) : 0
            printf "%d %.3f\n", s, busy
        }' "$tmp/client.log"
}

# row DIR SCENARIO SIZE PPS BUSY: one JSON line.
row() {
    python3 - "$secs" "$sw_cpu" "$cl_cpu" "$@" <<'PY'
import json, sys
secs, sw, cl, d, scen, size, pps, busy = sys.argv[1:]
size, pps, busy = int(size), int(pps), float(busy)
print(json.dumps({
    "direction": d, "scenario": scen, "size": size, "seconds": float(secs),
    "switch_cpu": int(sw), "client_cpu": int(cl),
    "rx_mpps": round(pps / 1e6, 3), "rx_gbps": round(pps * size * 8 / 1e9, 3),
    "switch_core_busy": busy,
    "switch_ns_per_frame": round(busy * 1e9 / pps, 1) if pps else None,
}))
PY
}

# wait_socket PATH...: until each exists (10 s at most).
wait_socket() {
    local s
    for s in "$@"; do
        for _ in $(seq 100); do [ -S "$s" ] && break; sleep 0.1; done
        [ -S "$s" ] || return 1
    done
}

# ptnetd_run MODE DIR SIZE: one run through ptnetd on the switch CPU (MODE eventfd,
# busypoll, group-eventfd or group-busypoll).
ptnetd_run() {
    local mode=$1 dir=$2 size=$3 args=(--cpus "$sw_cpu") pid gen="" line
    case $mode in *busypoll) args+=(--busy-poll) ;; esac
    case $mode in group-*) args+=(--poll-groups 1) ;; esac
    rm -f "$tmp"/*.sock
    RUST_LOG=warn "$bin/ptnetd" --socket "$tmp/ctl.sock" --vm-socket-dir "$tmp" "${args[@]}" \
        > "$tmp/ptnetd.log" 2>&1 &
    pid=$!
    echo "$pid" >> "$tmp/pids"
    wait_socket "$tmp/ctl.sock" || { stop_pid "$pid"; echo "fail: ptnetd did not start"; return; }
    local ctl=("$bin/ptnetctl" --socket "$tmp/ctl.sock")
    "${ctl[@]}" serve-virtio-net vale0:vm1 --socket vm1.sock --mac 02:00:00:00:00:01 >/dev/null
    if [ "$dir" = gg ]; then
        "${ctl[@]}" serve-virtio-net vale0:vm2 --socket vm2.sock --mac 02:00:00:00:00:02 >/dev/null
    fi
    if [ "$dir" = rx ]; then
        # The generator: a host client on the switch CPU, sending until stopped.
        taskset -c "$sw_cpu" "$bin/ptnet-pktgen" tx --socket "$tmp/ctl.sock" -i vale0:gen \
            -l "$size" --dst-mac 02:00:00:00:00:01 --src-mac 02:00:00:00:00:09 -q \
            > "$tmp/gen.log" 2>&1 &
        gen=$!
        echo "$gen" >> "$tmp/pids"
    fi
    line=$(client "$dir" "$size" "$tmp/vm1.sock" "$tmp/vm2.sock")
    [ -n "$gen" ] && stop_pid "$gen"
    stop_pid "$pid"
    case $line in fail:*) echo "$line"; return ;; esac
    # shellcheck disable=SC2086
    row "$dir" "ptnetd-$mode" "$size" $line
}

# dpdk_run DIR SIZE: one run through DPDK's vhost PMD (testpmd) on the switch CPU.
dpdk_run() {
    local dir=$1 size=$2 pid line fwd vdevs
    rm -f "$tmp"/*.sock
    vdevs=(--vdev "net_vhost0,iface=$tmp/vh0.sock,queues=1")
    case $dir in
        tx) fwd=(--forward-mode=rxonly) ;;
        rx) fwd=(--forward-mode=txonly --txpkts="$size" --eth-peer=0,02:00:00:00:00:01) ;;
        gg) fwd=(--forward-mode=io)
            vdevs+=(--vdev "net_vhost1,iface=$tmp/vh1.sock,queues=1") ;;
    esac
    taskset -c "$sw_cpu" dpdk-testpmd --lcores "0@$sw_cpu,1@$sw_cpu" --main-lcore 0 --no-huge \
        -m 1024 --no-pci --file-prefix="ptvn-sw-$$" "${vdevs[@]}" -- --nb-cores=1 \
        --total-num-mbufs=32768 --stats-period 1 "${fwd[@]}" < /dev/null > "$tmp/sw.log" 2>&1 &
    pid=$!
    echo "$pid" >> "$tmp/pids"
    if ! wait_socket "$tmp/vh0.sock"; then
        stop_pid "$pid"
        cp "$tmp/sw.log" "$out/"
        echo "fail: the DPDK switch did not start (log in $out/sw.log)"
        return
    fi
    line=$(client "$dir" "$size" "$tmp/vh0.sock" "$tmp/vh1.sock")
    stop_pid "$pid"
    case $line in fail:*) echo "$line"; return ;; esac
    # shellcheck disable=SC2086
    row "$dir" dpdk-vhost "$size" $line
}

ovs_vswitchd=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
ovs_schema=/usr/share/openvswitch/vswitch.ovsschema
ovs_skip=""   # why the OVS rows are missing, once known
# PTNET_OVS_DPDK_EXTRA replaces OVS's EAL options, to try others (it then needs its own
# --file-prefix or --in-memory).
ovs_dpdk_extra=${PTNET_OVS_DPDK_EXTRA:-"--no-huge -m 1024 --no-pci --legacy-mem --file-prefix=ptvn-ovs-$$"}

# ovs_run KIND DIR SIZE: one run through a private OVS-DPDK instance on the switch CPU (KIND
# flows or normal). Prints the row, "skip: WHY" when OVS-DPDK cannot run here, or "fail: WHY".
ovs_run() {
    local kind=$1 dir=$2 size=$3 d="$tmp/ovs" db dbp swp line why mask
    mask=$(printf '0x%x' $((1 << sw_cpu)))
    rm -rf "$d" "/var/run/dpdk/ptvn-ovs-$$"
    mkdir -p "$d"
    # Every OVS tool finds its sockets, database and logs here, never in the system's
    # /var/run/openvswitch or /etc/openvswitch.
    export OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d OVS_SYSCONFDIR=$d
    db="unix:$d/db.sock"
    local vs=(ovs-vsctl "--db=$db" --timeout=30)
    ovsdb-tool create "$d/conf.db" "$ovs_schema"
    taskset -c "$sw_cpu" ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" \
        --pidfile="$d/ovsdb-server.pid" --unixctl="$d/ovsdb-server.ctl" \
        --log-file="$d/ovsdb-server.log" --no-chdir > "$d/ovsdb-server.out" 2>&1 &
    dbp=$!
    echo "$dbp" >> "$tmp/pids"
    wait_socket "$d/db.sock" || { stop_pid "$dbp"; echo "fail: ovsdb-server did not start"; return; }
    "${vs[@]}" --no-wait init
    "${vs[@]}" --no-wait set Open_vSwitch . other_config:dpdk-init=true \
        "other_config:dpdk-lcore-mask=$mask" "other_config:pmd-cpu-mask=$mask" \
        other_config:per-port-memory=true "other_config:dpdk-extra=$ovs_dpdk_extra"
    # Its own network namespace: a netdev bridge makes (persistent) tap devices, which go
    # away with the namespace. unshare and taskset exec, so $! is ovs-vswitchd itself.
    unshare --net taskset -c "$sw_cpu" "$ovs_vswitchd" "$db" --pidfile="$d/ovs-vswitchd.pid" \
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
    case $kind/$dir in
        normal/*) ovs-ofctl add-flow br0 actions=NORMAL ;;
        flows/tx) ovs-ofctl add-flow br0 in_port=1,actions=drop ;;
        flows/*)
            ovs-ofctl add-flow br0 in_port=1,actions=output:2
            ovs-ofctl add-flow br0 in_port=2,actions=output:1 ;;
    esac
    if ! wait_socket "$d/vh0" "$d/vh1"; then
        cp "$d/ovs-vswitchd.log" "$out/ovs-vswitchd.log" 2>/dev/null || true
        stop_pid "$swp"
        stop_pid "$dbp"
        echo "fail: OVS made no vhost-user sockets (log in $out/ovs-vswitchd.log)"
        return
    fi
    line=$(client "$dir" "$size" "$d/vh0" "$d/vh1")
    cp "$d/ovs-vswitchd.log" "$out/ovs-vswitchd.log" 2>/dev/null || true
    stop_pid "$swp"
    stop_pid "$dbp"
    rm -rf "/var/run/dpdk/ptvn-ovs-$$"
    case $line in fail:*) echo "$line"; return ;; esac
    # shellcheck disable=SC2086
    row "$dir" "ovs-$kind" "$size" $line
}

# ovs_check: sets ovs_skip when OVS-DPDK is not installed.
ovs_check() {
    local t
    for t in "$ovs_vswitchd" "$ovs_schema"; do
        [ -e "$t" ] || ovs_skip="$t not found (ci/prereqs.sh ovs-dpdk installs it)"
    done
    for t in ovsdb-tool ovsdb-server ovs-vsctl ovs-ofctl unshare; do
        command -v "$t" >/dev/null || ovs_skip="$t not found (ci/prereqs.sh ovs-dpdk)"
    done
}
ovs_check

for dir in "${directions[@]}"; do
    for size in "${sizes[@]}"; do
        for what in "${scenarios[@]}"; do
            case $what/$dir in ovs-*/rx) continue ;; esac
            if [[ $what == ovs-* ]] && [ -n "$ovs_skip" ]; then
                log "$what, $dir, $size B: skipped: $ovs_skip"
                printf 'ovs-dpdk: %s\n' "$ovs_skip" > "$out/ovs-dpdk.skipped"
                continue
            fi
            log "$what, $dir, $size-byte frames (x$repeat, ${secs} s each)"
            : > "$out/run.tmp"
            for _ in $(seq "$repeat"); do
                # virtio_user sometimes fails its set-up on a loaded machine, and OVS once in
                # a while never polls a port: a run that moved nothing is tried again.
                for attempt in 1 2 3 4; do
                    case $what in
                        ptnetd-eventfd) line=$(ptnetd_run eventfd "$dir" "$size") ;;
                        ptnetd-busypoll) line=$(ptnetd_run busypoll "$dir" "$size") ;;
                        ptnetd-group-*) line=$(ptnetd_run "${what#ptnetd-}" "$dir" "$size") ;;
                        dpdk-vhost) line=$(dpdk_run "$dir" "$size") ;;
                        ovs-flows) line=$(ovs_run flows "$dir" "$size") ;;
                        ovs-normal) line=$(ovs_run normal "$dir" "$size") ;;
                    esac
                    case $line in
                        skip:*) break ;;
                        fail:*) log "$what: ${line#fail: } (attempt $attempt of 4)" ;;
                        *'"rx_mpps": 0.0,'*) log "$what: nothing moved (attempt $attempt of 4)" ;;
                        *) break ;;
                    esac
                    line=""
                done
                case $line in skip:*) ovs_skip=${line#skip: }; break ;; esac
                [ -n "$line" ] && printf '%s\n' "$line" >> "$out/run.tmp"
            done
            if [[ $what == ovs-* ]] && [ -n "$ovs_skip" ]; then
                log "$what: skipped: $ovs_skip"
                printf 'ovs-dpdk: %s\n' "$ovs_skip" > "$out/ovs-dpdk.skipped"
                continue
            fi
            if [ -s "$out/run.tmp" ]; then
                median "$out/run.tmp" >> "$res"
            else
                log "$what, $dir, $size B: no run measured, no row"
            fi
        done
    done
done

python3 "$here/report.py" --per-core "$res" --svg "$out/virtio-net.svg"
