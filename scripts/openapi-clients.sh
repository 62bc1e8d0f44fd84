#!/usr/bin/env bash
# Checks that the committed openapi/openapi.json makes working typed clients:
# Redocly lints it (no errors; openapi/redocly.yaml), openapi-typescript and
# openapi-python-client generate clients from it, and
# scripts/openapi_client_check.py drives a live hub through the generated Python
# client. Every tool is installed here, at a pinned version; a missing tool or
# a failed install fails the check.
#
#   scripts/openapi-clients.sh
#
# OPENAPI_CLIENTS_VENV names a virtualenv to reuse across runs (default: a new
# one in the scratch directory).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"
venv="${OPENAPI_CLIENTS_VENV:-$work/venv}"
token="clients-$RANDOM$RANDOM"
hub_pid=""

cleanup() {
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "lint: Redocly"
(cd "$root/openapi" && npx --yes @redocly/cli@2.77.0 lint --config redocly.yaml openapi.json)

echo "generate: openapi-typescript"
npx --yes openapi-typescript@7.13.0 "$root/openapi/openapi.json" -o "$work/tcphub.d.ts"
grep -q '^export interface webhooks {' "$work/tcphub.d.ts"

echo "generate: openapi-python-client"
if [ ! -x "$venv/bin/openapi-python-client" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'openapi-python-client==0.29.1'
fi
"$venv/bin/openapi-python-client" generate --path "$root/openapi/openapi.json" \
    --config "$root/scripts/openapi-python-client.yaml" --meta none \
    --output-path "$work/tcphub_client" >"$work/generate.log" 2>&1 || { cat "$work/generate.log"; exit 1; }
# The generator cannot write text/plain request bodies at all, so the three send
# endpoints get their JSON body only. That, and nothing else, may be reported.
warnings="$(grep -c '^WARNING' "$work/generate.log" || true)"
text_plain="$(grep -c '^Unsupported content type text/plain$' "$work/generate.log" || true)"
if [ "$warnings" != 3 ] || [ "$text_plain" != 3 ]; then
    cat "$work/generate.log"
    echo "openapi-python-client reported more than the text/plain send bodies" >&2
    exit 1
fi

cargo build --quiet --manifest-path "$root/Cargo.toml"

# Port 0 for both listeners: the hub logs the ports it got.
"$target/debug/tcphub" --tcp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --api-token "$token" --log-format json >"$work/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 1 100); do
    grep -q '"tcphub listening"' "$work/hub.log" && break
    kill -0 "$hub_pid" 2>/dev/null || { cat "$work/hub.log"; exit 1; }
    sleep 0.1
done
listening="$(grep '"tcphub listening"' "$work/hub.log")" || { cat "$work/hub.log"; exit 1; }
tcp_addr="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tcp"])' "$listening")"
http_addr="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["http"])' "$listening")"

echo "drive: the generated Python client against the hub"
PYTHONPATH="$work" PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/python" "$root/scripts/openapi_client_check.py" "$http_addr" "$tcp_addr" "$token"
echo "openapi clients: lint clean, generated, and the Python client works"
