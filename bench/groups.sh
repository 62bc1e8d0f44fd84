#!/usr/bin/env bash
# Measures tcphub's targets for groups and bulk sends (docs/PROTOCOL.md §5) and its idle
# memory per client, pinned as bench/run.sh pins: builds tcphub from the committed HEAD, the
# load tool and the floor program, then, run after run, records the write floor (nobody
# reading, and live readers on the load tool's core), idle memory at 10,000 clients without
# and with 3 groups each, idle memory at IDLE_N clients, the group scenario and the bulk
# scenario, each against a freshly started hub, and writes the medians into BENCHMARKS.md.
#
# Usage: bench/groups.sh [--quick] [--runs N]
#   --quick   small N and one run, to try the pipeline; writes only bench/results/<stamp>/
# Environment: as bench/run.sh (TCPHUB_TARGET_DIR, BENCH_QUIET_WAIT, BENCH_NICE, BENCH_PIN),
#   and BENCH_TARGET_DIR (cargo target dir for the load tool, default bench/target).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# The hub keeps 1,032 of the 20,000 descriptors a process may open here for HTTP and itself,
# so it admits 18,968 clients (as in run.sh).
RUNS=5 N=10000 IDLE_N=18900 GROUP_SIZE=100 BLOCKS=5 ROUNDS=10 SMALL_SENDS=1000 WARMUP=2
QUICK=false
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=true RUNS=1 N=1000 IDLE_N=2000 BLOCKS=2 ROUNDS=3 SMALL_SENDS=50 WARMUP=1 ;;
    --runs) RUNS=$2; shift ;;
    *) echo "usage: $0 [--quick] [--runs N]" >&2; exit 2 ;;
  esac
  shift
done

echo "== building"
BENCH_TARGET=${BENCH_TARGET_DIR:-$HERE/target}
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release --locked --manifest-path "$HERE/Cargo.toml"
BENCH=$BENCH_TARGET/release/tcphub-bench
# tcphub is built from the committed HEAD (not the work tree), so the figures belong to
# the commit written beside them.
HUB_TARGET=${TCPHUB_TARGET_DIR:-$ROOT/target}
TCPHUB_REV=$(git -C "$ROOT" rev-parse --short HEAD)
# (Outside the repository: cargo would take bench/'s workspace for the copy's.)
HUB_SRC=$(mktemp -d)
git -C "$ROOT" archive HEAD | tar -x -C "$HUB_SRC"
# git archive dates the files at the commit; cargo, which goes by dates, would take a
# binary built later from another tree in the same target dir for this one.
find "$HUB_SRC" -exec touch {} +
CARGO_TARGET_DIR=$HUB_TARGET cargo build --release --locked --manifest-path "$HUB_SRC/Cargo.toml"
rm -rf "$HUB_SRC"
TCPHUB=$HUB_TARGET/release/tcphub
mkdir -p "$BENCH_TARGET"
gcc -O2 -Wall -o "$BENCH_TARGET/floor" "$HERE/floor.c"

# Pinned as in run.sh: the hub (and the floor's writer) on every core but the last, the load
# tool (and the floor's live readers) on the last.
NPROC=$(nproc)
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$NPROC" -ge 2 ]; then
  SERVER_CPUS=0 TOOL_CPUS=$((NPROC - 1))
  [ "$NPROC" -eq 2 ] || SERVER_CPUS=0-$((NPROC - 2))
  ON_SERVER_CPUS=(taskset -c "$SERVER_CPUS") ON_TOOL_CPUS=(taskset -c "$TOOL_CPUS")
else
  SERVER_CPUS=any TOOL_CPUS=any ON_SERVER_CPUS=() ON_TOOL_CPUS=()
fi

ulimit -n "$(ulimit -Hn)"
[ "$(id -u)" != 0 ] || renice -n "${BENCH_NICE:--15}" -p $$ >/dev/null

OUT=$HERE/results/groups-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/logs"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

SLOT=0
next_ports() {
  TCP_PORT=$((19100 + 2 * (SLOT % 400))) HTTP_PORT=$((19101 + 2 * (SLOT % 400)))
  SLOT=$((SLOT + 1))
}

SERVER_PID=
start_server() { # label run
  "${ON_SERVER_CPUS[@]}" "$TCPHUB" --tcp-addr "127.0.0.1:$TCP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
    --max-clients 100000 >"$OUT/logs/$1-$2.log" 2>&1 &
  SERVER_PID=$!
  "$BENCH" wait --addr "127.0.0.1:$TCP_PORT" --addr "127.0.0.1:$HTTP_PORT"
}
stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap '[ -z "$SERVER_PID" ] || kill -KILL "$SERVER_PID" 2>/dev/null || true' EXIT

# As in run.sh: wait for room in the connection-tracking table, and for a quiet machine.
pace() {
  local count=/proc/sys/net/netfilter/nf_conntrack_count max=/proc/sys/net/netfilter/nf_conntrack_max
  [ -r "$count" ] || return 0
  local room=$(($(cat "$max") - 2 * IDLE_N - 10000)) waited=0
  while [ "$(cat "$count")" -gt "$room" ] && [ $waited -lt 180 ]; do sleep 5; waited=$((waited + 5)); done
}
# Builds or tests running beside a benchmark skew every figure: each scenario first waits for
# a quiet machine (wait_quiet).
. "$HERE/quiet.sh"

# One scenario run against a fresh hub: label, then the load tool's arguments after the
# addresses. The JSON line gets the run number and the label.
measure() { # label run args...
  local label=$1 run=$2 line=
  shift 2
  pace
  wait_quiet
  next_ports
  if start_server "$label" "$run" 2>>"$OUT/logs/bench-errors.log"; then
    local args=("$1" --target tcphub --addr "127.0.0.1:$TCP_PORT" --http-addr "127.0.0.1:$HTTP_PORT"
                --server-pid "$SERVER_PID" "${@:2}")
    [ "$run" != 1 ] || echo "tcphub-bench ${args[*]}" >>"$OUT/commands.txt"
    line=$("${ON_TOOL_CPUS[@]}" "$BENCH" "${args[@]}" 2>>"$OUT/logs/bench-errors.log") || true
  fi
  [ -n "$line" ] || line="{\"scenario\":\"$1\",\"ok\":false,\"error\":\"no result, see logs/bench-errors.log\"}"
  printf '%s\n' "$line" | sed "s/^{/{\"run\":$run,\"label\":\"$label\",/" | tee -a "$RESULTS"
  stop_server
}

floor() { # label run [reader cpu]
  local label=$1 run=$2
  shift 2
  wait_quiet
  [ "$run" != 1 ] || echo "floor $N 20 $*" >>"$OUT/commands.txt"
  "${ON_SERVER_CPUS[@]}" "$BENCH_TARGET/floor" "$N" 20 "$@" |
    sed "s/^{/{\"run\":$run,\"label\":\"$label\",\"scenario\":\"floor\",/" | tee -a "$RESULTS"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS"
  floor floor-idle "$run"
  floor floor-live "$run" "$TOOL_CPUS"
  measure idle-no-groups "$run" idle --clients "$N"
  measure idle-3-groups "$run" idle --clients "$N" --groups-per-client 3 --group-size "$GROUP_SIZE"
  measure idle-max "$run" idle --clients "$IDLE_N"
  measure group "$run" group --clients "$N" --groups-per-client 3 --group-size "$GROUP_SIZE" \
    --blocks "$BLOCKS" --rounds "$ROUNDS" --small-sends "$SMALL_SENDS" --warmup "$WARMUP"
  measure bulk "$run" bulk --clients "$N" --blocks "$BLOCKS" --rounds "$ROUNDS" --warmup "$WARMUP"
done

{
  echo "{"
  echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\","
  echo "\"quick\": $QUICK, \"runs\": $RUNS, \"clients\": $N, \"idle_clients\": $IDLE_N, \"group_size\": $GROUP_SIZE,"
  echo "\"blocks\": $BLOCKS, \"rounds\": $ROUNDS, \"small_sends\": $SMALL_SENDS, \"warmup\": $WARMUP,"
  echo "\"server_cpus\": \"$SERVER_CPUS\", \"tool_cpus\": \"$TOOL_CPUS\","
  echo "\"nproc\": $(nproc), \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\","
  echo "\"memory\": \"$(free -g | awk '/Mem:/ {print $2}') GiB\", \"kernel\": \"$(uname -r)\","
  echo "\"tcphub\": \"$TCPHUB_REV\", \"rustc\": \"$(rustc --version)\""
  echo "}"
} >"$OUT/machine.json"

python3 "$HERE/groups_report.py" "$OUT" >"$OUT/report.md"
if ! $QUICK; then
  python3 "$HERE/groups_report.py" "$OUT" --into "$ROOT/BENCHMARKS.md"
fi
echo "== results in $OUT (report.md)"
