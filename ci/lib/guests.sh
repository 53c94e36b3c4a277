# shellcheck shell=bash
# Two-guest runs shared by ci/demo and host-backend/bench/guests.sh: build (or take from
# $PTNET_CACHE) what a guest needs, start ptnetd, serve ports to guests, boot a guest with a
# script. Source ci/lib/common.sh first. Root.

# guests_prepare: prerequisites, the guest kernel, the patched QEMU, the ptnet driver, the
# static guest tools and the release host binaries. Sets GUEST_KDIR, GUEST_QEMU, GUEST_KO,
# GUEST_PKTGEN, HOST_BIN. A GUEST_QEMU set beforehand is used as it is; with
# GUEST_TRANSPORT=ivshmem (ptnet devices on QEMU's stock ivshmem-doorbell) Debian's own
# qemu-system-x86_64 is, and the patched build is skipped.
guests_prepare() {
    need_root "booting guests"
    "$PTNET_ROOT/ci/prereqs.sh" base guest-toolchain qemu
    command -v cargo >/dev/null || PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
    log "guest kernel (cached after the first build)"
    GUEST_KDIR=$("$PTNET_ROOT/vm-images/build-kernel.sh")
    if [ -n "${GUEST_QEMU:-}" ]; then
        [ -x "$GUEST_QEMU" ] || die "QEMU $GUEST_QEMU is not an executable"
        log "QEMU: $GUEST_QEMU (given)"
    elif [ "${GUEST_TRANSPORT:-vhost-user}" = ivshmem ]; then
        GUEST_QEMU=$(command -v qemu-system-x86_64) || die "no qemu-system-x86_64 (ci/prereqs.sh qemu)"
        log "QEMU: Debian's stock $GUEST_QEMU (ivshmem transport: no patched build needed)"
    else
        log "patched QEMU (cached after the first build)"
        GUEST_QEMU=$("$PTNET_ROOT/qemu-patches/build-qemu.sh")
    fi
    log "the ptnet guest driver"
    GUEST_KO=$("$PTNET_ROOT/guest-driver-linux/build-module.sh" "$PTNET_ROOT/guest-driver-linux/ptnet" \
        "$GUEST_KDIR" | grep '/ptnet\.ko$') || die "building guest-driver-linux/ptnet produced no ptnet.ko"
    log "guest tools (static ptnet-pktgen)"
    local tools
    mapfile -t tools < <("$PTNET_ROOT/guest-driver-linux/tools/build-guest-tools.sh")
    GUEST_PKTGEN=${tools[0]:-}
    [ -x "$GUEST_PKTGEN" ] || die "build-guest-tools.sh printed no ptnet-pktgen"
    log "ptnetd, ptnetctl, ptnet-vm (release)"
    (cd "$PTNET_ROOT" && cargo build --release --quiet -p ptnetd -p ptnetctl -p ptnet-vmtest)
    HOST_BIN=$PTNET_ROOT/target/release
}

# guests_daemon DIR: starts ptnetd (embedded default: vale0) on DIR/ptnetd.sock, its log in
# DIR/ptnetd.log, VMs' sockets (serve-vm --socket NAME) in DIR; appends its PID to the
# caller's `pids` array. Sets GUEST_SOCK.
guests_daemon() {
    GUEST_SOCK=$1/ptnetd.sock
    "$HOST_BIN/ptnetd" --socket "$GUEST_SOCK" --vm-socket-dir "$1" 2> "$1/ptnetd.log" &
    pids+=($!)
    local _
    for _ in $(seq 100); do [ -S "$GUEST_SOCK" ] && return 0; sleep 0.05; done
    cat "$1/ptnetd.log" >&2
    die "ptnetd did not start"
}

# gctl ARGS...: ptnetctl against the daemon of guests_daemon.
gctl() { "$HOST_BIN/ptnetctl" --socket "$GUEST_SOCK" "$@"; }

# guest_boot PORT SCRIPT ACCEL TIMEOUT: boots a guest whose device is the one PORT is served
# as (ptnetctl serve-vm or serve-virtio-net first), with the driver and ptnet-pktgen in its
# image, running SCRIPT; prints the console on stdout; exits with the script's status.
guest_boot() {
    local args qargs=() a
    mapfile -t args < <(gctl --json qemu-args "$1" \
        | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["args"]))')
    [ ${#args[@]} -gt 0 ] || die "ptnetctl qemu-args $1 printed nothing"
    for a in "${args[@]}"; do qargs+=("--qemu-arg=$a"); done
    "$HOST_BIN/ptnet-vm" --kernel "$GUEST_KDIR" --qemu "$GUEST_QEMU" --accel "$3" --cpus 1 \
        --memory 256 --shared-memory --module "$GUEST_KO" --bin "$GUEST_PKTGEN" --script "$2" \
        "${qargs[@]}" --timeout "$4"
}

# wait_console FILE TEXT SECONDS: waits until FILE contains TEXT.
wait_console() {
    local _
    for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    grep -q "$2" "$1" 2>/dev/null
}
