#!/usr/bin/env bash
# The long fuzz campaign: every target until it has run RUNS inputs or for SECONDS, whichever
# comes first (default 10 million or one hour), JOBS targets at a time, at the lowest CPU
# priority. Prints a Markdown table and appends one JSON line per target to OUT (default
# docs/bench/fuzz-campaign-DATE.jsonl). Crashes are left in fuzz/artifacts/<target>/ and fail the run.
#
#   fuzz/campaign.sh [RUNS] [SECONDS] [JOBS] [TARGET...]
#
# docs/benchmarks.md ("Fuzzing") keeps the last campaign's table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../ci/lib/common.sh
source ci/lib/common.sh
ensure_cargo

runs=${1:-10000000}
secs=${2:-3600}
jobs=${3:-1}
shift 3 || shift $#
ci/prereqs.sh fuzz
export PATH="$PTNET_CACHE/tools/cargo-fuzz/bin:$PATH" RUSTC_BOOTSTRAP=1
out=${OUT:-$PWD/docs/bench/fuzz-campaign-$(date -u +%F).jsonl}
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
log "cargo fuzz build (${#targets[@]} targets)"
cargo fuzz build --release --debug-assertions >/dev/null 2>&1 || cargo fuzz build --release --debug-assertions
logs=$(mktemp -d /tmp/ptnet-campaign.XXXXXX)

one() {
    local t=$1 start rc=0
    mkdir -p "corpus/$t"
    start=$(date +%s)
    nice -n 19 cargo fuzz run --release --debug-assertions "$t" "corpus/$t" -- \
        -runs="$runs" -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 \
        > "$logs/$t.log" 2>&1 || rc=$?
    local execs secs_taken corpus crash=false
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
    secs_taken=$(( $(date +%s) - start ))
    corpus=$(find "corpus/$t" -type f | wc -l)
    [ "$rc" -eq 0 ] || crash=true
    printf '{"target":"%s","executions":%s,"seconds":%s,"corpus":%s,"crash":%s,"runs_goal":%s,"seconds_cap":%s,"date":"%s"}\n' \
        "$t" "${execs:-0}" "$secs_taken" "$corpus" "$crash" "$runs" "$secs" "$(date -u +%F)" >> "$out"
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$logs/$t.log" >&2
        echo "fuzz target $t failed (artifacts in fuzz/artifacts/$t)" >&2
        return 1
    fi
}
export -f one
export runs secs logs out

log "campaign: ${#targets[@]} targets, $runs runs or ${secs}s each, $jobs at a time (logs in $logs)"
status=0
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'one "$@"' _ {} || status=$?

echo
echo "| target | executions | seconds | corpus | crash |"
echo "|---|---:|---:|---:|---|"
for t in "${targets[@]}"; do
    grep "\"target\":\"$t\"" "$out" | tail -n1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
# (No backslash inside an f-string: Python 3.11 refuses it.)
crash = "yes" if r["crash"] else "none"
print("| `{target}` | {executions:,} | {seconds:,} | {corpus:,} | ".format(**r) + crash + " |")'
done
exit "$status"
