#!/usr/bin/env bash
# Build the netmap tools of the guest image as static binaries (the initramfs has no libc):
#
#   guest-driver-linux/tools/build-guest-tools.sh
#
#   ptnet-pktgen  the project's traffic tool; in a guest, `-i netmap:ptnet0` drives the port
#                 through netmap's API on /dev/netmap
#   nm-tx-rx      a C netmap application compiled against ptnet-spec/include/ptnet_spec.h only
#                 (nm-tx-rx.c beside this script)
#   nm-hostile    a netmap application that writes garbage into everything it can reach and
#                 sends malformed requests (nm-hostile.c): the driver's hostile-user test
#
# Prints the paths of the three binaries, one a line, on stdout in that order; logs go
# to stderr. All land in $PTNET_GUEST_TOOLS_OUT (default: target/guest-tools under the
# checkout), which is also cargo's target directory for this build: the static flags then
# never invalidate the normal build cache, and a second run only relinks what changed.
# Needs cargo, gcc and glibc's static libraries (libc6-dev ships libc.a).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../../ci/lib/common.sh
source "$HERE/../../ci/lib/common.sh"

[ $# -eq 0 ] || die "usage: $0 (no arguments)"
TARGET=x86_64-unknown-linux-gnu
out="${PTNET_GUEST_TOOLS_OUT:-$PTNET_ROOT/target/guest-tools}"
cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
[ -x "$cargo" ] || die "cargo not found (install Rust with rustup)"
command -v gcc >/dev/null || die "gcc not found"
command -v readelf >/dev/null || die "readelf not found (binutils)"
libc_a=$(gcc -print-file-name=libc.a)
[ -f "$libc_a" ] || die "glibc's static libc.a is missing: install libc6-dev"

# is_static BINARY: an ELF file with no program interpreter and no shared-library dependency.
is_static() {
    local phdrs dyn
    phdrs=$(readelf -l "$1") || return 1
    dyn=$(readelf -d "$1") || return 1
    [[ $phdrs != *"program interpreter"* && $dyn != *"(NEEDED)"* ]]
}

mkdir -p "$out"

# --target keeps RUSTFLAGS off build scripts and proc macros (clap's derive), which must stay
# dynamic host libraries; everything linked into ptnet-pktgen is static. Debug info is
# stripped (symbols stay, for backtraces): it would make up most of the initramfs.
log "building ptnet-pktgen (release, static, $TARGET) into $out"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    "$cargo" build --quiet --release \
    --manifest-path "$PTNET_ROOT/Cargo.toml" -p ptnet-pktgen --target "$TARGET" \
    --target-dir "$out" >&2 \
    || die "cargo build of ptnet-pktgen failed"
pktgen="$out/$TARGET/release/ptnet-pktgen"
[ -x "$pktgen" ] || die "$pktgen missing after the build"
is_static "$pktgen" || die "$pktgen is not static (readelf -l shows an interpreter)"

log "building nm-tx-rx (gcc -static) into $out"
nmtxrx="$out/nm-tx-rx"
gcc -static -O2 -Wall -Werror -I "$PTNET_ROOT/ptnet-spec/include" \
    -o "$nmtxrx.$$.tmp" "$HERE/nm-tx-rx.c" >&2 \
    || die "gcc failed on nm-tx-rx.c"
mv -f "$nmtxrx.$$.tmp" "$nmtxrx"
is_static "$nmtxrx" || die "$nmtxrx is not static (readelf -l shows an interpreter)"

log "building nm-hostile (gcc -static) into $out"
nmhostile="$out/nm-hostile"
gcc -static -O2 -Wall -Werror -I "$PTNET_ROOT/ptnet-spec/include" \
    -o "$nmhostile.$$.tmp" "$HERE/nm-hostile.c" >&2 \
    || die "gcc failed on nm-hostile.c"
mv -f "$nmhostile.$$.tmp" "$nmhostile"
is_static "$nmhostile" || die "$nmhostile is not static (readelf -l shows an interpreter)"

printf '%s\n' "$pktgen" "$nmtxrx" "$nmhostile"
