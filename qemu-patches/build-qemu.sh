#!/usr/bin/env bash
# Build the patched qemu-system-x86_64 that ptnet's VM tests use, once, into the cache:
#
#   $PTNET_CACHE/qemu/<hash>/bin/qemu-system-x86_64
#
# <hash> covers the Debian source version, qemu-patches/patches/ and this script (so the
# configure flags), nothing else. A cached build is reused without touching the network;
# otherwise the script installs the build dependencies, fetches Debian trixie's qemu source,
# applies patches/series, configures a minimal x86_64-softmmu (KVM and TCG, vhost-user) and
# compiles it with `ninja -j2` under /tmp/ptnet-heavy.lock (other heavy builds share these two
# cores). The result is renamed into place atomically.
#
# stdout: the path of the binary, nothing else. Logs go to stderr.
# Environment: PTNET_CACHE (see ci/lib/common.sh), PTNET_QEMU_VERSION (Debian source version,
# default below), PTNET_KEEP_BUILD=1 keeps the build tree of a successful build.
#
# Firmware: the binary looks for BIOS and option ROMs in Debian's /usr/share/qemu,
# /usr/share/seabios and /usr/lib/ipxe/qemu (--firmwarepath), which this script installs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../ci/lib/common.sh
source "$here/../ci/lib/common.sh"

version=${PTNET_QEMU_VERSION:-1:10.0.13+ds-0+deb13u1}
hash=$(hash_inputs "str:qemu=$version" "$here/patches" "$here/build-qemu.sh")
out="$PTNET_CACHE/qemu/$hash"
bin="$out/bin/qemu-system-x86_64"

if [ -x "$bin" ]; then
    printf '%s\n' "$bin"
    exit 0
fi

need_root "build-qemu.sh"
mkdir -p "$PTNET_CACHE/qemu"
# One builder per hash; a second caller waits and then finds the result.
exec 9>"$PTNET_CACHE/qemu/.lock-$hash"
flock 9
if [ -x "$bin" ]; then
    printf '%s\n' "$bin"
    exit 0
fi

start=$(date +%s)
log "building patched QEMU $version into $out"

# Build dependencies: Debian's +ds tarball has no bundled meson and needs >= 1.5.
ensure_bookworm_backports
apt_install gcc make pkgconf python3-venv dpkg-dev xz-utils \
    ninja-build libglib2.0-dev zlib1g-dev libfdt-dev
apt_install -t bookworm-backports meson
# Run-time firmware, from the same QEMU major version as the build where Debian has it.
apt_install -t bookworm-backports seabios qemu-system-data
apt_install ipxe-qemu

tmp="$PTNET_CACHE/qemu/.tmp-$hash-$$"
cleanup() {
    if [ -n "${tmp:-}" ] && [ -d "$tmp" ] && [ "${PTNET_KEEP_BUILD:-0}" != 1 ]; then
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
cd "$tmp"

log "fetching the qemu $version source (Debian trixie)"
private_apt source --download-only "qemu=$version" >&2
dsc=$(ls qemu_*.dsc)
dpkg-source -x "$dsc" src >&2

log "applying $(grep -vc '^\(#\|$\)' "$here/patches/series") patches"
while read -r patch; do
    case "$patch" in ''|'#'*) continue ;; esac
    patch -d src -p1 --batch --forward --quiet < "$here/patches/$patch" \
        || die "$patch does not apply to qemu $version"
done < "$here/patches/series"

log "configuring"
mkdir src/build
(
    cd src/build
    ../configure \
        --target-list=x86_64-softmmu \
        --without-default-features \
        --enable-kvm --enable-tcg \
        --enable-vhost-user --enable-vhost-kernel --enable-vhost-net \
        --enable-fdt=system \
        --disable-docs --disable-werror --disable-tools --disable-user \
        --disable-guest-agent --disable-install-blobs --disable-download \
        --python=/usr/bin/python3 \
        --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
) > "$tmp/configure.log" 2>&1 || { tail -30 "$tmp/configure.log" >&2; die "configure failed"; }
# The device needs memfd-backed guest RAM (memory-backend-memfd) and vhost-user.
for feature in CONFIG_MEMFD CONFIG_VHOST_USER; do
    grep -q "^#define $feature\b" src/build/config-host.h || die "configure did not enable $feature"
done

log "waiting for /tmp/ptnet-heavy.lock (heavy builds take turns on these cores)"
wait_start=$(date +%s)
exec 8>>/tmp/ptnet-heavy.lock
flock 8
compile_start=$(date +%s)
log "compiling (ninja -j2) after waiting $((compile_start - wait_start)) s for the lock"
ninja -C src/build -j2 qemu-system-x86_64 > "$tmp/ninja.log" 2>&1 8>&- \
    || { tail -30 "$tmp/ninja.log" >&2; die "compilation failed"; }
compile_end=$(date +%s)
exec 8>&-

mkdir -p staged/bin
cp src/build/qemu-system-x86_64 staged/bin/
"$tmp/staged/bin/qemu-system-x86_64" -device help 2>/dev/null \
    | grep -q '"vhost-user-test-device-pci"' || die "the built QEMU has no vhost-user-test-device-pci"
{
    echo "source: qemu $version (Debian trixie)"
    echo "patches:"
    grep -v '^\(#\|$\)' "$here/patches/series" | sed 's/^/  /'
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ), compile $((compile_end - compile_start)) s (ninja -j2)"
} > staged/BUILD-INFO
cp "$here/patches/series" staged/series

# Atomic publication: readers see either nothing or the complete tree.
mv -T staged "$out"
log "done in $(( $(date +%s) - start )) s: compile $((compile_end - compile_start)) s," \
    "waiting for the heavy-build lock $((compile_start - wait_start)) s"
printf '%s\n' "$bin"
