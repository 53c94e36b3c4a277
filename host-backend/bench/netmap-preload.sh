#!/usr/bin/env bash
# The preload library's cost (issue 15): netmap applications under libptnet_netmap.so against
# ptnet-pktgen on ptnet's own client library, sending the same number of 60-byte frames into
# the same port of the same daemon in the same run, turn by turn. Two netmap applications:
# the project's nm-tx-rx (C, netmap's API only), and ptnet-pktgen itself through its netmap
# backend (-i netmap:vale0:a): the same program both ways, so the difference is the library's. ptnetd is pinned to CPU 1 and each sender to
# CPU 0; nothing else runs. A sender's rate is frames over its whole run (start, attach,
# send, drain), timed the same way for both; the frames go to vale0 with no other port, so
# the switch looks each one up and drops it (no destination) for both alike.
#
#   host-backend/bench/netmap-preload.sh [--frames N] [--repeat R] [--out DIR]
#                                         (root; defaults 10000000, 5, target/bench)
#
# Prints a table (median, min, max of R runs each) and appends one JSON line per sender to
# DIR/netmap-preload.jsonl, and plots this run into DIR/netmap-preload.svg.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=../../ci/lib/common.sh
source ci/lib/common.sh

frames=10000000
repeat=5
out=target/bench
while [ $# -gt 0 ]; do
    case "$1" in
        --frames) frames=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
need_root "host-backend/bench/netmap-preload.sh"
ensure_cargo
mkdir -p "$out"
cargo build --release --quiet -p ptnetd -p ptnet-pktgen -p ptnet-netmap
rel=$PWD/target/release
tmp=$(mktemp -d /tmp/ptnet-preload-bench.XXXXXX)
cc -O2 -Wall -Wextra -Werror -I ptnet-spec/include -o "$tmp/nm-tx-rx" \
    guest-driver-linux/tools/nm-tx-rx.c
sock=$tmp/ptnetd.sock
taskset -c 1 "$rel/ptnetd" --socket "$sock" --vm-socket-dir "$tmp" > "$tmp/ptnetd.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || die "ptnetd did not start (see $tmp/ptnetd.log)"

# secs COMMAND...: runs COMMAND on CPU 0, prints its wall seconds.
secs() {
    local t0 t1
    t0=$(date +%s.%N)
    taskset -c 0 "$@" > "$tmp/out" 2>> "$tmp/err" || die "$* failed: $(tail -n 5 "$tmp/err")"
    t1=$(date +%s.%N)
    python3 -c "print($t1 - $t0)"
}

log "netmap-preload: $frames frames per run, $repeat runs per sender, turn by turn"
: > "$tmp/runs"
for k in $(seq "$repeat"); do
    s=$(secs env LD_PRELOAD="$rel/libptnet_netmap.so" PTNET_SOCKET="$sock" \
        "$tmp/nm-tx-rx" tx vale0:a -n "$frames" -l 60 -t 600)
    grep -q "tx $frames frames" "$tmp/out" || die "nm-tx-rx: $(cat "$tmp/out")"
    echo "nm-tx-rx $s" >> "$tmp/runs"
    s=$(secs "$rel/ptnet-pktgen" tx -i vale0:a --socket "$sock" -n "$frames" -l 60 -q --json)
    echo "ptnet-pktgen $s" >> "$tmp/runs"
    s=$(secs env LD_PRELOAD="$rel/libptnet_netmap.so" PTNET_SOCKET="$sock" \
        "$rel/ptnet-pktgen" tx -i netmap:vale0:a -n "$frames" -l 60 -q --json)
    echo "ptnet-pktgen-netmap $s" >> "$tmp/runs"
    log "run $k/$repeat done"
done
python3 - "$tmp/runs" "$frames" "$(date -u +%Y-%m-%dT%H:%MZ)" "$out/netmap-preload.jsonl" <<'PY'
import json, statistics, sys
runs, frames, date, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
by = {}
for line in open(runs):
    who, s = line.split()
    by.setdefault(who, []).append(frames / float(s) / 1e6)
rows = []
print(f"| sender (CPU 0; ptnetd on CPU 1), 60-byte frames | Mpps median | min | max |")
print("|---|---:|---:|---:|")
for who, label in (("nm-tx-rx", "nm-tx-rx under libptnet_netmap.so"),
                   ("ptnet-pktgen-netmap", "ptnet-pktgen -i netmap:vale0:a under libptnet_netmap.so"),
                   ("ptnet-pktgen", "ptnet-pktgen -i vale0:a (ptnet-client, no library)")):
    v = sorted(by[who])
    r = {"sender": who, "frames": frames, "runs": len(v), "tx_mpps": statistics.median(v),
         "tx_mpps_min": v[0], "tx_mpps_max": v[-1], "date": date}
    rows.append(r)
    print(f"| {label} | {r['tx_mpps']:.2f} | {v[0]:.2f} | {v[-1]:.2f} |")
base = rows[2]["tx_mpps"]
print()
for r in rows[:2]:
    print(f"{r['sender']} / ptnet-pktgen: {r['tx_mpps'] / base:.2f}")
with open(path, "a") as f:
    for r in rows:
        r["ratio_to_pktgen"] = round(r["tx_mpps"] / base, 3)
        f.write(json.dumps(r) + "\n")
PY
tail -n 3 "$out/netmap-preload.jsonl" > "$tmp/last.jsonl"
python3 "$here/report.py" "$tmp/last.jsonl" --netmap-preload --svg "$out/netmap-preload.svg"
log "plot: $out/netmap-preload.svg"
