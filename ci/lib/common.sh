# shellcheck shell=bash
# Shared helpers for ptnet's build and CI scripts. Source it; it defines functions and a few
# variables and has no side effects of its own.
#
#   PTNET_ROOT   the checkout (derived from this file's location)
#   PTNET_CACHE  where long builds (guest kernel, QEMU, tools) are cached, outside the clone;
#                each artefact lives in a folder named after a hash of its inputs.

PTNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PTNET_CACHE=${PTNET_CACHE:-/var/cache/ptnet}
export PTNET_ROOT PTNET_CACHE
# The cargo-deb that packaging/build-deb.sh uses (ci/prereqs.sh cargo-deb installs it).
CARGO_DEB_VERSION=3.8.0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Makes `cargo` findable the way rustup installs it (root's ~/.cargo/bin is not on a fresh
# shell's PATH everywhere), or dies saying what to install.
ensure_cargo() {
    command -v cargo >/dev/null || PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null \
        || die "cargo not found: install the Rust toolchain for this user with rustup (https://rustup.rs)"
    export PATH
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (it installs packages or creates namespaces); run it with sudo"
}

# The Debian mirror this machine is configured with (never a host name written in the repo).
apt_mirror_uri() {
    local f=/etc/apt/sources.list.d/debian.sources uri=""
    if [ -f "$f" ]; then
        # First stanza whose Suites name plain bookworm (not bookworm-security).
        uri=$(awk '
            /^URIs:/   { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print u; exit } }
            /^$/       { u = "" }' "$f")
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "cannot find the Debian mirror URI in /etc/apt/sources.list.d/debian.sources"
    printf '%s\n' "${uri%/}"
}

# bookworm-backports in the system's sources: Debian marks it NotAutomatic (priority 100), so it
# is only used for packages asked for with -t bookworm-backports.
ensure_bookworm_backports() {
    local list=/etc/apt/sources.list.d/ptnet-bookworm-backports.list
    if [ ! -f "$list" ]; then
        printf 'deb %s bookworm-backports main\n' "$(apt_mirror_uri)" > "$list"
        PTNET_APT_UPDATED=""
    fi
}

apt_update_once() {
    if [ -z "${PTNET_APT_UPDATED:-}" ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        PTNET_APT_UPDATED=1
    fi
}

# apt_install [-t SUITE] PKG...: install what is missing, non-interactively.
apt_install() {
    local target=()
    if [ "${1:-}" = "-t" ]; then target=(-t "$2"); shift 2; fi
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "${p%%=*}" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update_once
    log "apt-get install ${target[*]} ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${target[@]}" "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# private_apt ARGS...: apt-get with a private sources list holding trixie and trixie-backports
# (binary and source). Nothing from it reaches the system's package set: use it only for
# `download` and `source`, never for `install` (trixie binaries would upgrade libc).
private_apt() {
    local dir="$PTNET_CACHE/apt-private" uri
    uri=$(apt_mirror_uri)
    mkdir -p "$dir/lists/partial" "$dir/archives/partial"
    cat > "$dir/sources.list" <<SRC
deb $uri trixie main
deb-src $uri trixie main
deb $uri trixie-backports main
deb-src $uri trixie-backports main
SRC
    local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
                -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives"
                -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
                -o APT::Get::AllowUnauthenticated=false)
    if [ ! -f "$dir/.updated" ] || [ -n "$(find "$dir/.updated" -mmin +1440 2>/dev/null)" ]; then
        apt-get "${opts[@]}" update -qq >/dev/null || die "apt-get update (private trixie list) failed"
        touch "$dir/.updated"
    fi
    apt-get "${opts[@]}" "$@"
}

# hash_inputs FILE|DIR|STRING...: a short stable hash of the given inputs (file contents,
# directory trees, or literal strings prefixed with "str:").
hash_inputs() {
    local a
    {
        for a in "$@"; do
            case "$a" in
                str:*) printf '%s\n' "$a" ;;
                *) if [ -d "$a" ]; then
                       (cd "$a" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
                   else
                       sha256sum < "$a"
                   fi ;;
            esac
        done
    } | sha256sum | cut -c1-16
}

# live_pids EXE: PIDs of live processes running the executable EXE (also once deleted); a
# zombie has no executable to read, so it is not counted (on machines whose PID 1 does not
# reap, a stopped daemon stays a zombie).
live_pids() {
    local p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2> /dev/null) || continue
        [ "$exe" = "$1" ] || [ "$exe" = "$1 (deleted)" ] && echo "${p#/proc/}"
    done
    return 0
}
