#!/usr/bin/env bash
# Smoke test of the benchmark, for CI: builds and unit-tests the load tool, then runs each
# scenario once with 20 clients against the given tcphub binary and against the Node seed
# server (the group and bulk scenarios against tcphub only), the floor program both ways,
# the mailbox scenarios once at tiny N against tcphub on a data dir, and the cluster
# scenarios (bench/cluster.sh --smoke: three nodes on a nats-server, HAProxy). Exits non-zero on
# any lost, duplicated or misrouted message or failed registration. Timing figures from
# here mean nothing; BENCHMARKS.md comes from bench/run.sh, bench/groups.sh and
# bench/mailbox.sh.
#
# Usage: bench/smoke.sh path/to/tcphub
# Environment: BENCH_TARGET_DIR (cargo target dir for the load tool, default bench/target).
set -euo pipefail

TCPHUB=$(realpath "${1:?usage: $0 path/to/tcphub}")
HERE=$(cd "$(dirname "$0")" && pwd)

BENCH_TARGET=${BENCH_TARGET_DIR:-$HERE/target}
CARGO_TARGET_DIR=$BENCH_TARGET cargo test --release --locked --manifest-path "$HERE/Cargo.toml"
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release --locked --manifest-path "$HERE/Cargo.toml"
BENCH=$BENCH_TARGET/release/tcphub-bench
gcc -O2 -Wall -o "$BENCH_TARGET/floor" "$HERE/floor.c"
"$BENCH_TARGET/floor" 50 2 >/dev/null
"$BENCH_TARGET/floor" 50 2 any >/dev/null
command -v node >/dev/null || { echo "smoke: node is needed for the seed server" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

SERVER_PID=
trap '[ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true' EXIT
LOGS=$(mktemp -d)

for target in tcphub seed; do
  for scenario in idle fanout direct flood group bulk; do
    # The seed design has no inbound limits (a flood only measures Node's event loop), no
    # groups and no bulk sends.
    case $target-$scenario in seed-flood | seed-group | seed-bulk) continue ;; esac
    tcp=$(free_port) http=$(free_port)
    case $target in
      tcphub) "$TCPHUB" --tcp-addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http" >"$LOGS/$target.log" 2>&1 & ;;
      seed) node "$HERE/seed-server/server.js" --tcp-port "$tcp" --http-port "$http" >"$LOGS/$target.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    "$BENCH" wait --addr "127.0.0.1:$tcp" --addr "127.0.0.1:$http"
    common=(--target "$target" --addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http"
            --server-pid "$SERVER_PID" --clients 20 --timeout-secs 5)
    case $scenario in
      idle) "$BENCH" idle "${common[@]}" --settle-secs 0 ;;
      fanout) "$BENCH" fanout "${common[@]}" --rounds 5 --warmup 1 ;;
      direct) "$BENCH" direct "${common[@]}" --inflight 4 --messages 200 ;;
      flood) "$BENCH" flood "${common[@]}" --flooders 5 --messages 200 ;;
      group) "$BENCH" group "${common[@]}" --groups-per-client 3 --group-size 5 --blocks 2 \
               --rounds 2 --small-sends 8 --warmup 1 ;;
      bulk) "$BENCH" bulk "${common[@]}" --blocks 2 --rounds 2 --warmup 1 ;;
    esac || { echo "smoke: $target $scenario failed; server log:" >&2; tail -20 "$LOGS/$target.log" >&2; exit 1; }
    kill "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=
  done
done
DATA=$(mktemp -d)
trap '[ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
tcp=$(free_port) http=$(free_port)
"$TCPHUB" --tcp-addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http" --data-dir "$DATA/hub" >"$LOGS/mailbox.log" 2>&1 &
SERVER_PID=$!
"$BENCH" wait --addr "127.0.0.1:$tcp" --addr "127.0.0.1:$http"
common=(--target tcphub --addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http" --server-pid "$SERVER_PID"
        --timeout-secs 5 --senders 4)
for scenario in mailbox-store mailbox-return; do
  case $scenario in
    mailbox-store) "$BENCH" mailbox-store "${common[@]}" --clients 20 --messages 200 --warmup 20 ;;
    mailbox-return) "$BENCH" mailbox-return "${common[@]}" --clients 0 --messages 50 --rounds 2 ;;
  esac || { echo "smoke: tcphub $scenario failed; server log:" >&2; tail -20 "$LOGS/mailbox.log" >&2; exit 1; }
done
kill "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
"$BENCH" mailbox-restart --hub-bin "$TCPHUB" --data-dir "$DATA/restart" --senders 4 --messages 200 --names 10 \
  --restarts 1 --timeout-secs 20 || { echo "smoke: tcphub mailbox-restart failed" >&2; exit 1; }
# Cluster mode: one node against three on a nats-server, each scenario once at 20 clients;
# the failover also needs HAProxy (scripts/cluster-haproxy.sh installs it; missing, this fails).
command -v haproxy >/dev/null || { echo "smoke: haproxy is needed for the cluster failover scenario" >&2; exit 1; }
phases="single cluster idle failover"
TCPHUB_BIN=$TCPHUB BENCH_TARGET_DIR=$BENCH_TARGET BENCH_PIN=0 "$HERE/cluster.sh" --smoke --only "$phases" >"$LOGS/cluster.log" 2>&1 \
  || { echo "smoke: cluster scenarios failed:" >&2; tail -30 "$LOGS/cluster.log" >&2; exit 1; }
echo "bench smoke: tcphub and seed passed idle, fanout and direct; tcphub passed flood, group, bulk, the mailbox and the cluster scenarios ($phases)"
