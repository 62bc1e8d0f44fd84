#!/usr/bin/env bash
# The offline mailbox figures behind BENCHMARKS.md ("Offline mailbox"): builds the load tool,
# tcphub at HEAD and tcphub at the commit before the mailbox existed (the baseline for live
# sends), then, run after run, measures with a fresh server each time:
#   store-disk     HEAD with --data-dir: live sends without ttl, then durable stores (same run)
#   store-memory   HEAD without --data-dir: the same two phases
#   store-baseline the baseline: live sends only
#   return         HEAD with --data-dir: a returning client with stored messages
#   restart        HEAD, started by the load tool on a data dir it fills, then restarted
# The three store hubs are measured in a rotating order. Each run appends JSON lines to
# bench/results/mailbox-<stamp>/results.jsonl; report.md there has the medians.
#
# Usage: bench/mailbox.sh [--quick] [--runs N]
#   --quick   small N and one run, to try the pipeline
# Environment: TCPHUB_TARGET_DIR (cargo target dir for tcphub at HEAD, default <repo>/target),
#   BENCH_TARGET_DIR (for the load tool and the baseline, default bench/target),
#   BENCH_BASELINE (default 2ce89c1: main just before the mailbox was merged in 06d9da6),
#   BENCH_QUIET_WAIT, BENCH_NICE, BENCH_PIN as for bench/run.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RUNS=5 CLIENTS=1000 SENDERS=64 MESSAGES=50000 WARMUP=2000 RETURN_N=1000 ROUNDS=20
RESTART_N=100000 RESTART_NAMES=1000 RESTARTS=3
QUICK=false
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=true RUNS=1 CLIENTS=100 MESSAGES=5000 WARMUP=500 ROUNDS=3 RESTART_N=10000 RESTARTS=2 ;;
    --runs) RUNS=$2; shift ;;
    *) echo "usage: $0 [--quick] [--runs N]" >&2; exit 2 ;;
  esac
  shift
done
BASELINE=${BENCH_BASELINE:-2ce89c1}

echo "== building"
BENCH_TARGET=${BENCH_TARGET_DIR:-$HERE/target}
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release --locked --manifest-path "$HERE/Cargo.toml"
BENCH=$BENCH_TARGET/release/tcphub-bench
# Both hubs are built from commits (not the work tree), so the figures belong to the commits
# written beside them. (Outside the repository: cargo would take bench/'s workspace for theirs.)
SRC=${TMPDIR:-/tmp}/tcphub-mailbox-bench-src
HEAD_REV=$(git -C "$ROOT" rev-parse --short HEAD)
BASELINE_REV=$(git -C "$ROOT" rev-parse --short "$BASELINE")
OUT=$HERE/results/mailbox-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/logs"
build_hub() { # rev target-dir -> copies the binary to $OUT/tcphub-<rev>
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$ROOT" archive "$1" | tar -x -C "$SRC"
  CARGO_TARGET_DIR=$2 cargo build --release --locked --manifest-path "$SRC/Cargo.toml"
  cp "$2/release/tcphub" "$OUT/tcphub-$1"
}
build_hub "$HEAD_REV" "${TCPHUB_TARGET_DIR:-$ROOT/target}"
build_hub "$BASELINE_REV" "$BENCH_TARGET"
rm -rf "$SRC"
HEAD_HUB=$OUT/tcphub-$HEAD_REV BASELINE_HUB=$OUT/tcphub-$BASELINE_REV

# As bench/run.sh: the server on every core but the last, the load tool on the last.
NPROC=$(nproc)
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$NPROC" -ge 2 ]; then
  SERVER_CPUS=0 TOOL_CPUS=$((NPROC - 1))
  [ "$NPROC" -eq 2 ] || SERVER_CPUS=0-$((NPROC - 2))
  ON_SERVER_CPUS=(taskset -c "$SERVER_CPUS") ON_TOOL_CPUS=(taskset -c "$TOOL_CPUS") HUB_CPUS=(--hub-cpus "$SERVER_CPUS")
else
  SERVER_CPUS=any TOOL_CPUS=any ON_SERVER_CPUS=() ON_TOOL_CPUS=() HUB_CPUS=()
fi
ulimit -n "$(ulimit -Hn)"
[ "$(id -u)" != 0 ] || renice -n "${BENCH_NICE:--15}" -p $$ >/dev/null

# Builds or tests running beside a benchmark skew every figure: each scenario first waits for
# a quiet machine (wait_quiet).
. "$HERE/quiet.sh"

SLOT=0 SERVER_PID='' DATA=''
next_ports() {
  TCP_PORT=$((19300 + 2 * (SLOT % 100))) HTTP_PORT=$((19301 + 2 * (SLOT % 100)))
  SLOT=$((SLOT + 1))
}
start_hub() { # binary log [extra args]
  local binary=$1 log=$2
  shift 2
  next_ports
  "${ON_SERVER_CPUS[@]}" "$binary" --tcp-addr "127.0.0.1:$TCP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
    --max-clients 100000 "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  "$BENCH" wait --addr "127.0.0.1:$TCP_PORT" --addr "127.0.0.1:$HTTP_PORT"
}
stop_hub() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  [ -z "$DATA" ] || rm -rf "$DATA"
  DATA=
}
trap '[ -z "$SERVER_PID" ] || kill -KILL "$SERVER_PID" 2>/dev/null || true; [ -z "$DATA" ] || rm -rf "$DATA"' EXIT

RESULTS=$OUT/results.jsonl
: >"$RESULTS"
record() { # run label command...
  local run=$1 label=$2 line
  shift 2
  [ "$run" != 1 ] || echo "$label: tcphub-bench ${*}" >>"$OUT/commands.txt"
  line=$("${ON_TOOL_CPUS[@]}" "$BENCH" "$@" 2>>"$OUT/logs/bench-errors.log") || true
  [ -n "$line" ] || line="{\"scenario\":\"$1\",\"ok\":false,\"error\":\"no result, see logs/bench-errors.log\"}"
  printf '%s\n' "$line" | sed "s/^{/{\"run\":$run,\"hub\":\"$label\",/" | tee -a "$RESULTS"
}
common() { echo --target tcphub --addr "127.0.0.1:$TCP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" --server-pid "$SERVER_PID"; }

store() { # run label
  local args=(--clients "$CLIENTS" --senders "$SENDERS" --messages "$MESSAGES" --warmup "$WARMUP")
  wait_quiet
  case $2 in
    store-disk) DATA=$(mktemp -d); start_hub "$HEAD_HUB" "$OUT/logs/$2-$1.log" --data-dir "$DATA" ;;
    store-memory) start_hub "$HEAD_HUB" "$OUT/logs/$2-$1.log" ;;
    store-baseline) start_hub "$BASELINE_HUB" "$OUT/logs/$2-$1.log"; args+=(--phases live) ;;
  esac
  # shellcheck disable=SC2046 # common's words are meant to split
  record "$1" "$2" mailbox-store $(common) "${args[@]}"
  stop_hub
}

STORE_HUBS=(store-disk store-memory store-baseline)
for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS"
  for i in 0 1 2; do
    store "$run" "${STORE_HUBS[$(((run - 1 + i) % 3))]}"
  done
  wait_quiet
  DATA=$(mktemp -d)
  start_hub "$HEAD_HUB" "$OUT/logs/return-$run.log" --data-dir "$DATA"
  # shellcheck disable=SC2046
  record "$run" return mailbox-return $(common) --clients 0 --senders "$SENDERS" --messages "$RETURN_N" --rounds "$ROUNDS"
  stop_hub
  wait_quiet
  DATA=$(mktemp -d)
  record "$run" restart mailbox-restart --hub-bin "$HEAD_HUB" --data-dir "$DATA" "${HUB_CPUS[@]}" \
    --senders "$SENDERS" --messages "$RESTART_N" --names "$RESTART_NAMES" --restarts "$RESTARTS"
  rm -rf "$DATA"
  DATA=
done

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\", \"quick\": $QUICK, \"runs\": $RUNS,"
  echo "\"tcphub\": \"$HEAD_REV\", \"baseline\": \"$BASELINE_REV\","
  echo "\"server_cpus\": \"$SERVER_CPUS\", \"tool_cpus\": \"$TOOL_CPUS\", \"nproc\": $NPROC,"
  echo "\"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"kernel\": \"$(uname -r)\","
  echo "\"disk\": \"$(df --output=source,fstype "${TMPDIR:-/tmp}" | tail -1 | xargs)\"}"
} >"$OUT/machine.json"

python3 - "$OUT" >"$OUT/report.md" <<'EOF'
import json, statistics, sys
out = sys.argv[1]
lines = [json.loads(l) for l in open(f"{out}/results.jsonl") if l.strip()]
machine = json.load(open(f"{out}/machine.json"))
def med(hub, *path):
    values = []
    for l in lines:
        if l.get("hub") != hub:
            continue
        v = l
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            values.append(v)
    return statistics.median(values) if values else None
def f(v, d=0):
    return "–" if v is None else f"{v:,.{d}f}"
failed = [l for l in lines if not l.get("ok")]
print(f"tcphub {machine['tcphub']}, baseline {machine['baseline']}, {machine['runs']} runs, medians; "
      f"{machine['cpu']}, {machine['nproc']} cores (server on {machine['server_cpus']}, tool on {machine['tool_cpus']}), "
      f"data dir on {machine['disk']}; failed runs: {len(failed)}\n")
print("| hub | phase | requests / s | 202 p50 ms | 202 p99 ms | server CPU µs / request | foreign CPU |")
print("|---|---|---|---|---|---|---|")
for hub, name in [("store-disk", "HEAD, --data-dir"), ("store-memory", "HEAD, in memory"), ("store-baseline", "before the mailbox")]:
    for phase in ("live", "stored"):
        if med(hub, phase, "per_sec") is None:
            continue
        print(f"| {name} | {phase} | {f(med(hub, phase, 'per_sec'))} | {f(med(hub, phase, 'p50_ms'), 2)} | "
              f"{f(med(hub, phase, 'p99_ms'), 2)} | {f(med(hub, phase, 'server_cpu_us_per_request'), 1)} | "
              f"{f(med(hub, 'foreign_cpu_share'), 2)} |")
print(f"\nDurable stores / live sends in the same run (median of runs): {f(med('store-disk', 'stored_to_live'), 2)}; "
      f"in memory: {f(med('store-memory', 'stored_to_live'), 2)}\n")
print(f"Returning client, welcome to last of its stored messages: p50 {f(med('return', 'welcome_to_last_p50_ms'), 1)} ms, "
      f"max {f(med('return', 'welcome_to_last_max_ms'), 1)} ms (medians over runs)\n")
print(f"Restart with stored messages: /readyz 200 after {f(med('restart', 'ready_p50_ms'), 0)} ms "
      f"(max {f(med('restart', 'ready_max_ms'), 0)}), a client has all its messages after "
      f"{f(med('restart', 'delivered_p50_ms'), 0)} ms (max {f(med('restart', 'delivered_max_ms'), 0)}); "
      f"fill {f(med('restart', 'fill', 'per_sec'))} stores/s, database {f((med('restart', 'db_bytes') or 0) / 1e6, 1)} MB")
EOF
cat "$OUT/report.md"
echo "== results in $OUT (report.md)"
