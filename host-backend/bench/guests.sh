#!/usr/bin/env bash
# Guest → guest through ptnetd, in one run: two guests with the ptnet driver (netmap's API on
# /dev/netmap, the rings in place), on the vhost-user transport (the patched QEMU) and on the
# ivshmem transport (Debian's stock QEMU), against two guests with the stock virtio_net driver
# (virtio-net ports over vhost-user, AF_PACKET in the guest), on the same switch.
#
#   sudo host-backend/bench/guests.sh [--seconds N] [--sizes "60 1514"] [--accel tcg|kvm]
#                                     [--out DIR] [--only ptnet|ivshmem|virtio-net]
#   host-backend/bench/guests.sh --report FILE.jsonl    # table and plot of earlier rows
#
# Rows (one JSON line each in DIR/guests.jsonl, default target/bench-guests, and a table):
#   ptnet      vale0   sender: ptnet-pktgen tx -i netmap:ptnet0, receiver: rx -i netmap:ptnet0
#   ptnet      pipe    the same over a pipe (trusted, zero copy)
#   ptnet-ivshmem vale0, pipe: the same two rows on the ivshmem transport, Debian's QEMU
#   virtio-net vale0   sender: ptnet-pktgen tx -i packet:eth0, receiver: rx -i packet:eth0
# Each guest has one vCPU; the receiver boots first. On these machines guests run under TCG
# (the figures are TCG's, not KVM's: compare the rows, not the absolute numbers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh
# shellcheck source=../../ci/lib/guests.sh
source ci/lib/guests.sh

secs=5
sizes="60 1514"
accel=${PTNET_ACCEL:-tcg}
out=target/bench-guests
only=""
report=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) secs=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --accel) accel=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --report) report=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done

# report FILE ACCEL: the table, the ptnet/virtio-net ratios and FILE's plot (FILE.svg).
report() {
    python3 - "$1" "$2" <<'PY'
import json, sys
path, accel = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
print()
print("guest → guest through ptnetd (accel %s, 1 vCPU per guest)" % accel)
print("%-13s %-6s %6s %10s %10s %12s %12s" % ("device", "switch", "bytes", "tx Mpps", "rx Mpps", "tx guest cpu", "rx guest cpu"))
for r in rows:
    print("%-13s %-6s %6d %10.3f %10.3f %11.0f%% %11.0f%%" % (r["kind"], r["switch"], r["size_bytes"], r["tx_mpps"], r["rx_mpps"], r["tx_cpu_percent"], r["rx_cpu_percent"]))
by = {(r["kind"], r["switch"], r["size_bytes"]): r for r in rows}
for (k, sw, size), r in sorted(by.items()):
    v = by.get(("virtio-net", "vale0", size))
    if k.startswith("ptnet") and sw == "vale0" and v and v["rx_mpps"] > 0:
        print("%s / virtio-net through vale0 at %d B: %.1fx (received Mpps)" % (k, size, r["rx_mpps"] / v["rx_mpps"]))
    p = by.get(("ptnet", sw, size))
    if k == "ptnet-ivshmem" and p and p["rx_mpps"] > 0:
        print("ivshmem / vhost-user transport, %s at %d B: %.2fx (received Mpps)" % (sw, size, r["rx_mpps"] / p["rx_mpps"]))
# The plot: received Mpps per row, ptnet in blue (ivshmem lighter), virtio-net in grey.
w, bar, gap, left = 760, 22, 8, 260
h = 40 + len(rows) * (bar + gap)
top = max([r["rx_mpps"] for r in rows] + [0.1])
parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
         'font-size="12">' % (w, h),
         '<text x="10" y="20" font-size="14">guest to guest, Mpps received (%s; ptnet blue, '
         'ptnet on ivshmem light blue, virtio-net grey)</text>' % accel]
for i, r in enumerate(rows):
    y = 35 + i * (bar + gap)
    length = (w - left - 70) * r["rx_mpps"] / top
    color = {"ptnet": "#2a6fdb", "ptnet-ivshmem": "#7fb0f0"}.get(r["kind"], "#999999")
    parts.append('<text x="10" y="%d">%s, %s, %d B</text>' % (y + 15, r["kind"], r["switch"], r["size_bytes"]))
    parts.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (left, y, length, bar, color))
    parts.append('<text x="%.1f" y="%d">%.3f</text>' % (left + length + 5, y + 15, r["rx_mpps"]))
parts.append("</svg>")
svg = path.rsplit(".", 1)[0] + ".svg"
open(svg, "w").write("\n".join(parts) + "\n")
print("plot: %s" % svg)
PY
}

if [ -n "$report" ]; then
    report "$report" "$accel"
    exit 0
fi

guests_prepare
STOCK_QEMU=$(command -v qemu-system-x86_64) || die "no stock qemu-system-x86_64 (ci/prereqs.sh qemu)"
mkdir -p "$out"
res=$out/guests.jsonl
: > "$res"
dir=$(mktemp -d /tmp/ptnet-bench-guests.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
guests_daemon "$dir"

# pair KIND SWITCH SIZE: one row.
pair() {
    local kind=$1 sw=$2 size=$3 a b iface up="" profile=()
    local tag="$kind-$sw-$size"
    local qemu=$GUEST_QEMU transport=vhost-user
    case "$kind/$sw" in
        ptnet/vale0) a=vale0:pa b=vale0:pb ;;
        ptnet/pipe) a='pipe1{1' b='pipe1}1' profile=(--trusted) ;;
        ptnet-ivshmem/vale0) a=vale0:ia b=vale0:ib transport=ivshmem qemu=$STOCK_QEMU ;;
        ptnet-ivshmem/pipe) a='pipe2{1' b='pipe2}1' profile=(--trusted) transport=ivshmem qemu=$STOCK_QEMU ;;
        virtio-net/vale0) a=vale0:va b=vale0:vb ;;
        *) die "no row $kind/$sw" ;;
    esac
    # A port is served once; later sizes reuse it (each guest is a new frontend connection).
    if ! gctl --json qemu-args "$a" >/dev/null 2>&1; then
        if [ "$kind" != virtio-net ]; then
            gctl serve-vm "$a" --socket "$tag-a.sock" --transport $transport "${profile[@]}" >/dev/null
            gctl serve-vm "$b" --socket "$tag-b.sock" --transport $transport "${profile[@]}" >/dev/null
        else
            gctl serve-virtio-net "$a" --socket "$tag-a.sock" >/dev/null
            gctl serve-virtio-net "$b" --socket "$tag-b.sock" >/dev/null
        fi
    fi
    if [ "$kind" != virtio-net ]; then
        iface=netmap:ptnet0
    else
        iface=packet:eth0
        up="ip link set eth0 up"
    fi
    # vnet_hdr=0: pktgen sends plain frames (no virtio-net header, no offloads), the
    # header-less fast path netmap recommends for packet generators.
    cat > "$dir/rx.sh" <<EOF
insmod /modules/ptnet.ko vnet_hdr=0
$up
echo receiver-ready
ptnet-pktgen rx -i $iface -d $((secs + 60)) --idle 2 -q --json
EOF
    cat > "$dir/tx.sh" <<EOF
insmod /modules/ptnet.ko vnet_hdr=0
$up
sleep 1
ptnet-pktgen tx -i $iface -d $secs -l $size -q --json
EOF
    log "row $tag: $a → $b, ${size}-byte frames, $secs s"
    GUEST_QEMU=$qemu guest_boot "$b" "$dir/rx.sh" "$accel" $((secs + 180)) > "$dir/$tag.rx.console" 2>&1 &
    local rx_pid=$!
    pids+=("$rx_pid")
    wait_console "$dir/$tag.rx.console" receiver-ready 180 \
        || { cat "$dir/$tag.rx.console" >&2; die "row $tag: the receiving guest did not come up"; }
    GUEST_QEMU=$qemu guest_boot "$a" "$dir/tx.sh" "$accel" $((secs + 180)) > "$dir/$tag.tx.console" 2>&1 \
        || { cat "$dir/$tag.tx.console" >&2; die "row $tag: the sending guest failed"; }
    wait "$rx_pid" || { cat "$dir/$tag.rx.console" >&2; die "row $tag: the receiving guest failed"; }
    python3 - "$kind" "$sw" "$size" "$dir/$tag.tx.console" "$dir/$tag.rx.console" >> "$res" <<'PY'
import json, sys
kind, sw, size, txc, rxc = sys.argv[1:]
def last_json(path, mode):
    for line in reversed(open(path, errors="replace").read().splitlines()):
        line = line.strip()
        if line.startswith("{") and '"mode":"%s"' % mode in line.replace(" ", ""):
            return json.loads(line)
    sys.exit("no %s summary in %s" % (mode, path))
tx, rx = last_json(txc, "tx"), last_json(rxc, "rx")
print(json.dumps({"kind": kind, "switch": sw, "size_bytes": int(size),
                  "tx_mpps": tx["tx_mpps"], "rx_mpps": rx["rx_mpps"],
                  "tx_packets": tx["packets"], "rx_packets": rx["packets"],
                  "tx_cpu_percent": tx["cpu_percent"], "rx_cpu_percent": rx["cpu_percent"]}))
PY
    tail -n1 "$res" >&2
}

for size in $sizes; do
    if [ -z "$only" ] || [ "$only" = ptnet ]; then
        pair ptnet vale0 "$size"
        pair ptnet pipe "$size"
    fi
    if [ -z "$only" ] || [ "$only" = ivshmem ]; then
        pair ptnet-ivshmem vale0 "$size"
        pair ptnet-ivshmem pipe "$size"
    fi
    if [ -z "$only" ] || [ "$only" = virtio-net ]; then
        pair virtio-net vale0 "$size"
    fi
done

report "$res" "$accel"
