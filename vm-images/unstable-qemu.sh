#!/usr/bin/env bash
# Debian unstable's stock QEMU (qemu-system-x86, unmodified), for the tests that prove the
# ivshmem transport on the QEMU a user of a newer Debian has. It runs inside a minimal
# unstable chroot this script builds (debootstrap --variant=minbase) and caches under
# $PTNET_CACHE/chroot, keyed by the package's version in unstable: nothing from unstable is
# installed on the host itself.
#
#   vm-images/unstable-qemu.sh        (root) prints the path of a wrapper that runs the
#                                     chroot's qemu-system-x86_64 with the given arguments
#
# The wrapper enters a private mount namespace, binds /dev, /proc, /sys, /tmp, /run, the
# cache and the checkout into the chroot at their own paths (so the kernel, initramfs,
# sockets and logs a test names are where QEMU looks), and chroots.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../ci/lib/common.sh
source "$HERE/../ci/lib/common.sh"
need_root "building the unstable chroot"

uri=$(apt_mirror_uri)
apt_dir="$PTNET_CACHE/apt-unstable"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
printf 'deb %s unstable main\n' "$uri" > "$apt_dir/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
      -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
if [ ! -f "$apt_dir/.updated" ] || [ -n "$(find "$apt_dir/.updated" -mmin +1440 2>/dev/null)" ]; then
    apt-get "${opts[@]}" update -qq >/dev/null || die "apt-get update (private unstable list) failed"
    touch "$apt_dir/.updated"
fi
version=$(apt-cache "${opts[@]}" show qemu-system-x86 2>/dev/null \
    | awk '/^Version:/ { print $2; exit }')
[ -n "$version" ] || die "no qemu-system-x86 in unstable"

key=$(hash_inputs "str:$version" "$HERE/unstable-qemu.sh")
root="$PTNET_CACHE/chroot/unstable-qemu-$key"
wrapper="$root.run"
if [ ! -x "$root/usr/bin/qemu-system-x86_64" ] || [ ! -x "$wrapper" ]; then
    apt_install debootstrap
    log "debootstrap unstable (minbase) with qemu-system-x86 $version into $root"
    rm -rf "$root.tmp"
    mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase --include=qemu-system-x86 \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        unstable "$root.tmp" "$uri" > "$root.tmp.log" 2>&1 \
        || { tail -20 "$root.tmp.log" >&2; die "debootstrap of unstable failed (log: $root.tmp.log)"; }
    rm -rf "$root"
    mv "$root.tmp" "$root"
    cat > "$wrapper" <<EOF
#!/bin/sh
# Debian unstable's qemu-system-x86_64 $version, run inside its chroot (vm-images/unstable-qemu.sh).
# Binds the cache, the checkout the caller works in (\$PTNET_ROOT, or the directory above
# \$PWD holding ptnet-spec) and the system directories at their own paths; QEMU's working
# directory is / (give it absolute paths).
top=\${PTNET_ROOT:-\$PWD}
while [ "\$top" != / ] && [ ! -d "\$top/ptnet-spec" ]; do top=\$(dirname "\$top"); done
exec unshare --mount --propagation private sh -c '
root=\$1 top=\$2; shift 2
for d in /dev /proc /sys /tmp /run "$PTNET_CACHE" "\$top"; do
    [ "\$d" != / ] && [ -d "\$d" ] || continue
    mkdir -p "\$root\$d" && mount --rbind "\$d" "\$root\$d" || exit 1
done
exec chroot "\$root" /usr/bin/qemu-system-x86_64 "\$@"' sh "$root" "\$top" "\$@"
EOF
    chmod 755 "$wrapper"
fi
"$wrapper" --version | head -n1 | grep -q "Debian" \
    || die "the unstable chroot's QEMU does not run ($wrapper --version)"
printf '%s\n' "$wrapper"
