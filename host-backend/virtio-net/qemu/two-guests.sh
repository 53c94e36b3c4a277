#!/usr/bin/env bash
# Two Linux guests with the stock virtio_net driver on virtio-net ports of ptnetd's vale0
# (QEMU `-netdev vhost-user` + `virtio-net-pci`, TCG): guest 1 pings guest 2, then fetches a
# 4 MiB random file from guest 2's httpd over TCP and both print its SHA-256, which must
# match. Then guest 1 pings for 20 s while ptnetd is killed and started again: QEMU
# reconnects (`reconnect-ms`), the daemon serves the same ports from its config file, and
# the pings must resume without a guest reboot. A manual check (tier 3 belongs to the VM
# test suite):
#
#   sudo host-backend/virtio-net/qemu/two-guests.sh [KERNEL_BZIMAGE]
#
# The kernel needs virtio-pci and virtio_net built in (vm-images/build-kernel.sh's does; the
# default is the newest one in $PTNET_CACHE/kernel). Needs busybox-static and QEMU.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../../.."
# shellcheck source=../../../ci/lib/common.sh
source ci/lib/common.sh

kernel=${1:-$(ls -t "${PTNET_CACHE:-/var/cache/ptnet}"/kernel/*/arch/x86/boot/bzImage 2>/dev/null | head -1)}
[ -f "$kernel" ] || die "no guest kernel (vm-images/build-kernel.sh, or give a bzImage)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (ci/prereqs.sh qemu)"
[ -x /bin/busybox ] || die "busybox-static missing (ci/prereqs.sh base)"

cargo build --release --quiet -p ptnetd -p ptnetctl
bin=$PWD/target/release
tmp=$(mktemp -d /tmp/ptnet-vnet-guests.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${keep:-0}" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

# The initramfs: busybox and an init that plays guest 1 (client) or 2 (server).
mkdir -p "$tmp/root/bin" "$tmp/root/proc" "$tmp/root/sys" "$tmp/root/dev" "$tmp/root/tmp" "$tmp/root/www"
cp /bin/busybox "$tmp/root/bin/busybox"
cat > "$tmp/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
me=$(sed -n 's/.*ptnet_me=\([0-9]*\).*/\1/p' /proc/cmdline)
ip link set lo up
ip link set eth0 up
ip addr add 10.9.0.$me/24 dev eth0
echo "GUEST$me: eth0 up: $(cat /sys/class/net/eth0/address)"
if [ "$me" = 2 ]; then
    dd if=/dev/urandom of=/www/blob bs=1024 count=4096 2>/dev/null
    echo "GUEST2-SHA $(sha256sum /www/blob | cut -d' ' -f1)"
    httpd -p 80 -h /www
    echo "GUEST2-READY"
    sleep 600
else
    ok=0
    for i in $(seq 60); do
        if ping -c 1 -W 1 10.9.0.2 >/dev/null 2>&1; then ok=1; break; fi
    done
    [ $ok = 1 ] || { echo "GUEST1-RESULT ping-failed"; poweroff -f; }
    ping -c 5 -i 0.2 10.9.0.2 | tail -2
    for i in $(seq 30); do
        t0=$(cut -d' ' -f1 /proc/uptime | tr -d .)
        if wget -q -O /tmp/blob http://10.9.0.2/blob; then break; fi
        sleep 1
    done
    t1=$(cut -d' ' -f1 /proc/uptime | tr -d .)
    # 4 MiB in (t1 - t0) hundredths of a second, in Mbit/s.
    echo "GUEST1-TCP $(( 4 * 8 * 1048576 / 10000 / ((t1 - t0) > 0 ? (t1 - t0) : 1) )) Mbit/s over $((t1 - t0))0 ms"
    echo "GUEST1-SHA $(sha256sum /tmp/blob | cut -d' ' -f1)"
    # The host restarts ptnetd now; the last pings must get through again.
    ping -c 100 -i 0.2 -W 1 10.9.0.2 > /tmp/ping2
    echo "GUEST1-AFTER-RESTART $(tail -2 /tmp/ping2 | head -1)"
    echo "GUEST1-LAST $(grep -c 'seq=9[0-9] ' /tmp/ping2)"
    echo "GUEST1-RESULT done"
fi
poweroff -f
INIT
chmod +x "$tmp/root/init"
(cd "$tmp/root" && find . | cpio -o -H newc --quiet | gzip -1 > "$tmp/init.cpio.gz")

# The daemon serves both ports from its configuration, so a restarted daemon serves them
# again by itself.
cat > "$tmp/ptnetd.toml" <<TOML
[daemon]
socket = "$tmp/ctl.sock"
vm_socket_dir = "$tmp"
[[switch]]
name = "vale0"
[[vm]]
port = "vale0:g1"
socket = "g1.sock"
device = "virtio-net"
mac = "02:00:00:00:09:01"
[[vm]]
port = "vale0:g2"
socket = "g2.sock"
device = "virtio-net"
mac = "02:00:00:00:09:02"
TOML
start_daemon() {
    RUST_LOG=info "$bin/ptnetd" --config "$tmp/ptnetd.toml" >> "$tmp/ptnetd.log" 2>&1 &
    daemon=$!
    pids+=("$daemon")
    for _ in $(seq 50); do [ -S "$tmp/ctl.sock" ] && break; sleep 0.1; done
}
start_daemon
guest() {
    local me=$1 args
    mapfile -t args < <("$bin/ptnetctl" --socket "$tmp/ctl.sock" --json qemu-args "vale0:g$me" \
        | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["args"]))')
    qemu-system-x86_64 -M q35 -accel tcg -cpu qemu64 -m 256 -nodefaults -display none \
        -no-reboot -serial "file:$tmp/g$me.log" -kernel "$kernel" -initrd "$tmp/init.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet ptnet_me=$me" \
        -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
        "${args[@]}" > "$tmp/qemu$me.log" 2>&1 &
    pids+=($!)
}
log "guest 2 (server), then guest 1 (client), TCG"
guest 2
guest 1
g1=${pids[-1]}
deadline=$((SECONDS + 300))
while ! grep -q GUEST1-SHA "$tmp/g1.log" 2>/dev/null && kill -0 "$g1" 2>/dev/null \
    && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
sleep 3
log "killing ptnetd (pid $daemon) under guest 1's pings, starting it again"
kill -9 "$daemon"
wait "$daemon" 2>/dev/null || true
rm -f "$tmp/ctl.sock"
sleep 1
start_daemon
while kill -0 "$g1" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 1; done
"$bin/ptnetctl" --socket "$tmp/ctl.sock" list >&2 || true
sha1=$(sed -n 's/.*GUEST1-SHA \([0-9a-f]*\).*/\1/p' "$tmp/g1.log")
sha2=$(sed -n 's/.*GUEST2-SHA \([0-9a-f]*\).*/\1/p' "$tmp/g2.log")
grep -E "GUEST|packets transmitted|round-trip" "$tmp/g1.log" "$tmp/g2.log" >&2 || true
last=$(sed -n 's/.*GUEST1-LAST \([0-9]*\).*/\1/p' "$tmp/g1.log")
if [ -z "$sha1" ] || [ "$sha1" != "$sha2" ]; then
    keep=1
    die "FAIL: guest 1 sha '${sha1}', guest 2 sha '${sha2}' (logs in $tmp)"
fi
log "PASS: ping and a 4 MiB TCP transfer between two guests across vale0 (sha256 $sha1)"
if [ "${last:-0}" -lt 5 ]; then
    keep=1
    die "FAIL: after the daemon restart only ${last:-0} of the last 10 pings came back (logs in $tmp)"
fi
log "PASS: pings resumed after ptnetd was killed and restarted ($last of the last 10 answered)"
