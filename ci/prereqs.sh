#!/usr/bin/env bash
# Install what ptnet's builds and tests need on a Debian bookworm machine, by group.
#
#   ci/prereqs.sh [GROUP...]     (root; default: every group)
#
# Groups:
#   base             small tools the test tiers use (iproute2, busybox-static, kmod, cpio, ...,
#                    gcc and libc6-dev for the static guest tools)
#   guest-toolchain  what builds the Rust-enabled guest kernel and out-of-tree modules:
#                    bookworm's rustc-web 1.85 (pinned and held), clang/lld/llvm 19, and
#                    bindgen-cli 0.71.1 (cargo install into $PTNET_CACHE/tools)
#   qemu             stock qemu-system-x86 from bookworm-backports (the virtio-net guests can
#                    run on it; ptnet devices need the patched build of qemu-patches/)
#   fuzz             cargo-fuzz, built into $PTNET_CACHE/tools (used with stable + RUSTC_BOOTSTRAP)
#   cargo-deb        cargo-deb $CARGO_DEB_VERSION, built into $PTNET_CACHE/tools (packaging/build-deb.sh),
#                    and systemd (systemd-analyze verifies the unit offline; not started)
#   libvirt          Debian's libvirt (libvirt-daemon-system, virsh) for the tier-3 libvirt test,
#                    and libvirt's QEMU user in the ptnet group, as the user guide tells operators
#   prometheus       Debian's Prometheus (promtool, and a server the metrics test runs)
#   dpdk             bookworm's DPDK 22.11 with dpdk-testpmd (benchmark peers, virtio-user client)
#   ovs-dpdk         bookworm's Open vSwitch 3.1 built with DPDK (openvswitch-switch-dpdk; the
#                    virtio-net benchmark's third switch). The benchmark runs a private instance;
#                    a system service this install starts is stopped again.
#
# Each group is a function named group_<name> (dashes become underscores): add a group by
# adding a function. Every group is idempotent and returns quickly when already satisfied.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Other engineers' scripts install packages on this machine at the same time: wait for
# dpkg's lock instead of failing on it. Every apt-get call of common.sh goes through this.
apt-get() { command apt-get -o DPkg::Lock::Timeout=900 "$@"; }

# The kernel's Rust support wants exactly this toolchain (7.3 needs rustc >= 1.85 and
# bindgen >= 0.71.1). bookworm-security carries a newer rustc-web: it must not replace this
# one behind our back (module builds must use the compiler the kernel was built with).
RUST_WEB_VERSION=1.85.0+dfsg3-1~deb12u3
RUST_WEB_PACKAGES=(rustc-web libstd-rust-web-dev rust-web-src)
BINDGEN_VERSION=0.71.1
BINDGEN_ROOT="$PTNET_CACHE/tools/bindgen-$BINDGEN_VERSION"

# installed_version PKG: the installed version, or nothing.
installed_version() {
    { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } \
        | awk '$2 == "ok" && $3 == "installed" { print $4 }'
}

group_base() {
    apt_install iproute2 busybox-static kmod cpio bc python3 xz-utils make util-linux ethtool
    # gcc with glibc's static libraries: the static guest tools (build-guest-tools.sh).
    apt_install gcc libc6-dev
}

group_guest_toolchain() {
    local p pinned=() held
    for p in "${RUST_WEB_PACKAGES[@]}"; do
        [ "$(installed_version "$p")" = "$RUST_WEB_VERSION" ] || pinned+=("$p=$RUST_WEB_VERSION")
    done
    if [ ${#pinned[@]} -gt 0 ]; then
        apt_update_once
        apt-cache show "rustc-web=$RUST_WEB_VERSION" >/dev/null 2>&1 \
            || die "rustc-web $RUST_WEB_VERSION is not available from bookworm (apt-cache policy rustc-web)"
        log "apt-get install ${pinned[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            --allow-downgrades --allow-change-held-packages "${pinned[@]}" >/dev/null \
            || die "installing ${pinned[*]} failed"
    fi
    held=$(apt-mark showhold)
    for p in "${RUST_WEB_PACKAGES[@]}"; do
        grep -qx "$p" <<<"$held" || apt-mark hold "$p" >/dev/null
    done

    apt_install clang-19 lld-19 llvm-19 libclang-19-dev flex bison libelf-dev patch

    local bindgen="$BINDGEN_ROOT/bin/bindgen"
    if [ -x "$bindgen" ] && "$bindgen" --version 2>/dev/null | grep -qx "bindgen $BINDGEN_VERSION"; then
        return 0
    fi
    local cargo
    cargo=$(command -v cargo || true)
    [ -n "$cargo" ] || { [ -x "$HOME/.cargo/bin/cargo" ] && cargo=$HOME/.cargo/bin/cargo; } \
        || die "cargo not found (install Rust with rustup; bindgen-cli is built with it)"
    log "cargo install bindgen-cli $BINDGEN_VERSION (waits for /tmp/ptnet-heavy.lock)"
    mkdir -p "$PTNET_CACHE/tools"
    flock /tmp/ptnet-heavy.lock \
        "$cargo" install --quiet --locked --force --root "$BINDGEN_ROOT" \
        bindgen-cli --version "$BINDGEN_VERSION" \
        || die "cargo install bindgen-cli $BINDGEN_VERSION failed"
    "$bindgen" --version >/dev/null || die "$bindgen does not run"
}

group_qemu() {
    ensure_bookworm_backports
    # qemu-system-x86 alone (no recommends) lacks nothing that -nodefaults guests need except
    # the firmware: SeaBIOS and the option ROMs from qemu-system-data.
    local v
    v=$(installed_version qemu-system-x86)
    if [ -n "$v" ] && ! dpkg --compare-versions "$v" ge 1:10; then
        # bookworm's own 7.2 is too old for the vhost-user features later issues use.
        apt_update_once
        log "upgrading qemu-system-x86 $v to bookworm-backports"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -t bookworm-backports qemu-system-x86 qemu-system-data >/dev/null \
            || die "upgrading qemu-system-x86 from bookworm-backports failed"
    fi
    apt_install -t bookworm-backports qemu-system-x86 qemu-system-data
    apt_install seabios
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"
}

group_fuzz() {
    # cargo fuzz builds with sanitizer flags that need nightly features; stable rustc accepts
    # them with RUSTC_BOOTSTRAP=1 (ci/fuzz.sh sets it), so no second toolchain is needed.
    local root="$PTNET_CACHE/tools/cargo-fuzz" cargo
    [ -x "$root/bin/cargo-fuzz" ] && return 0
    cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
    log "cargo install cargo-fuzz (waits for /tmp/ptnet-heavy.lock)"
    mkdir -p "$PTNET_CACHE/tools"
    flock /tmp/ptnet-heavy.lock "$cargo" install --quiet --locked --root "$root" cargo-fuzz \
        || die "cargo install cargo-fuzz failed"
}

group_cargo_deb() {
    # systemd brings systemd-analyze; installing it starts nothing (no systemd PID 1 here).
    apt_install systemd
    local root="$PTNET_CACHE/tools/cargo-deb-$CARGO_DEB_VERSION" cargo
    [ -x "$root/bin/cargo-deb" ] && return 0
    cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
    log "cargo install cargo-deb $CARGO_DEB_VERSION (waits for /tmp/ptnet-heavy.lock)"
    mkdir -p "$PTNET_CACHE/tools"
    flock /tmp/ptnet-heavy.lock "$cargo" install --quiet --locked --root "$root" \
        cargo-deb --version "$CARGO_DEB_VERSION" \
        || die "cargo install cargo-deb $CARGO_DEB_VERSION failed"
}

group_libvirt() {
    # bookworm's libvirt 9.0 (its qemu driver drives backports' QEMU 10.0 and the patched
    # build). Installing it starts nothing here (policy-rc.d, no systemd): the test starts
    # libvirtd itself when none runs.
    apt_install libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
    getent group ptnet > /dev/null || addgroup --quiet --system ptnet
    if ! id -nG libvirt-qemu | tr ' ' '\n' | grep -qx ptnet; then
        log "adding libvirt-qemu to group ptnet (its QEMU reaches ptnetd's sockets)"
        adduser --quiet libvirt-qemu ptnet
    fi
}

group_prometheus() {
    # Debian's Prometheus 2.42: promtool checks ptnetd's exposition, and a private server
    # scrapes it in a tier-2 test. If this install is what brings the package, the system
    # service its postinst starts is stopped again (the test runs its own instance).
    local fresh=0
    dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'install ok installed' || fresh=1
    apt_install prometheus
    command -v promtool >/dev/null || die "promtool missing after installing prometheus"
    if [ "$fresh" = 1 ]; then
        if [ -d /run/systemd/system ]; then
            systemctl stop prometheus.service 2>/dev/null || true
        elif [ -x /etc/init.d/prometheus ]; then
            /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        fi
    fi
}

group_dpdk() {
    # bookworm's DPDK 22.11: dpdk-testpmd is in dpdk-dev (trixie's would upgrade libc).
    apt_install dpdk dpdk-dev
    command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd missing after installing dpdk-dev"
}

# ovs_services_running: whether the system's Open vSwitch service is up (systemd or sysvinit).
ovs_services_running() {
    if [ -d /run/systemd/system ]; then
        systemctl is-active --quiet openvswitch-switch.service 2>/dev/null \
            || systemctl is-active --quiet ovs-vswitchd.service 2>/dev/null \
            || systemctl is-active --quiet ovsdb-server.service 2>/dev/null
    else
        [ -x /etc/init.d/openvswitch-switch ] \
            && /etc/init.d/openvswitch-switch status >/dev/null 2>&1
    fi
}

group_ovs_dpdk() {
    # openvswitch-switch-dpdk 3.1.0 (bookworm, built against DPDK 22.11) pulls
    # openvswitch-switch, whose postinst starts ovsdb-server and ovs-vswitchd where services
    # may start (systemd). The benchmark never uses that system instance (it runs its own
    # with a private rundir and database), so a service this install started is stopped and
    # left as the admin had it otherwise.
    local was_running=no
    ovs_services_running && was_running=yes
    apt_install openvswitch-switch-dpdk
    if [ "$was_running" = no ] && ovs_services_running; then
        log "stopping the Open vSwitch system service the install started"
        if [ -d /run/systemd/system ]; then
            systemctl stop openvswitch-switch.service ovs-vswitchd.service ovsdb-server.service \
                || die "systemctl stop openvswitch-switch failed"
        else
            /etc/init.d/openvswitch-switch stop >/dev/null || die "stopping openvswitch-switch failed"
        fi
    fi
    # The package leaves the ovs-vswitchd alternative on the plain build (priority 100
    # against 50); the benchmark runs the DPDK build by its own path and never changes it.
    [ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] \
        || die "ovs-vswitchd-dpdk missing after installing openvswitch-switch-dpdk"
    local t
    for t in ovsdb-server ovsdb-tool ovs-vsctl ovs-ofctl ovs-appctl; do
        command -v "$t" >/dev/null || die "$t missing after installing openvswitch-switch-dpdk"
    done
}

main() {
    need_root "ci/prereqs.sh"
    local groups=("$@") g fn
    [ ${#groups[@]} -gt 0 ] || groups=(base guest-toolchain qemu)
    for g in "${groups[@]}"; do
        fn="group_${g//-/_}"
        declare -F "$fn" >/dev/null || die "unknown prerequisite group '$g' (known: $(declare -F | awk '$3 ~ /^group_/ { sub(/^group_/, "", $3); gsub(/_/, "-", $3); printf "%s ", $3 }'))"
        "$fn"
    done
}

main "$@"
