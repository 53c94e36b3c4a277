#!/usr/bin/env bash
# Tier 2: host integration. The real daemon and client processes over its control socket,
# network namespaces and veth pairs for the NIC ports, DPDK's virtio_user as a virtio-net
# client, the ptnet device driven by a frontend simulator, the Debian package installed and
# removed, a short run of every fuzz target, and smoke runs of the benchmarks. Root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source ci/lib/common.sh

need_root "tier 2"
ensure_cargo
# dpdk: dpdk-testpmd is the virtio-user client of tests/host/tests/virtio_net.rs; qemu:
# Debian's stock QEMU takes the ivshmem transport in tests/host/tests/ivshmem.rs.
ci/prereqs.sh base dpdk prometheus qemu
# Debian unstable's QEMU in a minimal unstable chroot (cached): the ivshmem transport is
# checked on both stock binaries.
PTNET_UNSTABLE_QEMU=$(vm-images/unstable-qemu.sh)
export PTNET_UNSTABLE_QEMU

# Runs a cargo test command; fails if it ran no test at all (a tier must never go empty).
run_tests() {
    local out
    out=$(mktemp)
    if ! "$@" 2>&1 | tee "$out"; then
        die "tests failed: $*"
    fi
    local n
    n=$(awk '/^test result: ok\./ { s += $4 } END { print s + 0 }' "$out")
    rm -f "$out"
    [ "$n" -gt 0 ] || die "no test ran in: $* (a whole tier would be hidden)"
    log "$n tests passed: $*"
}

log "building the daemon and tools"
cargo build --quiet -p ptnetd -p ptnetctl -p ptnet-host-tests -p ptnet-pktgen -p ptnet-netmap
# Every tier-2 host test: daemon and clients, huge pages, AF_PACKET, the NIC ports
# (tests/host/tests/nic.rs: network namespaces and veth pairs it creates and removes), and
# virtio-net ports driven by DPDK's virtio_user (tests/host/tests/virtio_net.rs).
run_tests cargo test --quiet -p ptnet-host-tests --features host-tests
# The ptnet device over vhost-user, driven by a frontend simulator (QEMU + guest driver).
run_tests cargo test --quiet -p ptnet-device --features sim-tests
if [ -d host-backend/pktgen ]; then
    cargo build --quiet -p ptnet-pktgen
    run_tests cargo test --quiet -p ptnet-pktgen --features host-tests
fi

log "the Debian package: build, verify the unit, install, run the demo, remove"
ci/test-package.sh

log "fuzz: every target, briefly"
ci/fuzz.sh "${PTNET_FUZZ_SECONDS:-15}"

log "benchmark smoke run (1 s per scenario, no peers)"
cargo build --release --quiet -p ptnet-bench
for s in pipe vale; do
    # (Not `tee /dev/stderr`: reopening a redirected stderr truncates the caller's log file.)
    line=$(target/release/ptnet-bench "$s" --duration 1)
    printf '%s\n' "$line" >&2
    grep -q '"rx_packets":[1-9]' <<<"$line" || die "ptnet-bench $s moved no packets"
done

log "NIC benchmark smoke run (bench/nic.sh, 1 s per row: namespaces, veth, Linux bridge)"
host-backend/bench/nic.sh --seconds 1 --repeat 1 --out target/bench-smoke >&2
rows=$(grep -c '"rx_packets": *[1-9]' target/bench-smoke/nic.jsonl || true)
[ "$rows" -eq 6 ] || die "bench/nic.sh: $rows of 6 rows moved packets"

log "per-core virtio-net benchmark smoke run (bench/virtio-net.sh: pinned, guest to guest, 1 s)"
host-backend/bench/virtio-net.sh --seconds 1 --repeat 1 --sizes 64 --directions gg \
    --only ptnetd-group-eventfd,dpdk-vhost --out target/bench-smoke >&2
rows=$(python3 -c 'import json, sys; print(sum(json.loads(l)["rx_mpps"] > 0 for l in open(sys.argv[1])))' \
    target/bench-smoke/virtio-net.jsonl)
[ "$rows" -eq 2 ] || die "bench/virtio-net.sh: $rows of 2 rows moved frames"
