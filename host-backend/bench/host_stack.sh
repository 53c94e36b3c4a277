#!/usr/bin/env bash
# Host-stack tap benchmark: what the tap of `attach-nic --host-stack` costs. One command:
#
#   sudo host-backend/bench/host_stack.sh [MB]          (default 200 MB per row)
#
# Rows, one TCP stream each (tests/host/scripts/nsframes.py, SHA-256 compared):
#   tap    namespace eth0 → veth → NIC port (af_packet) on vale0 → tap port → host stack
#          (the address is on the tap, which ptnetd created)
#   veth   namespace eth0 → veth → host stack (the address on the veth: the kernel alone)
# Prints MB/s, the frames the tap port moved, ptnetd's CPU time and its CPU per tap frame
# (a tap moves one frame per read/write system call). Namespace and veth made and removed here.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh
need_root "the host-stack benchmark (namespace, veth, tap)"
mb=${1:-200}
bytes=$((mb * 1000000))
ns=ptbench-hs
ns_if=ptbench-hsv
tap=ptbench-hstap
sock=$(mktemp -d)/ptnetd.sock
frames=$here/../../tests/host/scripts/nsframes.py
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    ip netns del $ns 2>/dev/null || true
    ip link del $ns_if 2>/dev/null || true
    rm -rf "$(dirname "$sock")"
}
trap cleanup EXIT
cleanup

log "building ptnetd and ptnetctl (release)"
cargo build --release --quiet -p ptnetd -p ptnetctl
bin=$PWD/target/release

ip netns add $ns
ip -n $ns link set lo up
ip link add $ns_if type veth peer name eth0 netns $ns
sysctl -qw "net.ipv6.conf.$ns_if.disable_ipv6=1"
ip netns exec $ns sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1
# Frames leave the namespace complete and at most MTU long, as from a real NIC.
ip netns exec $ns ethtool -K eth0 tx off >/dev/null
ip link set $ns_if up
ip -n $ns link set eth0 up
ip -n $ns addr add 198.18.9.2/24 dev eth0

# One transfer to ADDR; prints "MB/s seconds".
transfer() {
    python3 "$frames" tcp-server "$1" 5009 --timeout 60 > /tmp/ptbench-hs.srv &
    local srv=$!
    sleep 0.3
    local t0 t1
    t0=$(date +%s.%N)
    ip netns exec $ns python3 "$frames" tcp-client "$1" 5009 "$bytes" > /tmp/ptbench-hs.cli
    wait $srv
    t1=$(date +%s.%N)
    cmp -s <(tail -1 /tmp/ptbench-hs.srv) /tmp/ptbench-hs.cli || die "the stream arrived altered"
    python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'{$mb/s:.1f} {s:.2f}')" "$t0" "$t1"
}

cpu_s() { # utime + stime of PID, seconds
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# Row 1: through the switch and the tap.
"$bin/ptnetd" --socket "$sock" 2>/dev/null &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
"$bin/ptnetctl" -s "$sock" attach-nic vale0 $ns_if --backend af_packet --host-stack $tap >/dev/null
sysctl -qw "net.ipv4.conf.$ns_if.arp_ignore=1"
sysctl -qw "net.ipv6.conf.$tap.disable_ipv6=1"
ip addr add 198.18.9.1/24 dev $tap
ip netns exec $ns busybox ping -c 1 -W 2 198.18.9.1 >/dev/null
c0=$(cpu_s $daemon)
read -r tap_mbs tap_s < <(transfer 198.18.9.1)
c1=$(cpu_s $daemon)
tap_frames=$("$bin/ptnetctl" -s "$sock" list --json | python3 -c "
import json, sys
v = json.load(sys.stdin)
n = [p['nic'] for s in v['switches'] for p in s['ports'] if p['name'] == 'vale0:$tap'][0]
print(n['rx_packets'] + n['tx_packets'])")
kill $daemon; wait $daemon 2>/dev/null || true
daemon=

# Row 2: the kernel alone, the address on the veth.
ip addr add 198.18.9.1/24 dev $ns_if
ip -n $ns neigh flush dev eth0
read -r veth_mbs veth_s < <(transfer 198.18.9.1)

printf '%-6s %10s %8s %12s %14s %18s\n' row MB_per_s seconds tap_frames daemon_cpu_s daemon_ns_per_tap_frame
printf '%-6s %10s %8s %12s %14s %18s\n' tap "$tap_mbs" "$tap_s" "$tap_frames" \
    "$(python3 -c "print(f'{$c1-$c0:.2f}')")" \
    "$(python3 -c "print(f'{($c1-$c0)*1e9/max($tap_frames,1):.0f}')")"
printf '%-6s %10s %8s %12s %14s %18s\n' veth "$veth_mbs" "$veth_s" - - -
