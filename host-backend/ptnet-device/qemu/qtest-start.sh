#!/usr/bin/env bash
# Starts a ptnet device in the patched QEMU, with no guest driver: QEMU runs under the qtest
# accelerator and qtest_driver.py performs the guest's accesses (PCI set-up, virtio init,
# event buffers, CSB addresses, DRIVER_OK, a frame each way, a reset), three times: every
# start after the first follows a device reset (the second reset with the VM paused), as a
# driver reload or a reboot does. The backend is ptnet-device-demo: vale0:vm served as the
# ptnet device, with a host client on vale0.
#
# Usage: host-backend/ptnet-device/qemu/qtest-start.sh   (root: builds QEMU with
# qemu-patches/build-qemu.sh, cached, unless PTNET_QEMU names a binary).
# Exits non-zero if a check fails; the logs are kept then. PTNET_QTEST_STARTS=N changes the
# number of starts (default 3). (PTNET_QTEST_RESTART=1 was the opt-in for the second start
# while it crashed the patched QEMU; the restarts now always run.)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../ci/lib/common.sh
source "$here/../../../ci/lib/common.sh"
cd "$PTNET_ROOT"
starts=${PTNET_QTEST_STARTS:-3}
[[ $starts =~ ^[1-9][0-9]*$ ]] || die "PTNET_QTEST_STARTS must be a positive number, not '$starts'"
export PTNET_QTEST_STARTS=$starts

# build-qemu.sh takes /tmp/ptnet-heavy.lock itself for the compile: holding it here too
# would deadlock a cold build.
qemu=${PTNET_QEMU:-$(qemu-patches/build-qemu.sh)}
[ -x "$qemu" ] || die "no QEMU binary at $qemu"
log "building ptnet-device-demo"
cargo build --quiet -p ptnet-device --example ptnet-device-demo
demo=${CARGO_TARGET_DIR:-$PTNET_ROOT/target}/debug/examples/ptnet-device-demo

dir=$(mktemp -d /tmp/ptnet-qtest.XXXXXX)
demo_pid="" qemu_pid="" driver_pid="" ok=0
stop_pid() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    stop_pid "$driver_pid"
    stop_pid "$qemu_pid"
    stop_pid "$demo_pid"
    if [ "$ok" -eq 1 ]; then rm -rf "$dir"; else log "logs kept in $dir"; fi
}
trap cleanup EXIT
wait_for() {
    for _ in $(seq 200); do
        [ -e "$1" ] && return 0
        sleep 0.05
    done
    die "$1 did not appear"
}

"$demo" "$dir/vm.sock" 300 >"$dir/demo.log" 2>&1 &
demo_pid=$!
wait_for "$dir/vm.sock"
for _ in $(seq 100); do grep -q '^port vale0:vm' "$dir/demo.log" && break; sleep 0.05; done
geometry=$(grep '^port vale0:vm' "$dir/demo.log")
region_size=$(sed -E 's/.*region_size=([0-9]+).*/\1/' <<<"$geometry")
nifp_offset=$(sed -E 's/.*nifp_offset=([0-9]+).*/\1/' <<<"$geometry")
log "$geometry"

python3 "$here/qtest_driver.py" "$dir/qtest.sock" "$dir/mon.sock" "$region_size" "$nifp_offset" &
driver_pid=$!
wait_for "$dir/qtest.sock"
# shellcheck disable=SC2054 # the commas belong to QEMU options
"$qemu" -M q35 -accel qtest -qtest "unix:$dir/qtest.sock" -display none -nodefaults -m 256M \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -chardev "socket,id=ptnet0,path=$dir/vm.sock" \
    -device vhost-user-test-device-pci,id=ptnet0,chardev=ptnet0,virtio-id=63,num_vqs=2,config_size=64,addr=04.0 \
    -monitor "unix:$dir/mon.sock,server=on,wait=off" >"$dir/qemu.log" 2>&1 &
qemu_pid=$!
if ! wait "$driver_pid"; then
    driver_pid=""
    sed 's/^/qemu: /' "$dir/qemu.log" >&2
    sed 's/^/demo: /' "$dir/demo.log" >&2
    die "the qtest driver failed"
fi
driver_pid=""
sleep 0.3
if kill -0 "$qemu_pid" 2>/dev/null; then
    echo "PASS  QEMU is still running after $starts starts"
else
    sed 's/^/qemu: /' "$dir/qemu.log" >&2
    die "QEMU exited after the qtest driver finished"
fi
started=$(grep -ac 'ptnet device started' "$dir/demo.log" || true)
mapped=$(grep -ac 'region 0 mapped' "$dir/demo.log" || true)
if [ "$started" -eq "$starts" ] && [ "$mapped" -eq "$starts" ]; then
    echo "PASS  the daemon started the device and mapped region 0 $starts times"
else
    sed 's/^/demo: /' "$dir/demo.log" >&2
    die "the daemon started the device $started times and mapped region 0 $mapped times, not $starts"
fi
if grep -aq 'host rx .*PTNET-GUEST-QTEST' "$dir/demo.log"; then
    echo "PASS  the host client received the guest's frame across vale0"
else
    sed 's/^/demo: /' "$dir/demo.log" >&2
    die "the host client did not receive the guest's frame"
fi
stop_pid "$qemu_pid"
qemu_pid=""
for _ in $(seq 100); do grep -q 'port reclaimed' "$dir/demo.log" && break; sleep 0.05; done
if grep -q 'frontend disconnected; port reclaimed' "$dir/demo.log"; then
    echo "PASS  QEMU's exit reclaimed the port"
else
    sed 's/^/demo: /' "$dir/demo.log" >&2
    die "the port was not reclaimed after QEMU exited"
fi
grep -aE 'ptnet_device|ptnet_vhost_user|device Stats' "$dir/demo.log" | sed -E 's/^\[[^]]*\] ?/  /' | tail -12
ok=1
