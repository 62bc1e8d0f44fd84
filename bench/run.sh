#!/usr/bin/env bash
# Runs the whole comparison behind BENCHMARKS.md: installs nats-server, redis-server and
# mosquitto, builds tcphub, the load tool and the floor program, then, run after run, starts
# each server fresh for each scenario (idle, fanout, direct), records one JSON line per
# scenario run, and writes the median tables.
#
# Usage: bench/run.sh [--quick] [--runs N] [--targets "tcphub seed nats redis mqtt"]
#   --quick   small N and one run, to try the pipeline; writes only bench/results/<stamp>/
# Environment: TCPHUB_TARGET_DIR (cargo target dir for tcphub, default <repo>/target),
#   BENCH_QUIET_WAIT (seconds to wait for an idle machine before each scenario, default 120),
#   BENCH_NICE (priority of the servers and the load tool when run as root, default -15),
#   BENCH_PIN (1, the default: the server on all cores but the last, the load tool on the last;
#   0: no pinning).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# tcphub keeps 1,032 of a 20,000 open-files limit for HTTP and itself (src/fd_budget.rs):
# 18,900 idle clients is the most every server here admits.
RUNS=5 IDLE_N=18900 FANOUT_N=10000 DIRECT_N=1000 ROUNDS=50 WARMUP=5 MESSAGES=50000 INFLIGHT=64
TARGETS="tcphub seed nats redis mqtt"
QUICK=false
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=true RUNS=1 IDLE_N=1000 FANOUT_N=1000 DIRECT_N=200 ROUNDS=10 WARMUP=2 MESSAGES=5000 ;;
    --runs) RUNS=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    *) echo "usage: $0 [--quick] [--runs N] [--targets LIST]" >&2; exit 2 ;;
  esac
  shift
done

# Each scenario run gets its own pair of ports, so nothing left over from the previous
# server (or another program) can stop the next one from listening.
SLOT=0
next_ports() {
  TCP_PORT=$((19100 + 2 * (SLOT % 400))) HTTP_PORT=$((19101 + 2 * (SLOT % 400)))
  SLOT=$((SLOT + 1))
}

echo "== installing the anchors"
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server redis-server mosquitto gcc >/dev/null
command -v node >/dev/null || { echo "node is needed for the seed server" >&2; exit 1; }

echo "== building"
cargo build --release --locked --manifest-path "$HERE/Cargo.toml"
BENCH=$HERE/target/release/tcphub-bench
# tcphub is built from the committed HEAD (not the work tree), so the figures belong to
# the commit written beside them.
HUB_TARGET=${TCPHUB_TARGET_DIR:-$ROOT/target}
TCPHUB_REV=$(git -C "$ROOT" rev-parse --short HEAD)
# (Outside the repository: cargo would take bench/'s workspace for the copy's.)
HUB_SRC=${TMPDIR:-/tmp}/tcphub-bench-src
case " $TARGETS " in
  *" tcphub "*)
    rm -rf "$HUB_SRC" && mkdir -p "$HUB_SRC"
    git -C "$ROOT" archive HEAD | tar -x -C "$HUB_SRC"
    # git archive dates the files at the commit; cargo, which goes by dates, would take a
    # binary built later from another tree in the same target dir for this one.
    find "$HUB_SRC" -exec touch {} +
    CARGO_TARGET_DIR=$HUB_TARGET cargo build --release --locked --manifest-path "$HUB_SRC/Cargo.toml" ;;
esac
TCPHUB=$HUB_TARGET/release/tcphub
mkdir -p "$HERE/target"
gcc -O2 -Wall -o "$HERE/target/floor" "$HERE/floor.c"

# The server under test and the load tool would otherwise compete for the same few cores,
# and every figure would depend on how the kernel happened to place them. Pin them apart:
# the server on every core but the last, the load tool (single-threaded) on the last.
# BENCH_PIN=0 leaves placement to the kernel.
NPROC=$(nproc)
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$NPROC" -ge 2 ]; then
  SERVER_CPUS=0 TOOL_CPUS=$((NPROC - 1))
  [ "$NPROC" -eq 2 ] || SERVER_CPUS=0-$((NPROC - 2))
  ON_SERVER_CPUS=(taskset -c "$SERVER_CPUS") ON_TOOL_CPUS=(taskset -c "$TOOL_CPUS")
else
  SERVER_CPUS=any TOOL_CPUS=any ON_SERVER_CPUS=() ON_TOOL_CPUS=()
fi

# Every server and the bench hold one socket per client: use the whole open-files allowance.
ulimit -n "$(ulimit -Hn)"
# On a machine shared with other work, run this script and everything it starts (servers,
# load tool) ahead of it, so that the comparison is disturbed as little as possible. All
# servers get the same priority.
[ "$(id -u)" != 0 ] || renice -n "${BENCH_NICE:--15}" -p $$ >/dev/null

OUT=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/logs"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

SERVER_PID=
start_server() { # target scenario run
  local log=$OUT/logs/$1-$2-$3.log
  case $1 in
    tcphub) "${ON_SERVER_CPUS[@]}" "$TCPHUB" --tcp-addr "127.0.0.1:$TCP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
              --max-clients 100000 >"$log" 2>&1 & ;;
    seed) "${ON_SERVER_CPUS[@]}" node "$HERE/seed-server/server.js" --tcp-port "$TCP_PORT" --http-port "$HTTP_PORT" >"$log" 2>&1 & ;;
    nats) "${ON_SERVER_CPUS[@]}" nats-server -a 127.0.0.1 -p "$TCP_PORT" >"$log" 2>&1 & ;;
    redis) "${ON_SERVER_CPUS[@]}" redis-server --port "$TCP_PORT" --bind 127.0.0.1 --maxclients 19900 --save '' \
             --appendonly no --protected-mode no >"$log" 2>&1 & ;;
    mqtt) printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n' \
            "$TCP_PORT" >"$OUT/mosquitto.conf"
          "${ON_SERVER_CPUS[@]}" mosquitto -c "$OUT/mosquitto.conf" >"$log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  local addrs=(--addr "127.0.0.1:$TCP_PORT")
  case $1 in tcphub | seed) addrs+=(--addr "127.0.0.1:$HTTP_PORT") ;; esac
  "$BENCH" wait "${addrs[@]}"
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap '[ -z "$SERVER_PID" ] || kill -KILL "$SERVER_PID" 2>/dev/null || true' EXIT

# Loopback connections live on in the kernel's connection-tracking table for 120 s after
# they close; when it fills, connects stall silently. Wait for room before each scenario.
pace() {
  local count=/proc/sys/net/netfilter/nf_conntrack_count max=/proc/sys/net/netfilter/nf_conntrack_max
  [ -r "$count" ] || return 0
  local room=$(($(cat "$max") - 2 * IDLE_N - 10000)) waited=0
  while [ "$(cat "$count")" -gt "$room" ] && [ $waited -lt 180 ]; do sleep 5; waited=$((waited + 5)); done
}

# Builds or tests running beside a benchmark skew every figure: each scenario first waits for
# a quiet machine (wait_quiet).
. "$HERE/quiet.sh"

scenario_args() { # target scenario
  local common=(--target "$1" --addr "127.0.0.1:$TCP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --server-pid "$SERVER_PID")
  case $2 in
    idle) echo idle "${common[@]}" --clients "$IDLE_N" ;;
    fanout) echo fanout "${common[@]}" --clients "$FANOUT_N" --rounds "$ROUNDS" --warmup "$WARMUP" ;;
    direct) echo direct "${common[@]}" --clients "$DIRECT_N" --inflight "$INFLIGHT" --messages "$MESSAGES" ;;
  esac
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS"
  wait_quiet
  "${ON_SERVER_CPUS[@]}" "$HERE/target/floor" "$FANOUT_N" 20 | sed "s/^{/{\"scenario\":\"floor\",\"run\":$run,/" >>"$RESULTS"
  for target in $TARGETS; do
    for scenario in idle fanout direct; do
      pace
      wait_quiet
      next_ports
      # A failed run is recorded (ok=false, with its losses) and the comparison goes on.
      line=
      if start_server "$target" "$scenario" "$run" 2>>"$OUT/logs/bench-errors.log"; then
        args=$(scenario_args "$target" "$scenario")
        [ "$run" != 1 ] || echo "tcphub-bench $args" >>"$OUT/commands.txt"
        line=$("${ON_TOOL_CPUS[@]}" "$BENCH" $args 2>>"$OUT/logs/bench-errors.log") || true
      fi
      [ -n "$line" ] || line="{\"scenario\":\"$scenario\",\"target\":\"$target\",\"ok\":false,\"error\":\"no result, see logs/bench-errors.log\"}"
      printf '%s\n' "$line" | sed "s/^{/{\"run\":$run,/" | tee -a "$RESULTS"
      stop_server
    done
  done
done

{
  echo "{"
  echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\","
  echo "\"quick\": $QUICK, \"runs\": $RUNS, \"idle_clients\": $IDLE_N, \"fanout_clients\": $FANOUT_N,"
  echo "\"direct_clients\": $DIRECT_N, \"rounds\": $ROUNDS, \"warmup\": $WARMUP, \"messages\": $MESSAGES, \"inflight\": $INFLIGHT,"
  echo "\"server_cpus\": \"$SERVER_CPUS\", \"tool_cpus\": \"$TOOL_CPUS\","
  echo "\"nproc\": $(nproc), \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\","
  echo "\"memory\": \"$(free -g | awk '/Mem:/ {print $2}') GiB\", \"kernel\": \"$(uname -r)\","
  echo "\"tcphub\": \"$TCPHUB_REV\","
  echo "\"rustc\": \"$(rustc --version)\", \"node\": \"$(node --version)\","
  echo "\"nats\": \"$(nats-server --version)\", \"redis\": \"$(redis-server --version | cut -d' ' -f1-3)\","
  echo "\"mosquitto\": \"$(mosquitto -h | head -1)\""
  echo "}"
} >"$OUT/machine.json"

python3 "$HERE/report.py" "$OUT" >"$OUT/report.md"
if ! $QUICK; then
  python3 "$HERE/report.py" "$OUT" --into "$ROOT/BENCHMARKS.md"
fi
echo "== results in $OUT (report.md)"
