#!/usr/bin/env bash
# Builds the Debian package `ptnet` (target/debian/ptnet_VERSION_ARCH.deb) with cargo-deb:
# the release binaries, their man pages (generated from the same clap definitions by
# ptnet-mangen, and the hand-written ptnetd.toml(5)), the systemd unit, the init script and
# /etc/ptnetd/ptnetd.toml. Prints the package's path.
#
#   packaging/build-deb.sh
#
# cargo-deb itself is installed by `ci/prereqs.sh cargo-deb` into the cache outside the clone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../ci/lib/common.sh
source ci/lib/common.sh

ensure_cargo
cargo_deb=${CARGO_DEB:-$PTNET_CACHE/tools/cargo-deb-$CARGO_DEB_VERSION/bin/cargo-deb}
[ -x "$cargo_deb" ] || die "cargo-deb missing at $cargo_deb (run ci/prereqs.sh cargo-deb as root)"

log "building ptnetd, ptnetctl, ptnet-pktgen (release) and their man pages"
cargo build --release --quiet -p ptnetd -p ptnetctl -p ptnet-pktgen -p ptnet-mangen -p ptnet-netmap
man=target/release/man
rm -rf "$man"
target/release/ptnet-mangen "$man" > /dev/null
cp packaging/man/ptnetd.toml.5 "$man/"
gzip -9n "$man"/*.[58]

log "cargo deb"
# cargo-deb runs as a cargo subcommand: its directory on PATH.
PATH=$(dirname "$cargo_deb"):$PATH cargo deb --no-build --strip --quiet -p ptnetd > /dev/null
ls -t target/debian/ptnet_*.deb | head -n 1
