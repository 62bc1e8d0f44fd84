#!/usr/bin/env bash
# Compares tcphub builds side by side on directed sends: for each pair, each build is started
# fresh, pinned as run.sh pins (the hub on every core but the last, the load tool on the last),
# and measured with the same `tcphub-bench direct` run, alternating builds, so that a drift of
# the machine during the comparison falls on all of them alike. Prints one line per build and
# pair, then per build the median rate and server CPU per message.
#
# Usage: bench/pairs.sh [--pairs N] [--clients N] [--messages N] BUILD BUILD...
#   BUILD is a tcphub binary, or a git revision of this repository (built from a copy of that
#   commit into $TCPHUB_TARGET_DIR/pairs/<commit>, default <repo>/target/pairs/<commit>).
# Defaults: 5 pairs, 1,000 clients, 50,000 messages, 64 in flight.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PAIRS=5 CLIENTS=1000 MESSAGES=50000
BUILDS=()
while [ $# -gt 0 ]; do
  case $1 in
    --pairs) PAIRS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --messages) MESSAGES=$2; shift ;;
    -*) echo "usage: $0 [--pairs N] [--clients N] [--messages N] BUILD BUILD..." >&2; exit 2 ;;
    *) BUILDS+=("$1") ;;
  esac
  shift
done
[ ${#BUILDS[@]} -ge 2 ] || { echo "usage: $0 [--pairs N] [--clients N] [--messages N] BUILD BUILD..." >&2; exit 2; }

# shellcheck source=bench/quiet.sh
. "$HERE/quiet.sh"
cargo build --release --locked --quiet --manifest-path "$HERE/Cargo.toml"
BENCH=$HERE/target/release/tcphub-bench

# A revision is built once from a copy of its tree, as run.sh builds HEAD.
binary_of() {
  local build=$1
  if [ -x "$build" ] && [ -f "$build" ]; then
    printf '%s\n' "$build"
    return
  fi
  local rev src target
  rev=$(git -C "$ROOT" rev-parse --short "$build^{commit}" 2>/dev/null) || { echo "$build: neither a binary nor a revision" >&2; exit 2; }
  src=${TMPDIR:-/tmp}/tcphub-pairs-$rev target=${TCPHUB_TARGET_DIR:-$ROOT/target}/pairs/$rev
  if [ ! -x "$target/release/tcphub" ]; then
    rm -rf "$src" && mkdir -p "$src"
    git -C "$ROOT" archive "$rev" | tar -x -C "$src"
    find "$src" -exec touch {} +
    CARGO_TARGET_DIR=$target cargo build --release --locked --quiet --manifest-path "$src/Cargo.toml" >&2
    rm -rf "$src"
  fi
  printf '%s\n' "$target/release/tcphub"
}

NPROC=$(nproc)
ON_SERVER_CPUS=() ON_TOOL_CPUS=()
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$NPROC" -ge 2 ]; then
  server_cpus=0
  [ "$NPROC" -eq 2 ] || server_cpus=0-$((NPROC - 2))
  ON_SERVER_CPUS=(taskset -c "$server_cpus") ON_TOOL_CPUS=(taskset -c $((NPROC - 1)))
fi

BINARIES=()
for build in "${BUILDS[@]}"; do BINARIES+=("$(binary_of "$build")"); done

PORT=19700
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for pair in $(seq "$PAIRS"); do
  for i in "${!BINARIES[@]}"; do
    PORT=$((PORT + 2))
    wait_quiet
    "${ON_SERVER_CPUS[@]}" "${BINARIES[$i]}" --tcp-addr "127.0.0.1:$PORT" --http-addr "127.0.0.1:$((PORT + 1))" \
      --max-clients 100000 >/dev/null 2>&1 &
    hub=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((PORT + 1))/readyz" >/dev/null && break; sleep 0.1; done
    line=$("${ON_TOOL_CPUS[@]}" "$BENCH" direct --target tcphub --addr "127.0.0.1:$PORT" \
      --http-addr "127.0.0.1:$((PORT + 1))" --server-pid "$hub" --clients "$CLIENTS" --inflight 64 \
      --messages "$MESSAGES" | tail -n 1) || true
    kill "$hub" && wait "$hub" 2>/dev/null || true
    case $line in
      '{'*) ;;
      *) echo "pair $pair ${BUILDS[$i]}: the load tool gave no result" >&2; exit 1 ;;
    esac
    printf '%s\t%s\t%s\n' "$pair" "${BUILDS[$i]}" "$line" >>"$RESULTS"
    python3 - "$pair" "${BUILDS[$i]}" "$line" <<'PY'
import json, sys
pair, build, line = sys.argv[1:]
run = json.loads(line)
print(f"pair {pair} {build}: {run.get('delivered_per_sec', 0):,.0f}/s, "
      f"{run.get('server_cpu_us_per_message', float('nan')):.1f} µs of server CPU per message")
PY
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = {}
for row in open(sys.argv[1]):
    _, build, line = row.rstrip("\n").split("\t")
    runs.setdefault(build, []).append(json.loads(line))
print()
for build, rows in runs.items():
    rates = [r.get("delivered_per_sec", 0) for r in rows]
    cpu = [r["server_cpu_us_per_message"] for r in rows if "server_cpu_us_per_message" in r]
    print(f"{build}: median {statistics.median(rates):,.0f}/s ({min(rates):,.0f}–{max(rates):,.0f}), "
          f"{statistics.median(cpu):.1f} µs per message ({min(cpu):.1f}–{max(cpu):.1f})")
PY
