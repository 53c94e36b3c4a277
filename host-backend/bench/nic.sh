#!/usr/bin/env bash
# NIC port benchmark: frames from a veth in a network namespace, through a switch, to a host
# client; against the kernel's Linux bridge between two veths as the peer. One command:
#
#   sudo host-backend/bench/nic.sh [--seconds S] [--repeat N] [--out DIR]
#
# Rows (each the median by received Mpps of N runs, default 3), 60- and 1514-byte frames:
#   nic-af_packet  generator (TPACKET_V3 TX ring, in namespace ptbench-gen) → veth →
#                  NIC port (AF_PACKET) on vale0 → host client (ptnet-bench nic)
#   nic-af_xdp     the same with the AF_XDP backend (copy mode, native XDP on veth)
#   bridge         the same generator → veth → Linux bridge → veth → AF_PACKET TPACKET_V3
#                  receiver in namespace ptbench-rx (ptnet-bench bridge)
# The namespaces, veths and the bridge are made here and removed on exit. Prints the table
# (report.py --nic), draws it in DIR/nic.svg and leaves the rows in DIR/nic.jsonl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

secs=3
out=target/bench
repeat=3
# shellcheck source=lib.sh
source "$here/lib.sh"
bench_args "$@"
need_root "the NIC benchmark (namespaces, veth, bridge)"
mkdir -p "$out"
res="$out/nic.jsonl"
: > "$res"

log "building ptnet-bench (release)"
cargo build --release --quiet -p ptnet-bench
bench=$PWD/target/release/ptnet-bench

cleanup() {
    ip netns del ptbench-gen 2>/dev/null || true
    ip netns del ptbench-rx 2>/dev/null || true
    ip link del ptbench-nic 2>/dev/null || true
    ip link del ptbench-bra 2>/dev/null || true
    ip link del ptbench-brb 2>/dev/null || true
    ip link del ptbench-br0 2>/dev/null || true
}
trap cleanup EXIT
cleanup

# veth HOST NS: HOST stays here, its peer is eth0 in NS; both up, IPv6 off (no chatter).
veth() {
    ip link add "$1" type veth peer name eth0 netns "$2"
    sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1"
    ip netns exec "$2" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1
    ip link set "$1" up
    ip -n "$2" link set eth0 up
}

ip netns add ptbench-gen
ip netns add ptbench-rx
veth ptbench-nic ptbench-gen
for size in 60 1514; do
    run nic --backend af_packet --size "$size" --netns ptbench-gen --nic-if ptbench-nic
    run nic --backend af_xdp --size "$size" --netns ptbench-gen --nic-if ptbench-nic
done
ip link del ptbench-nic

# The peer: the same namespace's eth0 (a new veth) on a Linux bridge with ptbench-rx's.
veth ptbench-bra ptbench-gen
veth ptbench-brb ptbench-rx
ip link add ptbench-br0 type bridge
sysctl -qw net.ipv6.conf.ptbench-br0.disable_ipv6=1
ip link set ptbench-bra master ptbench-br0
ip link set ptbench-brb master ptbench-br0
ip link set ptbench-br0 up
for size in 60 1514; do
    run bridge --size "$size" --netns ptbench-gen --rx-netns ptbench-rx --rx-if eth0
done

python3 "$here/report.py" --nic "$res" --svg "$out/nic.svg"
