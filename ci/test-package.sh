#!/usr/bin/env bash
# Tier 2: the Debian package, as an operator meets it. Builds it (packaging/build-deb.sh),
# checks the systemd unit offline (`systemd-analyze verify`: this machine has no systemd as
# PID 1, so the unit is verified, not run), installs it with dpkg, starts the service through
# its init script (what `service ptnetd start` runs without systemd), runs the host demo with
# the installed binaries against the installed configuration, checks that the ptnet group
# may use the socket and others may not, reloads it, and removes and purges the package:
# nothing may be left running. Root. Leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/common.sh
source ci/lib/common.sh

need_root "ci/test-package.sh"
ci/prereqs.sh cargo-deb

unit=/lib/systemd/system/ptnetd.service
member=ptnet-pkgtest
work=$(mktemp -d /tmp/ptnet-pkgtest.XXXXXX)

# PIDs of live processes running the installed daemon.
live_daemons() { live_pids /usr/sbin/ptnetd; }

installed() { dpkg-query -W -f='${Status}' ptnet 2> /dev/null | grep -q 'ok installed'; }

cleanup() {
    if dpkg-query -W ptnet > /dev/null 2>&1; then
        [ -x /etc/init.d/ptnetd ] && /etc/init.d/ptnetd stop > /dev/null 2>&1 || true
        dpkg --purge ptnet > /dev/null 2>&1 || true
    fi
    userdel "$member" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

[ -z "$(live_daemons)" ] || die "a ptnetd from /usr/sbin already runs (PIDs $(live_daemons)): not ours to stop"
if dpkg-query -W ptnet > /dev/null 2>&1; then
    log "purging a ptnet package left by an earlier run"
    dpkg --purge ptnet > /dev/null
fi

deb=$(packaging/build-deb.sh)
log "built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb -c "$deb" > "$work/contents"
grep -q ' ./usr/share/man/man5/ptnetd.toml.5.gz$' "$work/contents" || die "no ptnetd.toml(5) in $deb"

log "dpkg -i"
dpkg -i "$deb" > "$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log"; die "dpkg -i failed"; }
installed || die "ptnet is not installed after dpkg -i"
getent group ptnet > /dev/null || die "the postinst made no ptnet group"
dpkg-query -W -f='${Conffiles}\n' ptnet | grep -q '/etc/ptnetd/ptnetd.toml' \
    || die "/etc/ptnetd/ptnetd.toml is not a conffile"

log "systemd-analyze verify $unit (offline: no systemd PID 1 here)"
out=$(systemd-analyze verify "$unit" 2>&1) || die "systemd-analyze verify failed: $out"
[ -z "$out" ] || die "systemd-analyze verify warns: $out"
grep -qx 'Type=notify' "$unit" || die "the unit is not Type=notify"
systemd-analyze security --offline=true "$unit" 2>&1 | tail -n 1 >&2

log "man pages: installed, and groff renders them without a warning"
for page in ptnetd.8 ptnetctl.8 ptnetctl-serve-vm.8 ptnet-pktgen.8 ptnet-pktgen-tx.8 ptnetd.toml.5; do
    f=$(man -w "${page##*.}" "${page%.*}" 2> /dev/null | head -n 1) || die "man: no $page"
    [ -n "$f" ] || die "man: no $page"
    w=$(zcat "$f" | LC_ALL=C.UTF-8 groff -k -man -ww -z 2>&1) || die "groff failed on $page: $w"
    [ -z "$w" ] || die "groff warns on $page: $w"
done

log "starting the service (init script; postinst starts it where the init system allows)"
[ -n "$(live_daemons)" ] || /etc/init.d/ptnetd start >&2 || {
    tail -n 20 /var/log/ptnetd.log >&2
    die "/etc/init.d/ptnetd start failed"
}
/etc/init.d/ptnetd status >&2 || die "the service does not run"
sock=/run/ptnetd/ptnetd.sock
[ "$(stat -c %G:%a "$sock")" = ptnet:660 ] || die "$sock is $(stat -c %G:%a "$sock"), not ptnet:660"

log "the host demo, installed binaries, installed configuration"
ci/demo-host --installed --seconds 1 > "$work/demo.log" 2>&1 || { cat "$work/demo.log"; die "demo failed"; }
cat "$work/demo.log" >&2
grep -Eq '^rx vale0:b: [1-9][0-9]* frames' "$work/demo.log" || die "the demo moved no frames over vale0"
grep -Eq '^rx pipe0}1: [1-9][0-9]* frames' "$work/demo.log" || die "the demo moved no frames over the pipe"

log "a member of ptnet uses vale0; a non-member cannot connect"
useradd --system --no-create-home --shell /usr/sbin/nologin -G ptnet "$member"
as_member() { setpriv --reuid="$member" --regid="$member" --init-groups "$@"; }
as_member /usr/bin/ptnetctl list > /dev/null || die "ptnet's member cannot list"
as_member /usr/bin/ptnet-pktgen tx -i vale0:member -n 1000 -q --json > "$work/member.json" \
    || die "ptnet's member cannot send on vale0"
grep -q '"packets":1000' "$work/member.json" || die "member's tx: $(cat "$work/member.json")"
if out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/ptnetctl list 2>&1); then
    die "nobody could list: $out"
fi
grep -q 'ermission denied' <<< "$out" || die "nobody's refusal: $out"

log "an unmodified netmap application as ptnet's member, through the installed preload library"
cc -O2 -Wall -Werror -I ptnet-spec/include -o "$work/nm-tx-rx" guest-driver-linux/tools/nm-tx-rx.c
chmod 755 "$work" "$work/nm-tx-rx"
out=$(as_member env LD_PRELOAD=/usr/lib/ptnet/libptnet-netmap.so "$work/nm-tx-rx" \
    tx vale0:nm -n 1000 -t 10 2>&1) || die "nm-tx-rx under the preload library: $out"
grep -q 'nm-tx-rx: tx 1000 frames' <<< "$out" || die "nm-tx-rx: $out"

log "reload (SIGHUP through the init script)"
/etc/init.d/ptnetd reload >&2
for _ in $(seq 50); do grep -q 'SIGHUP: configuration reloaded' /var/log/ptnetd.log && break; sleep 0.1; done
grep -q 'SIGHUP: configuration reloaded' /var/log/ptnetd.log || die "no reload in /var/log/ptnetd.log"

log "dpkg -r: the daemon stops, binaries and socket go, the conffile stays"
dpkg -r ptnet > "$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log"; die "dpkg -r failed"; }
[ -z "$(live_daemons)" ] || die "ptnetd still runs after dpkg -r (PIDs $(live_daemons))"
[ ! -e /usr/sbin/ptnetd ] && [ ! -e /usr/bin/ptnetctl ] && [ ! -e /usr/lib/ptnet/libptnet-netmap.so ] || die "binaries left after dpkg -r"
[ ! -e "$sock" ] || die "$sock left after dpkg -r"
[ -f /etc/ptnetd/ptnetd.toml ] || die "dpkg -r removed the conffile"
dpkg --purge ptnet > /dev/null
[ ! -e /etc/ptnetd/ptnetd.toml ] || die "dpkg --purge left /etc/ptnetd/ptnetd.toml"
log "package test passed"
