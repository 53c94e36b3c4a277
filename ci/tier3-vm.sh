#!/usr/bin/env bash
# Tier 3: VM end to end. Boots TCG guests with the project's kernel and modules.
#
#   ci/tier3-vm.sh [CARGO TEST ARGS...]
#
# Standalone on a fresh bookworm machine: installs the prerequisites (ci/prereqs.sh base
# guest-toolchain qemu libvirt), builds the guest kernel (cached under $PTNET_CACHE/kernel, ~5-6 min
# cold) and the project's modules, then runs `cargo test -p ptnet-vmtest --features
# vm-tests` with the inputs in PTNET_* variables. Extra arguments go to cargo test (e.g. a
# test name filter). PTNET_QEMU and PTNET_ACCEL, if set, choose the QEMU binary and
# accelerator (default: the patched QEMU built by qemu-patches/build-qemu.sh, tcg). Without a
# filter it then walks the operator's path (ci/test-operator-path.sh: the Debian package, a
# libvirt VM, ptnetctl top, Prometheus) and runs the README's main job, ci/demo, and checks
# that frames moved.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source ci/lib/common.sh

need_root "ci/tier3-vm.sh"
start=$(date +%s)
step() { log "tier3: $* ($(( $(date +%s) - start )) s)"; }

ci/prereqs.sh base guest-toolchain qemu libvirt
ensure_cargo

step "guest kernel"
PTNET_KERNEL_DIR=$(vm-images/build-kernel.sh)
[ -f "$PTNET_KERNEL_DIR/arch/x86/boot/bzImage" ] || die "build-kernel.sh printed '$PTNET_KERNEL_DIR', which has no bzImage"

step "patched QEMU"
# The project's QEMU (Debian's 10.0 + qemu-patches/, cached) runs every guest unless
# PTNET_QEMU names another binary.
patched_qemu=$(qemu-patches/build-qemu.sh)
export PTNET_QEMU=${PTNET_QEMU:-$patched_qemu}

step "vhost-user shared memory regions (qemu-patches/test-shmem.sh)"
PTNET_QEMU=$patched_qemu qemu-patches/test-shmem.sh

step "the ptnet device in the patched QEMU, started without a guest driver (qtest)"
# Three starts, the second and third after a device reset (the second reset with the VM
# paused): a start after a reset once crashed the patched QEMU (qemu-patches patch 5).
PTNET_QEMU=$patched_qemu PTNET_QTEST_STARTS=3 host-backend/ptnet-device/qemu/qtest-start.sh

step "ptnet-spec with the guest toolchain"
# The guest driver shares ptnet-spec's layouts: the crate must build with the kernel's rustc
# (1.85, edition 2021, core only), not just the host's.
/usr/bin/rustc --edition 2021 --crate-type lib --crate-name ptnet_spec \
    -o "$(mktemp -d)/libptnet_spec.rlib" ptnet-spec/src/lib.rs \
    || die "ptnet-spec does not build with the guest toolchain ($(/usr/bin/rustc --version))"

step "guest modules"
PTNET_HELLO_KO=$(guest-driver-linux/build-module.sh guest-driver-linux/hello "$PTNET_KERNEL_DIR" \
    | grep '/ptnet_hello\.ko$') || die "building guest-driver-linux/hello produced no ptnet_hello.ko"

PTNET_PTNET_KO=$(guest-driver-linux/build-module.sh guest-driver-linux/ptnet "$PTNET_KERNEL_DIR" \
    | grep '/ptnet\.ko$') || die "building guest-driver-linux/ptnet produced no ptnet.ko"

step "guest tools (static ptnet-pktgen, nm-tx-rx)"
mapfile -t guest_tools < <(guest-driver-linux/tools/build-guest-tools.sh)
PTNET_GUEST_PKTGEN=${guest_tools[0]:-}
PTNET_GUEST_NM_TX_RX=${guest_tools[1]:-}
PTNET_GUEST_NM_HOSTILE=${guest_tools[2]:-}
[ -x "$PTNET_GUEST_PKTGEN" ] && [ -x "$PTNET_GUEST_NM_TX_RX" ] && [ -x "$PTNET_GUEST_NM_HOSTILE" ] \
    || die "build-guest-tools.sh did not print the three guest binaries (got: ${guest_tools[*]:-nothing})"

step "host side of the VM tests (ptnetd, ptnetctl, ptnet-pktgen, a lying ptnet device)"
cargo build --quiet -p ptnetd -p ptnetctl -p ptnet-pktgen
cargo build --quiet -p ptnet-device --example ptnet-hostile-device
PTNET_BIN_DIR="$PTNET_ROOT/target/debug"
PTNET_HOSTILE_DEVICE="$PTNET_ROOT/target/debug/examples/ptnet-hostile-device"

PTNET_INITRAMFS_SCRIPT="$PTNET_ROOT/vm-images/build-initramfs.sh"
# Debian's own QEMU (ci/prereqs.sh qemu), for the virtio-net guests that need no patch.
PTNET_STOCK_QEMU=$(command -v qemu-system-x86_64) || die "no stock qemu-system-x86_64"
export PTNET_STOCK_QEMU
# Debian unstable's QEMU (11.1 or newer), run in a minimal unstable chroot (cached), for the
# ptnet guests on the ivshmem transport.
step "Debian unstable's stock QEMU in its chroot (vm-images/unstable-qemu.sh)"
PTNET_UNSTABLE_QEMU=$(vm-images/unstable-qemu.sh)
export PTNET_UNSTABLE_QEMU
export PTNET_HOSTILE_DEVICE PTNET_KERNEL_DIR PTNET_HELLO_KO PTNET_PTNET_KO PTNET_BIN_DIR PTNET_INITRAMFS_SCRIPT \
    PTNET_GUEST_PKTGEN PTNET_GUEST_NM_TX_RX PTNET_GUEST_NM_HOSTILE
log "PTNET_KERNEL_DIR=$PTNET_KERNEL_DIR"
log "PTNET_HELLO_KO=$PTNET_HELLO_KO"
log "PTNET_PTNET_KO=$PTNET_PTNET_KO"
log "QEMU: $(${PTNET_QEMU:-qemu-system-x86_64} --version | head -n1), accel ${PTNET_ACCEL:-tcg}"

step "cargo test -p ptnet-vmtest --features vm-tests"
cargo test -p ptnet-vmtest --features vm-tests "$@"

if [ $# -eq 0 ]; then
    # The user guide's operator path: the Debian package installed and its service started,
    # a VM added with libvirt, watched in ptnetctl top and Prometheus, then removed.
    step "the operator's path (ci/test-operator-path.sh)"
    ci/test-operator-path.sh

    # The README's main job exactly as a user runs it (its own builds, the cached kernel and
    # QEMU): two guests on vale0, netmap pktgen between them; both must have moved frames.
    step "the README's main job: ci/demo --seconds 2"
    demo_out=$(mktemp)
    if ! ci/demo --seconds 2 > "$demo_out" 2>&1; then
        cat "$demo_out" >&2
        die "ci/demo failed"
    fi
    cat "$demo_out" >&2
    grep -qE '^tx .*: [1-9][0-9]* packets' "$demo_out" || die "ci/demo: guest A sent nothing"
    grep -qE '^rx .*: [1-9][0-9]* packets' "$demo_out" || die "ci/demo: guest B received nothing"
    # The fast path for a new user: Debian's own QEMU, ptnet devices on ivshmem-doorbell.
    step "the README's main job on stock QEMU: ci/demo --seconds 2 --transport ivshmem"
    if ! ci/demo --seconds 2 --transport ivshmem > "$demo_out" 2>&1; then
        cat "$demo_out" >&2
        die "ci/demo --transport ivshmem failed"
    fi
    cat "$demo_out" >&2
    grep -qE '^tx .*: [1-9][0-9]* packets' "$demo_out" || die "ci/demo (ivshmem): guest A sent nothing"
    grep -qE '^rx .*: [1-9][0-9]* packets' "$demo_out" || die "ci/demo (ivshmem): guest B received nothing"
    rm -f "$demo_out"
fi

log "tier3: wall time $(( $(date +%s) - start )) s"
