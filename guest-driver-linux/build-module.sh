#!/usr/bin/env bash
# Build an out-of-tree (Rust-for-Linux) kernel module against ptnet's guest kernel.
#
#   guest-driver-linux/build-module.sh MODULE_DIR KERNEL_BUILD_DIR
#
# MODULE_DIR holds a Kbuild file and the module's sources (e.g. guest-driver-linux/hello);
# KERNEL_BUILD_DIR is what vm-images/build-kernel.sh printed. The sources are copied to
# $PTNET_MODULE_OUT/<kernel>/<module>/ (default: target/guest-modules under the checkout,
# which git ignores) and built there, so the source tree stays clean. Prints the path of
# each .ko built, one a line, on stdout; logs go to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../ci/lib/common.sh
source "$HERE/../ci/lib/common.sh"

[ $# -eq 2 ] || die "usage: $0 MODULE_DIR KERNEL_BUILD_DIR"
mod_src=$(cd "$1" 2>/dev/null && pwd) || die "module directory $1 does not exist"
kdir=$(cd "$2" 2>/dev/null && pwd) || die "kernel build directory $2 does not exist"
[ -f "$mod_src/Kbuild" ] || [ -f "$mod_src/Makefile" ] || die "$mod_src has no Kbuild or Makefile"
[ -f "$kdir/Module.symvers" ] && [ -f "$kdir/rust/libkernel.rmeta" ] \
    || die "$kdir is not a finished Rust-enabled kernel build (run vm-images/build-kernel.sh)"

BINDGEN="$PTNET_CACHE/tools/bindgen-0.71.1/bin/bindgen"
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
[ -x "$BINDGEN" ] || die "$BINDGEN missing: run ci/prereqs.sh guest-toolchain"

name=$(basename "$mod_src")
out="${PTNET_MODULE_OUT:-$PTNET_ROOT/target/guest-modules}/$(basename "$kdir")/$name"
rm -rf "$out"
mkdir -p "$out"
cp -a "$mod_src/." "$out/"
# Modules that share ptnet's layouts compile ptnet-spec as a crate of their own (see
# ptnet/Kbuild): give them its sources.
if grep -q ptnet_spec "$mod_src/Kbuild" 2>/dev/null; then
    cp -a "$PTNET_ROOT/ptnet-spec/src" "$out/ptnet_spec"
fi

log "building module $name against $kdir"
buildlog="$out/build.log"
make -C "$kdir" "M=$out" LLVM=-19 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc \
    "BINDGEN=$BINDGEN" "-j$(nproc)" modules >"$buildlog" 2>&1 || {
    cat "$buildlog" >&2
    die "module build of $name failed (log: $buildlog)"
}

# Warnings are errors for the project's modules (as clippy's are for the host crates).
if grep -qE '^warning' "$buildlog"; then
    cat "$buildlog" >&2
    die "module build of $name has warnings (log: $buildlog)"
fi

mapfile -t kos < <(find "$out" -name '*.ko' -type f | LC_ALL=C sort)
[ ${#kos[@]} -gt 0 ] || die "module build of $name produced no .ko (log: $buildlog)"
printf '%s\n' "${kos[@]}"
