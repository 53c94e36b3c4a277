#!/usr/bin/env bash
# Run the guest's netmap tools natively, against fake-netmap.so (an LD_PRELOAD stand-in for
# /dev/netmap: a netmap-layout region in a memfd, TX frames written to a file, RX frames read
# back from it). No root, no netmap, about a second; tier 1 runs it.
#
#   guest-driver-linux/tools/host-test.sh [PTNET_PKTGEN]
#
# Checks that nm-tx-rx sends 1000 frames and receives them back with 0 bad, that it catches
# a corrupted frame, and, given a (dynamically linked) ptnet-pktgen, that its netmap backend
# (-i netmap:ptnet0) sends and receives 1000 frames with --check --expect-no-loss. The real
# /dev/netmap of the guest driver is exercised by the VM tests.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../../ci/lib/common.sh
source "$HERE/../../ci/lib/common.sh"

[ $# -le 1 ] || die "usage: $0 [PTNET_PKTGEN]"
pktgen=${1:-}
tmp=$(mktemp -d /tmp/ptnet-nm-host-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cc -shared -fPIC -O2 -Wall -Wextra -Werror -I "$PTNET_ROOT/ptnet-spec/include" \
    -o "$tmp/fake-netmap.so" "$HERE/fake-netmap.c" -ldl
cc -O2 -Wall -Wextra -Werror -I "$PTNET_ROOT/ptnet-spec/include" \
    -o "$tmp/nm-tx-rx" "$HERE/nm-tx-rx.c"

# fake NAME ARGS...: run ARGS with the fake /dev/netmap and the wire file NAME.
fake() {
    local wire=$1
    shift
    FAKE_NETMAP_WIRE="$tmp/$wire" LD_PRELOAD="$tmp/fake-netmap.so" "$@"
}

# expect WANT OUTPUT: OUTPUT must be WANT.
expect() {
    [ "$2" = "$1" ] || die "expected '$1', got '$2'"
}

out=$(fake wire "$tmp/nm-tx-rx" tx netmap:ptnet0 -n 1000 -l 200 -t 10 2>"$tmp/log")
expect "nm-tx-rx: tx 1000 frames" "$out"
out=$(fake wire "$tmp/nm-tx-rx" rx ptnet0 -n 1000 -t 10 2>>"$tmp/log")
expect "nm-tx-rx: rx 1000 frames, 0 bad" "$out"
log "nm-tx-rx: tx and rx of 1000 frames through the fake /dev/netmap"

# One flipped payload byte in the third frame (4 bytes of slot metadata, then the frame).
cp "$tmp/wire" "$tmp/bad"
printf '\x55' | dd of="$tmp/bad" bs=1 seek=$((2 * (4 + 200) + 4 + 100)) conv=notrunc status=none
if out=$(fake bad "$tmp/nm-tx-rx" rx ptnet0 -n 1000 -t 10 2>>"$tmp/log"); then
    die "nm-tx-rx rx accepted a corrupted frame: $out"
fi
expect "nm-tx-rx: rx 1000 frames, 1 bad" "$out"
log "nm-tx-rx: a corrupted frame is counted bad"

if [ -n "$pktgen" ]; then
    [ -x "$pktgen" ] || die "$pktgen is not an executable"
    fake pkt "$pktgen" tx -i netmap:ptnet0 -n 1000 -l 60 -q --json >"$tmp/tx.json" 2>>"$tmp/log" \
        || die "ptnet-pktgen tx failed: $(cat "$tmp/log")"
    grep -q '"packets":1000' "$tmp/tx.json" || die "ptnet-pktgen tx: $(cat "$tmp/tx.json")"
    fake pkt "$pktgen" rx -i netmap:ptnet0 -n 1000 -d 10 --check --expect-no-loss -q --json \
        >"$tmp/rx.json" 2>>"$tmp/log" || die "ptnet-pktgen rx failed: $(cat "$tmp/rx.json" "$tmp/log")"
    grep -q '"packets":1000' "$tmp/rx.json" || die "ptnet-pktgen rx: $(cat "$tmp/rx.json")"
    log "ptnet-pktgen -i netmap:ptnet0: tx and rx --check of 1000 frames through the fake /dev/netmap"
fi
