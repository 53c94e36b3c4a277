#!/usr/bin/env bash
# Runs every cargo fuzz target for a while (default 20 s each): the short CI run.
#
#   ci/fuzz.sh [SECONDS] [TARGET...]
#
# cargo fuzz needs nightly features for its sanitizer flags; the machine's stable rustc
# accepts them with RUSTC_BOOTSTRAP=1, so no second toolchain is needed. Crashes are left in
# fuzz/artifacts/<target>/ and fail the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source ci/lib/common.sh
ensure_cargo

secs=${1:-20}
shift || true
ci/prereqs.sh fuzz
export PATH="$PTNET_CACHE/tools/cargo-fuzz/bin:$PATH" RUSTC_BOOTSTRAP=1
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
log "cargo fuzz build (${#targets[@]} targets)"
cargo fuzz build --release --debug-assertions >/dev/null 2>&1 || cargo fuzz build --release --debug-assertions
for t in "${targets[@]}"; do
    log "fuzz $t for ${secs}s"
    mkdir -p "corpus/$t"
    if ! cargo fuzz run --release --debug-assertions "$t" "corpus/$t" -- \
            -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 \
            > "/tmp/ptnet-fuzz-$t.log" 2>&1; then
        tail -n 40 "/tmp/ptnet-fuzz-$t.log"
        die "fuzz target $t failed (artifacts in fuzz/artifacts/$t)"
    fi
    grep -E '^stat::number_of_executed_units' "/tmp/ptnet-fuzz-$t.log" | sed "s/^/  $t: /" >&2 || true
done
