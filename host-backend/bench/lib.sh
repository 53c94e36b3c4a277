# shellcheck shell=bash
# What the benchmark scripts share. `run` and `median` use: bench (the ptnet-bench binary),
# out (the output folder), res (the results file), secs, repeat.

# bench_args ARGS...: the common options --seconds S, --repeat N, --out DIR into secs, repeat
# and out (the caller sets their defaults first); anything else is an error.
bench_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --seconds) secs=$2; shift 2 ;;
            --out) out=$2; shift 2 ;;
            --repeat) repeat=$2; shift 2 ;;
            *) die "unknown option $1 (see the header of $0)" ;;
        esac
    done
}

# median FILE: prints the line of FILE (JSON rows) with the median rx_mpps, adding the spread.
median() {
    python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows.sort(key=lambda r: r["rx_mpps"])
m = dict(rows[len(rows) // 2])
m["runs"] = len(rows)
m["rx_mpps_min"] = rows[0]["rx_mpps"]
m["rx_mpps_max"] = rows[-1]["rx_mpps"]
print(json.dumps(m))
PY
}

# run ARGS...: runs `ptnet-bench ARGS` $repeat times and appends the median row to $res.
run() {
    log "ptnet-bench $* (x$repeat)"
    local tmp="$out/run.tmp" k
    : > "$tmp"
    for k in $(seq "$repeat"); do
        "$bench" "$@" --duration "$secs" >> "$tmp"
    done
    median "$tmp" >> "$res"
}
