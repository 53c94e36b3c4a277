#!/usr/bin/env bash
# Proves the patched QEMU's vhost-user shared memory support without a guest driver.
#
# A throwaway vhost-user backend (probe/, Rust, vhost 0.18 + vhost-user-backend 0.24) plays a
# ptnet device (virtio id 63, 64-byte config, one 8 MiB shared memory region, a 4 MiB memfd
# whose u64 word i holds 0x5054_4e45_0000_0000 + i). QEMU boots SeaBIOS only under TCG; the
# test talks to QEMU's HMP monitor and to the probe's control socket and checks:
#
#   1. the device is on the PCI bus as 1af4:107f with a 64-bit prefetchable BAR 4 (8 MiB);
#   2. GET_CONFIG: the config space read through BAR 2 is the probe's;
#   3. SHMEM_MAP (fd offset 1 MiB -> region offset 2 MiB, 1 MiB): `info mtree` shows the RAM
#      subregion and `xp` at BAR4 + 2 MiB reads pattern word 0x20000;
#   4. bogus SHMEM_MAP/UNMAP requests are refused and QEMU keeps running, the mapping intact;
#   5. a config change notification while no driver runs does not crash QEMU;
#   6. SHMEM_UNMAP removes the mapping; a system reset and a backend disconnect drop mappings;
#      with no backend the config space reads as zeroes; a restarted backend is taken back
#      (`reconnect-ms`, patch 9) and can map again; one that wants another region size is
#      refused, QEMU keeps running and takes the next good one;
#   7. hostile GET_SHMEM_CONFIG answers make realize fail cleanly (exit 1, no abort), and one
#      region fits behind a PCIe root port.
#
# Usage: qemu-patches/test-shmem.sh   (root; builds QEMU with build-qemu.sh unless PTNET_QEMU
# names a binary). Prints the key monitor output; exits non-zero if any check fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../ci/lib/common.sh
source "$here/../ci/lib/common.sh"

qemu=${PTNET_QEMU:-$("$here/build-qemu.sh")}
[ -x "$qemu" ] || die "no QEMU binary at $qemu"
command -v cargo >/dev/null || die "cargo is needed to build the probe backend"
log "building the probe backend"
cargo build --quiet --release --manifest-path "$here/probe/Cargo.toml" >&2
probe=${CARGO_TARGET_DIR:-$here/probe/target}/release/ptnet-shmem-probe

dir=$(mktemp -d /tmp/ptnet-test-shmem.XXXXXX)
probe_pid=""
qemu_pid=""
failures=0

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$qemu_pid"
    stop_pid "$probe_pid"
    if [ "$failures" -eq 0 ]; then rm -rf "$dir"; else log "logs kept in $dir"; fi
}
trap cleanup EXIT

# One helper for both sockets: "hmp SOCKET COMMAND" prints the monitor's answer,
# "ctl SOCKET COMMAND" prints the probe's reply line.
cat > "$dir/talk.py" <<'EOF'
import socket, sys

kind, path, command = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(path)

def read_until(end):
    buf = b""
    while not buf.endswith(end):
        data = s.recv(65536)
        if not data:
            break
        buf += data
    return buf.decode(errors="replace")

if kind == "hmp":
    read_until(b"(qemu) ")
    s.sendall(command.encode() + b"\n")
    lines = read_until(b"(qemu) ").split("\r\n")[1:-1]
    print("\n".join(lines).rstrip())
else:
    s.sendall(command.encode() + b"\n")
    print(read_until(b"\n").strip())
EOF

hmp() { python3 "$dir/talk.py" hmp "$dir/mon.sock" "$1"; }
ctl() { python3 "$dir/talk.py" ctl "$dir/ctl.sock" "$1"; }

pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
# check DESCRIPTION TEXT REGEX: passes if TEXT matches the extended regex.
check() {
    if grep -Eq -- "$3" <<<"$2"; then pass "$1"; else fail "$1"; printf '      got: %s\n' "$2"; fi
}
check_not() {
    if grep -Eq -- "$3" <<<"$2"; then fail "$1"; printf '      got: %s\n' "$2"; else pass "$1"; fi
}
show() { printf '\n(qemu) %s\n%s\n\n' "$1" "$2"; }

wait_for_socket() {
    for _ in $(seq 100); do
        [ -S "$1" ] && return 0
        sleep 0.1
    done
    die "$1 did not appear"
}

# start_probe [ENV...]: a fresh probe backend; one still running from an earlier step (a
# backend outlives its QEMU: it waits for the next frontend) is stopped first, so none is
# left behind when the script ends.
start_probe() {
    stop_pid "$probe_pid"
    probe_pid=""
    rm -f "$dir/vu.sock" "$dir/ctl.sock"
    env "$@" "$probe" "$dir/vu.sock" "$dir/ctl.sock" 2>>"$dir/probe.log" &
    probe_pid=$!
    wait_for_socket "$dir/vu.sock"
}

# shellcheck disable=SC2054 # the commas belong to QEMU options
qemu_args=(-M q35 -accel tcg -cpu qemu64 -m 256M -nographic -nodefaults -nic none -serial none
           -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem
           -chardev "socket,id=vu0,path=$dir/vu.sock,reconnect-ms=200")
device=vhost-user-test-device-pci,id=ptnet0,chardev=vu0,virtio-id=63,num_vqs=2,config_size=64

# start_qemu QEMU-ARGS...: runs QEMU with the common arguments and a monitor socket.
start_qemu() {
    rm -f "$dir/mon.sock"
    "$qemu" "${qemu_args[@]}" "$@" \
        -monitor "unix:$dir/mon.sock,server=on,wait=off" >>"$dir/qemu.log" 2>&1 &
    qemu_pid=$!
    wait_for_socket "$dir/mon.sock"
}

qemu_alive() { kill -0 "$qemu_pid" 2>/dev/null && hmp "info status" | grep -q running; }

# --- 1. the device on the bus ---------------------------------------------------------------
log "starting the probe backend and QEMU (TCG, SeaBIOS only)"
start_probe
start_qemu -device "$device"
# SeaBIOS assigns the BARs a moment after reset.
bar4=""
for _ in $(seq 100); do
    pci=$(hmp "info pci")
    bar4=$(awk '/PCI device 1af4:107f/ { dev = 1 } dev && /BAR4:/ { print; exit }' <<<"$pci")
    case "$bar4" in *"at 0x"*) [[ "$bar4" == *0xffffffffffffffff* ]] || break ;; esac
    sleep 0.2
done
show "info pci" "$(awk '/PCI device 1af4:107f/ { dev = 1 } dev { print } dev && /id "ptnet0"/ { exit }' <<<"$pci")"
check "ptnet device on the bus as virtio 1af4:107f (id 63)" "$pci" "PCI device 1af4:107f"
check "BAR 4 is a 64-bit prefetchable 8 MiB BAR" "$bar4" \
    "BAR4: 64 bit prefetchable memory at 0x[0-9a-f]+ \[0x[0-9a-f]+\]"
base=$(sed -n 's/.*at \(0x[0-9a-f]*\) \[\(0x[0-9a-f]*\)\].*/\1/p' <<<"$bar4")
end=$(sed -n 's/.*at \(0x[0-9a-f]*\) \[\(0x[0-9a-f]*\)\].*/\2/p' <<<"$bar4")
[ -n "$base" ] || die "BAR 4 was not assigned: $bar4"
check "BAR 4 spans 8 MiB" "$((end - base + 1))" "^8388608$"
bar2=$(awk '/PCI device 1af4:107f/ { dev = 1 } dev && /BAR2:/ { print; exit }' <<<"$pci")
bar2_base=$(sed -n 's/.*at \(0x[0-9a-f]*\) .*/\1/p' <<<"$bar2")
addr() { printf '0x%x' $(($1 + $2)); }

mtree=$(hmp "info mtree")
check "the empty region is in the memory tree" "$mtree" "i/o\): virtio-shmem-0$"
status=$(hmp "info virtio-status /machine/peripheral/ptnet0/virtio-backend")
check "info virtio-status works on an id QEMU has no table for" "$status" "device_id: +63"

# --- 2. GET_CONFIG ----------------------------------------------------------------------------
config=$(hmp "xp /2gx $(addr "$bar2_base" 0x2000)")
show "xp /2gx BAR2+0x2000   # device config: MAC 52:54:00:12:34:56, 1+1 rings" "$config"
check "config space comes from the backend (GET_CONFIG)" "$config" \
    "0x0000563412005452 0x0000000100000001"

# --- 3. SHMEM_MAP -----------------------------------------------------------------------------
check "SHMEM_MAP fd 1 MiB -> region 2 MiB, 1 MiB, RW is acked" \
    "$(ctl "map 0 0x100000 0x200000 0x100000 1")" "^ok map acked 0"
mtree=$(hmp "info mtree")
show "info mtree   # the shared memory BAR" "$(grep -A2 'vhost-user-test-device-pci-shmem' <<<"$mtree" | head -3)"
check "info mtree shows the RAM mapping at BAR4 + 2 MiB" "$mtree" \
    "$(printf '%016x' $((base + 0x200000)))-$(printf '%016x' $((base + 0x2fffff))) \(prio 0, ram\): virtio-shmem-0-map-0x200000"
words=$(hmp "xp /4gx $(addr "$base" 0x200000)")
show "xp /4gx BAR4+0x200000" "$words"
check "xp at BAR4 + 2 MiB reads pattern word 0x20000" "$words" \
    ": 0x50544e4500020000 0x50544e4500020001"
last=$(hmp "xp /1gx $(addr "$base" 0x2ffff8)")
check "xp at the last word of the mapping reads word 0x3ffff" "$last" ": 0x50544e450003ffff"

# --- 4. hostile requests ----------------------------------------------------------------------
bogus=(
    "map 0 0 0x600000 0x400000 1"               # beyond the end of the region
    "map 0 0x300000 0x400000 0x200000 1"        # beyond the end of the file
    "map 0 0 0xfffffffffffff000 0x2000 1"       # offset + length wraps
    "map 0 0 0x401000 0x1001 1"                 # not page aligned
    "map 0 0x800 0x400000 0x1000 1"             # file offset not page aligned
    "map 0 0 0x500000 0 1"                      # empty
    "map 7 0 0 0x1000 1"                        # no such region
    "map 0 0 0x280000 0x100000 1"               # overlaps the mapping
    "map 0 0 0x500000 0x1000 0x20"              # unknown flags
    "unmap 0 0x200000 0x1000"                   # not a whole mapping
    "unmap 3 0 0x1000"                          # no such region
)
for request in "${bogus[@]}"; do
    check "refused: $request" "$(ctl "$request")" "^err "
done
if qemu_alive; then pass "QEMU still runs after ${#bogus[@]} bogus requests"; else fail "QEMU died"; fi
check "the mapping survived the bogus requests" "$(hmp "xp /1gx $(addr "$base" 0x200000)")" \
    ": 0x50544e4500020000"
printf '\nQEMU stderr for the refused requests:\n%s\n\n' "$(grep 'SHMEM' "$dir/qemu.log" | sed 's/^/    /')"

# --- 5. config change while no driver runs ----------------------------------------------------
check "CONFIG_CHANGE_MSG is acked while the device is stopped" \
    "$(ctl config-change)" "^ok config-change acked 0"
if qemu_alive; then pass "QEMU still runs after the config change"; else fail "QEMU died"; fi

# --- 6. unmapping: SHMEM_UNMAP, reset, disconnect --------------------------------------------
check "SHMEM_UNMAP of the mapping is acked" "$(ctl "unmap 0 0x200000 0x100000")" "^ok unmap acked 0"
mtree=$(hmp "info mtree")
check_not "the mapping is gone from info mtree" "$mtree" "virtio-shmem-0-map"
gone=$(hmp "xp /1gx $(addr "$base" 0x200000)")
show "xp /1gx BAR4+0x200000   # after SHMEM_UNMAP" "$gone"
check_not "xp no longer reads the pattern" "$gone" "0x50544e45"
check "a second SHMEM_UNMAP is refused" "$(ctl "unmap 0 0x200000 0x100000")" "^err "

check "SHMEM_MAP of the whole memfd at offset 0 is acked" "$(ctl "map 0 0 0 0x400000 1")" "^ok "
check "xp at BAR4 reads word 0" "$(hmp "xp /1gx $base")" ": 0x50544e4500000000"
hmp system_reset >/dev/null
sleep 1
check_not "system_reset dropped the mapping" "$(hmp "info mtree")" "virtio-shmem-0-map"
check "the backend can map again after the reset" "$(ctl "map 0 0 0 0x400000 1")" "^ok "
check "xp reads the pattern again" "$(hmp "xp /1gx $(addr "$base" 0x3ffff8)")" ": 0x50544e450007ffff"
stop_pid "$probe_pid"
probe_pid=""
sleep 1
if qemu_alive; then pass "QEMU survives the backend's disconnect"; else fail "QEMU died with its backend"; fi
check_not "the disconnect dropped the mapping" "$(hmp "info mtree")" "virtio-shmem-0-map"
config_now() { hmp "xp /2gx $(addr "$bar2_base" 0x2000)"; }
check "with no backend the config space reads as zeroes" "$(config_now)" \
    ": 0x0000000000000000 0x0000000000000000"
# wait_config REGEX: polls the config space (QEMU reconnects every 200 ms) for up to 5 s.
wait_config() {
    local c=""
    for _ in $(seq 50); do
        c=$(config_now)
        grep -Eq -- "$1" <<<"$c" && break
        sleep 0.1
    done
    printf '%s' "$c"
}
start_probe
check "a restarted backend is taken back: config from it again" \
    "$(wait_config 0x0000563412005452)" "0x0000563412005452 0x0000000100000001"
check "the restarted backend can map" "$(ctl "map 0 0 0 0x400000 1")" "^ok "
check "xp reads its memory" "$(hmp "xp /1gx $(addr "$base" 0x3ffff8)")" ": 0x50544e450007ffff"
stop_pid "$probe_pid"
probe_pid=""
start_probe PROBE_SHMEM_SIZES=0x1000000
sleep 2
if qemu_alive; then pass "QEMU survives a restarted backend that wants a 16 MiB region"; else fail "QEMU died"; fi
check "it is refused" "$(grep -c 'was created with' "$dir/qemu.log")" "^[1-9]"
check "the config space still reads as zeroes" "$(config_now)" \
    ": 0x0000000000000000 0x0000000000000000"
stop_pid "$probe_pid"
probe_pid=""
start_probe
check "a good backend after the refused one is taken" \
    "$(wait_config 0x0000563412005452)" "0x0000563412005452 0x0000000100000001"
hmp quit >/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""

# --- 7. hostile GET_SHMEM_CONFIG answers -----------------------------------------------------
# realize_with "DESCRIPTION" REGEX PROBE-ENV... -- QEMU-ARGS...: QEMU must exit 1 with REGEX.
realize_with() {
    local what=$1 expect=$2 env=() rc=0 output
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    start_probe "${env[@]}"
    output=$(timeout 30 "$qemu" "${qemu_args[@]}" "$@" -S -monitor none -display none 2>&1) || rc=$?
    stop_pid "$probe_pid"
    probe_pid=""
    if [ "$rc" -eq 1 ] && grep -Eq -- "$expect" <<<"$output"; then
        pass "$what: realize fails cleanly"
    else
        fail "$what: exit $rc"
        printf '      got: %s\n' "$output"
    fi
}
realize_with "300 regions" "bad shared memory config" PROBE_SHMEM_NREGIONS=300 -- -device "$device"
realize_with "a region of 0x1234 bytes" "not a multiple of the page size" \
    PROBE_SHMEM_SIZES=0x1234 -- -device "$device"
realize_with "a region of 4 PiB" "larger than" PROBE_SHMEM_SIZES=0x10000000000000 -- -device "$device"
realize_with "8 regions on a conventional slot" "no room in PCI config space" \
    PROBE_SHMEM_SIZES=4096,4096,4096,4096,4096,4096,4096,4096 -- -device "$device"
realize_with "2 regions behind a PCIe root port" "no room in PCI config space" \
    PROBE_SHMEM_SIZES=4096,4096 -- -device pcie-root-port,id=rp0,chassis=1 -device "$device,bus=rp0"

log "one region behind a PCIe root port"
start_probe
start_qemu -device pcie-root-port,id=rp0,chassis=1 -device "$device,bus=rp0"
check "behind a PCIe root port the device realizes with its BAR 4" \
    "$(hmp "info pci")" "BAR4: 64 bit prefetchable memory"
hmp quit >/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""

echo
if [ "$failures" -eq 0 ]; then
    echo "test-shmem: all checks passed"
else
    echo "test-shmem: $failures check(s) failed"
    exit 1
fi
