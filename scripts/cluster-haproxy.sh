#!/usr/bin/env bash
# Cluster mode as deployed: three tcphub nodes on one nats-server behind a real
# HAProxy (Debian's), all on loopback, using deploy/cluster/haproxy.cfg; then
# checks that deploy/cluster/compose.yaml is a valid compose file (Debian's
# docker-compose). Installs what it needs; a missing tool is a failure.
#
# Usage: scripts/cluster-haproxy.sh [tcphub binary]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/tcphub}
[ -x "$bin" ] || { echo "no tcphub binary at $bin (cargo build first)" >&2; exit 1; }

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
eval "$(scripts/nats-servers.sh)"

python3 scripts/cluster/haproxy_check.py "$bin" "$NATS_SERVER_BIN" deploy/cluster/haproxy.cfg

TCPHUB_API_TOKEN=check docker-compose -f deploy/cluster/compose.yaml config -q
echo "PASS deploy/cluster/compose.yaml is a valid compose file"
