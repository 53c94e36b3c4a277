#!/usr/bin/env bash
# Tier 1: formatting, lints, docs and every unit/property test of the workspace. No root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source ci/lib/common.sh

ensure_cargo
# A C compiler: ptnet-spec's test compiles its generated header, and the guest tools' tests
# build C programs. Installed when missing and root (the README's commands run as root).
if ! command -v cc >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "a C compiler is needed (apt-get install gcc libc6-dev)"
    ci/prereqs.sh base
fi
log "cargo fmt --check"
cargo fmt --all -- --check
# The guest kernel modules are not workspace crates (kbuild builds them): format-check them
# here with the edition their kernel compiles them with.
log "rustfmt --check of the guest kernel modules"
rustfmt --edition 2021 --check guest-driver-linux/*/*.rs
log "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
log "cargo test --workspace"
cargo test --workspace --quiet
log "guest netmap tools against a fake /dev/netmap (nm-tx-rx, ptnet-pktgen -i netmap:)"
cargo build --quiet -p ptnet-pktgen
guest-driver-linux/tools/host-test.sh "${CARGO_TARGET_DIR:-target}/debug/ptnet-pktgen"
