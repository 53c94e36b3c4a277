#!/usr/bin/env bash
# Tier 3: the operator's path of docs/user-guide.md ("The operator's path"), walked end to end
# with the installed package and Debian's own libvirt, QEMU and Prometheus:
#   1. install the Debian package, turn metrics on in /etc/ptnetd/ptnetd.toml, start the
#      service (its init script: this machine has no systemd as PID 1);
#   2. serve a virtio-net port and add a VM with libvirt: the domain from
#      `ptnetctl libvirt-xml --domain`, `virsh define --validate`, `virsh start` (libvirtd
#      started here when none runs); the guest sends frames to a host client that a member of
#      the ptnet group runs on vale0;
#   3. watch it: `ptnetctl top` shows the VM's port moving frames, and a Prometheus server
#      scraping the daemon answers a rate query for it;
#   4. `virsh destroy`: the port is reclaimed; `dpkg -r`: nothing of ptnet runs.
#
#   ci/test-operator-path.sh        (root; ci/tier3-vm.sh runs it)
#
# Uses PTNET_KERNEL_DIR and PTNET_GUEST_PKTGEN when set (tier 3 exports them), else builds
# them (cached). Leaves the machine as it found it, but for the packages it installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source ci/lib/common.sh

need_root "ci/test-operator-path.sh"
ci/prereqs.sh base qemu cargo-deb libvirt prometheus
ensure_cargo

accel=${PTNET_ACCEL:-tcg}
work=$(mktemp -d /tmp/ptnet-operator.XXXXXX)
chmod 755 "$work"
domain=ptnet-operator-web
member=ptnet-optest
metrics=127.0.0.1:9477
pids=()
walked=0
kernel_dir=${PTNET_KERNEL_DIR:-$(vm-images/build-kernel.sh)}
pktgen=${PTNET_GUEST_PKTGEN:-$(guest-driver-linux/tools/build-guest-tools.sh | head -n 1)}

cleanup() {
    local p
    virsh -c qemu:///system destroy "$domain" > /dev/null 2>&1 || true
    virsh -c qemu:///system undefine "$domain" > /dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
    wait 2> /dev/null || true
    if dpkg-query -W ptnet > /dev/null 2>&1; then
        [ -x /etc/init.d/ptnetd ] && /etc/init.d/ptnetd stop > /dev/null 2>&1 || true
        dpkg --purge ptnet > /dev/null 2>&1 || true
    fi
    userdel "$member" 2> /dev/null || true
    if [ "$walked" = 1 ]; then rm -rf "$work"; else log "operator path: logs in $work"; fi
}
trap cleanup EXIT

[ -z "$(live_pids /usr/sbin/ptnetd)" ] || die "an installed ptnetd already runs: not ours to replace"
if (exec 3<> "/dev/tcp/${metrics%:*}/${metrics#*:}") 2> /dev/null; then
    die "$metrics is taken: the packaged configuration's metrics address must be free"
fi

step() { log "operator path: $*"; }

step "1. install the package, metrics on, start the service"
deb=$(packaging/build-deb.sh)
dpkg -i "$deb" > "$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log"; die "dpkg -i failed"; }
sed -i "s|^# metrics = \"127.0.0.1:9477\"|metrics = \"$metrics\"|" /etc/ptnetd/ptnetd.toml
grep -q "^metrics = \"$metrics\"" /etc/ptnetd/ptnetd.toml || die "could not enable metrics in the conffile"
/etc/init.d/ptnetd status > /dev/null 2>&1 && /etc/init.d/ptnetd stop > /dev/null
/etc/init.d/ptnetd start >&2 || { tail -n 20 /var/log/ptnetd.log >&2; die "the service did not start"; }

step "2. a virtio-net port, and a VM on it from libvirt"
ptnetctl serve-virtio-net vale0:web >&2
if ! virsh -c qemu:///system version > /dev/null 2>&1; then
    virtlogd > "$work/virtlogd.log" 2>&1 &
    pids+=($!)
    libvirtd > "$work/libvirtd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 150); do virsh -c qemu:///system version > /dev/null 2>&1 && break; sleep 0.2; done
    virsh -c qemu:///system version > /dev/null || die "libvirtd does not answer"
fi
cp "$kernel_dir/arch/x86/boot/bzImage" "$work/bzImage"
cat > "$work/guest.sh" <<'EOF'
dev=$(basename $(ls -d /sys/bus/virtio/drivers/virtio_net/virtio*/net/* | head -n1))
ip link set "$dev" up
echo guest-sending
ptnet-pktgen tx -i "packet:$dev" --dst-mac 02:70:74:00:00:02 -R 2000 -d 40 -q --json
EOF
vm-images/build-initramfs.sh --out "$work/guest.initrd.gz" --script "$work/guest.sh" \
    --bin "$pktgen" > /dev/null
chmod 644 "$work"/*
ptnetctl libvirt-xml vale0:web --domain "$domain" --accel "$accel" --memory 256 \
    --kernel "$work/bzImage" --initrd "$work/guest.initrd.gz" \
    --cmdline "console=ttyS0 panic=-1" --serial-log "$work/console.log" > "$work/domain.xml"
virsh -c qemu:///system define --validate "$work/domain.xml" >&2
# The host side: a member of ptnet receives on vale0 with the installed tools.
useradd --system --no-create-home --shell /usr/sbin/nologin -G ptnet "$member"
setpriv --reuid="$member" --regid="$member" --init-groups \
    ptnet-pktgen rx -i vale0:sink -d 60 --idle 5 -q --json > "$work/sink.json" 2> "$work/sink.log" &
pids+=($!)
sink=$!
virsh -c qemu:///system start "$domain" >&2
for _ in $(seq 240); do grep -q guest-sending "$work/console.log" 2> /dev/null && break; sleep 0.5; done
grep -q guest-sending "$work/console.log" || { cat "$work/console.log" >&2; die "the guest did not start sending"; }

step "3. watch it: ptnetctl top, and Prometheus"
seen=0
for _ in $(seq 20); do
    ptnetctl top --count 1 --interval 1 > "$work/top.txt"
    # Columns: port, kind, rx frames/s, tx frames/s, ...: the VM sends (its port's tx), the
    # host client on vale0:sink receives.
    if awk '$1 == "vale0:web" && $4 > 0 { v = 1 } $1 == "vale0:sink" && $3 > 0 { s = 1 }
            END { exit !(v && s) }' "$work/top.txt"; then
        seen=1
        break
    fi
done
cat "$work/top.txt" >&2
[ "$seen" = 1 ] || die "ptnetctl top shows no traffic on vale0:web"
curl -sf "http://$metrics/metrics" > "$work/scrape.txt" || die "no metrics on $metrics"
promtool check metrics < "$work/scrape.txt" >&2 || die "promtool rejects the scrape"
pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: ptnetd
    static_configs:
      - targets: ['$metrics']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$pport" > "$work/prometheus.log" 2>&1 &
pids+=($!)
query='rate(ptnet_port_tx_frames_total{port="vale0:web"}[5s])'
rate=""
for _ in $(seq 60); do
    rate=$(curl -sf --get "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$query" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' \
        2> /dev/null || true)
    python3 -c "import sys; sys.exit(0 if float('${rate:-0}') > 0 else 1)" 2> /dev/null && break
    sleep 1
done
python3 -c "import sys; sys.exit(0 if float('${rate:-0}') > 0 else 1)" \
    || die "Prometheus has no rate for vale0:web ($query)"
log "Prometheus: $query = $rate frames/s"

step "4. virsh destroy: the port is reclaimed; dpkg -r: nothing left running"
virsh -c qemu:///system destroy "$domain" >&2
for _ in $(seq 50); do
    ptnetctl --json list | python3 -c '
import json, sys
ports = [p for s in json.load(sys.stdin)["switches"] for p in s["ports"] if p["name"] == "vale0:web"]
sys.exit(0 if ports and not ports[0]["vm"]["running"] else 1)' && break
    sleep 0.2
done
ptnetctl stats vale0:web >&2
ptnetctl --json list | grep -q '"running":false' || die "vale0:web still runs after virsh destroy"
wait "$sink" || true
python3 - "$work/sink.json" <<'PY' || die "the host client on vale0 received nothing from the VM"
import json, sys
r = json.load(open(sys.argv[1]))
print("host client on vale0:sink received %d frames from the VM" % r["packets"], file=sys.stderr)
sys.exit(0 if r["packets"] > 0 else 1)
PY
virsh -c qemu:///system undefine "$domain" > /dev/null
dpkg -r ptnet > "$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log"; die "dpkg -r failed"; }
[ -z "$(live_pids /usr/sbin/ptnetd)" ] || die "ptnetd still runs after dpkg -r"
walked=1
log "operator path walked"
