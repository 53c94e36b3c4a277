#!/usr/bin/env bash
# Build ptnet's guest kernel: Linux 7.3 from Debian's linux-source-7.3 with CONFIG_RUST=y.
#
#   vm-images/build-kernel.sh          prints the kernel build directory (O=) on stdout
#
# The build directory is $PTNET_CACHE/kernel/<hash>/, <hash> covering the source package
# version, the config fragment, the kernel patches, this script and the toolchain versions.
# bzImage is <dir>/arch/x86/boot/bzImage; out-of-tree modules build with
# `make -C <dir> M=...` (see guest-driver-linux/build-module.sh). A cached build returns at
# once; a cold one takes 6-8 minutes on 2 cores. Logs go to stderr, the full make
# output to <dir>/ptnet-build.log.
#
# Needs: ci/prereqs.sh base guest-toolchain (root: it writes $PTNET_CACHE).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../ci/lib/common.sh
source "$HERE/../ci/lib/common.sh"

SRC_PACKAGE=linux-source-7.3
FRAGMENT="$HERE/kernel/ptnet.config"
PATCHES_DIR="$PTNET_ROOT/guest-driver-linux/kernel-patches"
BINDGEN="$PTNET_CACHE/tools/bindgen-0.71.1/bin/bindgen"
# bindgen loads libclang at run time: make it the one matching clang-19, not whatever
# llvm-config is first in PATH.
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
KMAKE=(make LLVM=-19 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc "BINDGEN=$BINDGEN")

[ $# -eq 0 ] || die "usage: $0 (no arguments; prints the kernel build directory)"
for tool in /usr/bin/rustc "$BINDGEN" clang-19 ld.lld-19 flex bison dpkg-deb flock; do
    command -v "$tool" >/dev/null || die "$tool not found: run ci/prereqs.sh base guest-toolchain"
done
mkdir -p "$PTNET_CACHE/kernel" 2>/dev/null || die "cannot create $PTNET_CACHE/kernel (run as root?)"

# --- the source package: which version the archive has, fetched once --------------------
deb_dir="$PTNET_CACHE/kernel/deb"
mkdir -p "$deb_dir"
uri_line=$(private_apt download --print-uris "$SRC_PACKAGE" 2>/dev/null | tail -n1)
read -r _ deb_name deb_size deb_sum <<<"$uri_line" || true
[ -n "${deb_name:-}" ] && [[ "${deb_sum:-}" == SHA256:* ]] \
    || die "cannot find $SRC_PACKAGE in trixie-backports (private_apt download --print-uris: '$uri_line')"
deb="$deb_dir/$deb_name"
# Only needed when the source tree is not unpacked yet.
fetch_deb() {
    if [ -f "$deb" ] && [ "$(sha256sum < "$deb" | cut -d' ' -f1)" = "${deb_sum#SHA256:}" ]; then
        return 0
    fi
    log "downloading $deb_name ($((deb_size / 1024 / 1024)) MiB)"
    rm -f "$deb"
    (cd "$deb_dir" && private_apt download -qq -o APT::Sandbox::User=root "$SRC_PACKAGE" >/dev/null) \
        || die "apt-get download $SRC_PACKAGE failed"
    [ -f "$deb" ] || die "apt-get download did not produce $deb"
    [ "$(sha256sum < "$deb" | cut -d' ' -f1)" = "${deb_sum#SHA256:}" ] \
        || die "$deb does not match the archive's SHA256"
}

patches=()
if [ -d "$PATCHES_DIR" ]; then
    while IFS= read -r -d '' p; do patches+=("$p"); done \
        < <(find "$PATCHES_DIR" -maxdepth 1 -name '*.patch' -type f -print0 | LC_ALL=C sort -z)
fi
patch_key=(str:no-patches)
[ ${#patches[@]} -eq 0 ] || patch_key=("${patches[@]}")

# --- the unpacked, patched source tree (shared by every build of the same source) --------
src_hash=$(hash_inputs "str:$deb_name" "${patch_key[@]}")
src_root="$PTNET_CACHE/kernel/src-$src_hash"
srctree="$src_root/$SRC_PACKAGE"

toolchain="$(/usr/bin/rustc --version) | $("$BINDGEN" --version 2>/dev/null) | $(clang-19 --version | head -n1) | $(ld.lld-19 --version)"
hash=$(hash_inputs "str:$deb_name" "$FRAGMENT" "${patch_key[@]}" "$HERE/build-kernel.sh" "str:$toolchain")
out="$PTNET_CACHE/kernel/$hash"

# One builder per hash at a time; a second one waits and then finds the result.
exec 9>"$PTNET_CACHE/kernel/.lock-$hash"
flock 9

if [ -f "$out/.ptnet-complete" ]; then
    log "guest kernel cached: $out"
    printf '%s\n' "$out"
    exit 0
fi

tmp_src=""
tmp_out=""
cleanup() { rm -rf "${tmp_src:-}" "${tmp_out:-}"; }
trap cleanup EXIT

if [ ! -f "$src_root/.ptnet-complete" ]; then
    start=$SECONDS
    tmp_src="$PTNET_CACHE/kernel/.tmp-src-$src_hash-$$"
    rm -rf "$tmp_src" "$src_root"
    fetch_deb
    mkdir -p "$tmp_src/deb"
    log "unpacking $deb_name"
    dpkg-deb -x "$deb" "$tmp_src/deb"
    tarball=$(find "$tmp_src/deb/usr/src" -maxdepth 1 -name "$SRC_PACKAGE.tar.*" | head -n1)
    [ -n "$tarball" ] || die "no $SRC_PACKAGE.tar.* inside $deb_name"
    tar -xf "$tarball" -C "$tmp_src"
    rm -rf "$tmp_src/deb"
    [ -f "$tmp_src/$SRC_PACKAGE/Makefile" ] || die "$tarball did not unpack to $SRC_PACKAGE/"
    for p in "${patches[@]}"; do
        log "applying $(basename "$p")"
        patch -d "$tmp_src/$SRC_PACKAGE" -p1 --batch --forward --quiet < "$p" \
            || die "kernel patch $p does not apply to $deb_name"
    done
    touch "$tmp_src/.ptnet-complete"
    mv -T "$tmp_src" "$src_root"
    tmp_src=""
    log "source ready in $((SECONDS - start)) s: $srctree"
fi

# --- configure and build in a temporary O= directory, then rename it into place ---------
# The object tree refers to the source tree by absolute path (which does not move) and to
# itself only in its generated Makefile (KBUILD_OUTPUT, rewritten before the rename) and in
# .cmd dependency files, which only a rebuild of the kernel itself would read.
tmp_out="$PTNET_CACHE/kernel/.tmp-$hash-$$"
rm -rf "$tmp_out"
mkdir -p "$tmp_out"
buildlog="$tmp_out/ptnet-build.log"
kmake() {
    "${KMAKE[@]}" -C "$srctree" "O=$tmp_out" "$@" >>"$buildlog" 2>&1 || {
        tail -n 60 "$buildlog" >&2
        die "kernel make $* failed (full log: $buildlog)"
    }
}

log "configuring: allnoconfig + kvm_guest.config + $(basename "$FRAGMENT")"
kmake rustavailable
kmake allnoconfig
kmake kvm_guest.config
(cd "$srctree" && scripts/kconfig/merge_config.sh -m -O "$tmp_out" "$tmp_out/.config" "$FRAGMENT") \
    >>"$buildlog" 2>&1 || die "merge_config.sh failed (see $buildlog)"
kmake olddefconfig

# The fragment is a contract: every option it sets must be in the final config.
rust=$("$srctree/scripts/config" --file "$tmp_out/.config" --state RUST)
[ "$rust" = y ] || die "CONFIG_RUST=$rust after olddefconfig: Rust support did not stick (check 'make rustavailable' in $buildlog)"
missing=()
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*) grep -qxF "$line" "$tmp_out/.config" || missing+=("$line") ;;
        "# CONFIG_"*" is not set") ! grep -q "^${line:2:-11}=" "$tmp_out/.config" || missing+=("$line") ;;
    esac
done < "$FRAGMENT"
[ ${#missing[@]} -eq 0 ] || die "config options from $(basename "$FRAGMENT") did not stick: ${missing[*]}"

# Heavy builds on this 2-core machine take turns (QEMU's build uses the same lock).
log "waiting for /tmp/ptnet-heavy.lock (another heavy build may be running)"
wait_start=$SECONDS
exec 8>/tmp/ptnet-heavy.lock
flock 8
start=$SECONDS
log "building the kernel with -j$(nproc) (waited $((start - wait_start)) s for the lock)"
# 8>&- 9>&-: the locks belong to this script, not to anything make might leave behind.
"${KMAKE[@]}" -C "$srctree" "O=$tmp_out" "-j$(nproc)" all >>"$buildlog" 2>&1 8>&- 9>&- || {
    tail -n 60 "$buildlog" >&2
    die "kernel build failed (full log: $buildlog)"
}
flock -u 8
exec 8>&-
[ -f "$tmp_out/arch/x86/boot/bzImage" ] || die "the build produced no bzImage"
[ -f "$tmp_out/Module.symvers" ] || die "the build produced no Module.symvers"
[ -f "$tmp_out/rust/libkernel.rmeta" ] || die "the build produced no rust/libkernel.rmeta"
release=$("${KMAKE[@]}" -s -C "$srctree" "O=$tmp_out" kernelrelease 2>/dev/null)
log "built Linux $release in $((SECONDS - start)) s"

cat > "$tmp_out/ptnet-kernel.env" <<ENV
PTNET_KERNEL_RELEASE=$release
PTNET_KERNEL_SOURCE_DEB=$deb_name
PTNET_KERNEL_SRCTREE=$srctree
PTNET_KERNEL_TOOLCHAIN='$toolchain'
ENV
# `make -C <dir> M=...` starts from this Makefile: point it at the final place.
sed -i "s|^export KBUILD_OUTPUT = .*|export KBUILD_OUTPUT = $out|" "$tmp_out/Makefile"
grep -qxF "export KBUILD_OUTPUT = $out" "$tmp_out/Makefile" \
    || die "unexpected generated $tmp_out/Makefile: cannot point KBUILD_OUTPUT at $out"
touch "$tmp_out/.ptnet-complete"
rm -rf "$out"
mv -T "$tmp_out" "$out"
tmp_out=""

# Keep the three newest builds (other branches may be using older ones) and the sources
# they were built from; everything else in the cache is dead weight (~2 GB a version).
mapfile -t builds < <(find "$PTNET_CACHE/kernel" -mindepth 1 -maxdepth 1 -type d \
    -regextype posix-extended -regex '.*/[0-9a-f]{16}' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2)
for d in "${builds[@]:3}"; do
    log "pruning old kernel build $d"
    rm -rf "$d"
done
# Sources only while no other build is in progress (it may be using one not yet referenced).
if [ -z "$(find "$PTNET_CACHE/kernel" -mindepth 1 -maxdepth 1 -name '.tmp-*' -print -quit)" ]; then
    envs=(/dev/null)
    for k in "${builds[@]:0:3}"; do envs+=("$k/ptnet-kernel.env"); done
    for d in "$PTNET_CACHE"/kernel/src-*/; do
        d=${d%/}
        grep -qsF "PTNET_KERNEL_SRCTREE=$d/" "${envs[@]}" \
            || { log "pruning unused kernel source $d"; rm -rf "$d"; }
    done
fi
printf '%s\n' "$out"
