#!/usr/bin/env bash
# Measures cluster mode (docs/PROTOCOL.md §7) against one node, in one run: three tcphub
# nodes (release build of the committed HEAD) on one nats-server, and for the failover two
# HAProxy processes with deploy/cluster/haproxy.cfg rewritten to loopback. Run after run:
#   1. one node alone: fanout to FANOUT_N clients, direct to DIRECT_N clients;
#   2. three nodes: direct with the clients on node A and the sends through A's API (local),
#      then through B's (remote), at INFLIGHT in flight and then one at a time; fanout to FANOUT_N clients, a third on each node;
#   3. three fresh nodes: three cluster-idle load-tool processes, IDLE_N clients each, one
#      process per node (one process may open 20,000 files);
#   4. failover: FAILOVER_N clients through the balancers on node A alone, then B and C
#      start, then A is killed with SIGKILL; the clients reconnect through the balancers.
# Each scenario prints its JSON line; at the end the medians are printed as a table
# (bench/cluster_report.py) and kept in bench/results/cluster-<stamp>/.
#
# Usage: bench/cluster.sh [--quick | --smoke] [--runs N] [--only "single cluster idle failover"]
#   --quick  smaller N, one run; --smoke  20 clients, one run (bench/smoke.sh, with TCPHUB_BIN)
# Exits non-zero if any scenario run lost a message or a client.
# Environment: TCPHUB_BIN (a tcphub binary to use instead of building HEAD), NATS_SERVER_BIN
#   (default: scripts/nats-servers.sh installs it), TCPHUB_TARGET_DIR,
#   BENCH_TARGET_DIR, BENCH_PIN (1, the default: every server process on CPU 0, the load
#   tool on the last CPU; 0: no pinning), BENCH_NICE (as run.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RUNS=3 FANOUT_N=15000 DIRECT_N=1000 MESSAGES=50000 SINGLE_MESSAGES=5000 INFLIGHT=64 ROUNDS=50 WARMUP=5
IDLE_N=18000 FAILOVER_N=10000 HOLD=10 SETTLE=2
ONLY="single cluster idle failover"
QUICK=false
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=true RUNS=1 FANOUT_N=1500 DIRECT_N=200 MESSAGES=5000 SINGLE_MESSAGES=500 ROUNDS=10 WARMUP=2 IDLE_N=1000 FAILOVER_N=1000 ;;
    --smoke) QUICK=true RUNS=1 FANOUT_N=30 DIRECT_N=20 MESSAGES=200 SINGLE_MESSAGES=20 INFLIGHT=4 ROUNDS=3 WARMUP=1 IDLE_N=20 FAILOVER_N=20 HOLD=3 SETTLE=0 ;;
    --runs) RUNS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    *) echo "usage: $0 [--quick | --smoke] [--runs N] [--only LIST]" >&2; exit 2 ;;
  esac
  shift
done
wants() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

echo "== building"
BENCH_TARGET=${BENCH_TARGET_DIR:-$HERE/target}
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release --locked --manifest-path "$HERE/Cargo.toml"
BENCH=$BENCH_TARGET/release/tcphub-bench
TCPHUB_REV=$(git -C "$ROOT" rev-parse --short HEAD)
if [ -n "${TCPHUB_BIN:-}" ]; then
  TCPHUB=$TCPHUB_BIN
else
  # Built from the committed HEAD (not the work tree), so the figures belong to that commit.
  HUB_TARGET=${TCPHUB_TARGET_DIR:-$ROOT/target}
  HUB_SRC=$(mktemp -d)
  git -C "$ROOT" archive HEAD | tar -x -C "$HUB_SRC"
  CARGO_TARGET_DIR=$HUB_TARGET cargo build --release --locked --manifest-path "$HUB_SRC/Cargo.toml"
  rm -rf "$HUB_SRC"
  TCPHUB=$HUB_TARGET/release/tcphub
fi
[ -n "${NATS_SERVER_BIN:-}" ] || eval "$(CARGO_TARGET_DIR=${TCPHUB_TARGET_DIR:-$ROOT/target} "$ROOT/scripts/nats-servers.sh")"
NATS=$NATS_SERVER_BIN
command -v haproxy >/dev/null || { echo "haproxy is needed (apt-get install haproxy)" >&2; exit 1; }

# Two cores: every server process (nodes, broker, balancers) on CPU 0, the load tool on the
# last, as run.sh pins one server against the tool. A cluster thus gets one core in all,
# the same core the single node gets.
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

OUT=$HERE/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT/logs"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done' EXIT

PORT=19400
next_port() { PORT=$((PORT + 1)); [ $PORT -lt 19990 ] || PORT=19401; }

# Connection tracking keeps closed loopback connections 120 s: wait for room before a storm.
pace() {
  local count=/proc/sys/net/netfilter/nf_conntrack_count max=/proc/sys/net/netfilter/nf_conntrack_max
  [ -r "$count" ] || return 0
  local room=$(($(cat "$max") - 3 * IDLE_N - 20000)) waited=0
  while [ "$(cat "$count")" -gt "$room" ] && [ $waited -lt 180 ]; do sleep 5; waited=$((waited + 5)); done
}

start_nats() { # label
  next_port; NATS_PORT=$PORT
  rm -rf "$OUT/js-$1"
  "${ON_SERVER_CPUS[@]}" "$NATS" -js -sd "$OUT/js-$1" -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/logs/nats-$1.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  "$BENCH" wait --addr "127.0.0.1:$NATS_PORT"
}

declare -A TCP HTTP PID
start_hub() { # node label [cluster]
  next_port; TCP[$1]=$PORT
  next_port; HTTP[$1]=$PORT
  local cluster=()
  [ -z "${3:-}" ] || cluster=(--cluster-nats-url "nats://127.0.0.1:$NATS_PORT" --node-name "$1")
  "${ON_SERVER_CPUS[@]}" "$TCPHUB" --tcp-addr "127.0.0.1:${TCP[$1]}" --http-addr "127.0.0.1:${HTTP[$1]}" \
    --max-clients 100000 "${cluster[@]}" >"$OUT/logs/$2-$1.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("${PID[$1]}")
  "$BENCH" wait --addr "127.0.0.1:${TCP[$1]}" --addr "127.0.0.1:${HTTP[$1]}"
}

nodes_seen() { # node
  python3 -c 'import json, sys, urllib.request
print(len(json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/nodes"))["nodes"]))' "${HTTP[$1]}"
}
start_cluster() { # label
  start_nats "$1"
  local node
  for node in a b c; do start_hub "$node" "$1" cluster; done
  for node in a b c; do
    local waited=0
    until [ "$(nodes_seen "$node")" = 3 ]; do
      sleep 0.2; waited=$((waited + 1)); [ $waited -lt 100 ] || { echo "node $node does not see 3 nodes" >&2; exit 1; }
    done
  done
}

record() { # run label command...
  local run=$1 label=$2; shift 2
  [ "$run" != 1 ] || echo "tcphub-bench $*" >>"$OUT/commands.txt"
  local line
  line=$("${ON_TOOL_CPUS[@]}" "$BENCH" "$@" 2>>"$OUT/logs/bench-errors.log") || true
  [ -n "$line" ] || line="{\"scenario\":\"$label\",\"ok\":false,\"error\":\"no result, see logs/bench-errors.log\"}"
  printf '%s\n' "$line" | sed "s/^{/{\"run\":$run,\"label\":\"$label\",/" | tee -a "$RESULTS"
}

# The shipped balancer configuration on loopback (as scripts/cluster/haproxy_check.py
# rewrites it), with a stats socket so that the script can see which nodes it takes as up.
haproxy_config() { # devices-port api-port socket
  sed -e "s/bind :9000/bind 127.0.0.1:$1/" -e "s/bind :8080/bind 127.0.0.1:$2/" \
      -e "s/check port 8080 /check /" \
      -e "s/server hub-1 hub-1:9000/server hub-1 127.0.0.1:${TCP[a]} check port ${HTTP[a]}/" \
      -e "s/server hub-2 hub-2:9000/server hub-2 127.0.0.1:${TCP[b]} check port ${HTTP[b]}/" \
      -e "s/server hub-3 hub-3:9000/server hub-3 127.0.0.1:${TCP[c]} check port ${HTTP[c]}/" \
      -e "s/server hub-1 hub-1:8080/server hub-1 127.0.0.1:${HTTP[a]}/" \
      -e "s/server hub-2 hub-2:8080/server hub-2 127.0.0.1:${HTTP[b]}/" \
      -e "s/server hub-3 hub-3:8080/server hub-3 127.0.0.1:${HTTP[c]}/" \
      "$ROOT/deploy/cluster/haproxy.cfg"
  printf 'global\n    stats socket %s mode 600 level admin\n' "$3"
}
# The state HAProxy's checks give the device backend's servers, e.g. "hub-1=UP hub-2=DOWN ...".
haproxy_states() { # socket
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536): data += chunk
rows = [l.split(",") for l in data.decode().splitlines() if l.startswith("hubs,hub-")]
print(" ".join(f"{r[1]}={r[17]}" for r in rows))' "$1"
}
wait_states() { # socket expected
  local waited=0
  until [ "$(haproxy_states "$1")" = "$2" ]; do
    sleep 0.2; waited=$((waited + 1))
    [ $waited -lt 150 ] || { echo "HAProxy: $(haproxy_states "$1"), expected $2" >&2; exit 1; }
  done
}

# The halves of the clients behind the two balancers: one HAProxy process holds two
# descriptors per client and may open 20,000 files.
BALANCERS=2
failover_run() { # run
  start_nats "failover-$1"
  local node
  for node in a b c; do next_port; TCP[$node]=$PORT; next_port; HTTP[$node]=$PORT; done
  local via=() sockets=() i
  for i in $(seq 1 $BALANCERS); do
    next_port; local dev=$PORT; next_port; local api=$PORT
    local sock=$OUT/haproxy-$i.sock
    haproxy_config "$dev" "$api" "$sock" >"$OUT/haproxy-$i.cfg"
    haproxy -c -q -f "$OUT/haproxy-$i.cfg"
    "${ON_SERVER_CPUS[@]}" haproxy -db -f "$OUT/haproxy-$i.cfg" >"$OUT/logs/haproxy-$i-$1.log" 2>&1 &
    PIDS+=("$!")
    via+=(--node-addr "127.0.0.1:$dev") sockets+=("$sock")
  done
  # Node A alone first, so that every client lands on it.
  start_failover_node a "$1"
  for sock in "${sockets[@]}"; do
    until [ -S "$sock" ]; do sleep 0.1; done
    wait_states "$sock" "hub-1=UP hub-2=DOWN hub-3=DOWN"
  done
  local go=$OUT/failover-go-$1
  rm -f "$go"
  # B and C join once the clients are on A; the tool kills A once the balancers take B and C as up.
  (
    waited=0
    until [ -e "$OUT/failover-ready-$1" ]; do
      sleep 0.1; waited=$((waited + 1)); [ $waited -lt 1200 ] || exit 1
    done
    start_failover_node b "$1"
    start_failover_node c "$1"
    for sock in "${sockets[@]}"; do wait_states "$sock" "hub-1=UP hub-2=UP hub-3=UP"; done
    touch "$go"
  ) &
  local helper=$!
  record "$1" failover failover --target tcphub --server-pid "${PID[a]}" --http-addr "127.0.0.1:${HTTP[a]}" \
    "${via[@]}" --clients "$FAILOVER_N" --probe-api "127.0.0.1:${HTTP[b]}" --probe-api "127.0.0.1:${HTTP[c]}" \
    --ready-file "$OUT/failover-ready-$1" --go-file "$go" \
    --watch "nats=$NATS_PID"
  wait "$helper" || true
  for node in b c; do [ ! -e "$OUT/pid-$node-$1" ] || PIDS+=("$(cat "$OUT/pid-$node-$1")"); done
  stop_all
}
start_failover_node() { # node run
  "${ON_SERVER_CPUS[@]}" "$TCPHUB" --tcp-addr "127.0.0.1:${TCP[$1]}" --http-addr "127.0.0.1:${HTTP[$1]}" \
    --max-clients 100000 --cluster-nats-url "nats://127.0.0.1:$NATS_PORT" --node-name "$1" \
    >"$OUT/logs/failover-$2-$1.log" 2>&1 &
  PID[$1]=$!
  echo "${PID[$1]}" >"$OUT/pid-$1-$2"
  [ "$1" != a ] || PIDS+=("${PID[a]}")
  "$BENCH" wait --addr "127.0.0.1:${TCP[$1]}" --addr "127.0.0.1:${HTTP[$1]}"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS"
  if wants single; then
    pace
    start_hub one "single-$run"
    common=(--target tcphub --addr "127.0.0.1:${TCP[one]}" --http-addr "127.0.0.1:${HTTP[one]}" --server-pid "${PID[one]}")
    record "$run" one-fanout fanout "${common[@]}" --clients "$FANOUT_N" --rounds "$ROUNDS" --warmup "$WARMUP"
    record "$run" one-direct direct "${common[@]}" --clients "$DIRECT_N" --inflight "$INFLIGHT" --messages "$MESSAGES"
    stop_all
  fi
  if wants cluster; then
    pace
    start_cluster "cluster-$run"
    watch=(--watch "nats=$NATS_PID" --watch "node-a=${PID[a]}" --watch "node-b=${PID[b]}" --watch "node-c=${PID[c]}")
    common=(--target tcphub --addr "127.0.0.1:${TCP[a]}" --server-pid "${PID[a]}" "${watch[@]}")
    record "$run" direct-local direct "${common[@]}" --http-addr "127.0.0.1:${HTTP[a]}" \
      --clients "$DIRECT_N" --inflight "$INFLIGHT" --messages "$MESSAGES"
    record "$run" direct-remote direct "${common[@]}" --http-addr "127.0.0.1:${HTTP[b]}" \
      --clients "$DIRECT_N" --inflight "$INFLIGHT" --messages "$MESSAGES"
    # One send at a time: the latency a call through another node adds, without queueing.
    record "$run" direct-local-1 direct "${common[@]}" --http-addr "127.0.0.1:${HTTP[a]}" \
      --clients "$DIRECT_N" --inflight 1 --messages "$SINGLE_MESSAGES"
    record "$run" direct-remote-1 direct "${common[@]}" --http-addr "127.0.0.1:${HTTP[b]}" \
      --clients "$DIRECT_N" --inflight 1 --messages "$SINGLE_MESSAGES"
    record "$run" cluster-fanout fanout "${common[@]}" --http-addr "127.0.0.1:${HTTP[a]}" \
      --node-addr "127.0.0.1:${TCP[a]}" --node-addr "127.0.0.1:${TCP[b]}" --node-addr "127.0.0.1:${TCP[c]}" \
      --clients "$FANOUT_N" --rounds "$ROUNDS" --warmup "$WARMUP"
    stop_all
  fi
  if wants idle; then
    pace
    start_cluster "idle-$run"
    # One load-tool process per node, started together; each holds its clients until all
    # three have seen the cluster's total. Source addresses are disjoint (19 per process).
    tools=() n=0
    for node in a b c; do
      listings=0
      [ $n != 0 ] || listings=5
      record "$run" "idle-$node" cluster-idle --target tcphub --addr "127.0.0.1:${TCP[$node]}" \
        --http-addr "127.0.0.1:${HTTP[$node]}" --server-pid "${PID[$node]}" --watch "nats=$NATS_PID" \
        --clients "$IDLE_N" --first-client $((n * IDLE_N)) --first-source $((2 + 19 * n)) \
        --cluster-total $((3 * IDLE_N)) --listings "$listings" --timeout-secs 30 \
        --settle-secs "$SETTLE" --hold-secs "$HOLD" &
      tools+=("$!")
      n=$((n + 1))
    done
    for tool in "${tools[@]}"; do wait "$tool" || true; done
    stop_all
  fi
  if wants failover; then
    pace
    failover_run "$run"
  fi
done

{
  echo "{"
  echo "\"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\", \"quick\": $QUICK, \"runs\": $RUNS,"
  echo "\"fanout_clients\": $FANOUT_N, \"direct_clients\": $DIRECT_N, \"messages\": $MESSAGES, \"inflight\": $INFLIGHT,"
  echo "\"rounds\": $ROUNDS, \"idle_clients_per_node\": $IDLE_N, \"failover_clients\": $FAILOVER_N,"
  echo "\"server_cpus\": \"$SERVER_CPUS\", \"tool_cpus\": \"$TOOL_CPUS\","
  echo "\"nproc\": $(nproc), \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\","
  echo "\"memory\": \"$(free -g | awk '/Mem:/ {print $2}') GiB\", \"kernel\": \"$(uname -r)\","
  echo "\"tcphub\": \"$TCPHUB_REV\", \"nats\": \"$("$NATS" --version)\", \"haproxy\": \"$(haproxy -v | head -1 | cut -d' ' -f1-3)\""
  echo "}"
} >"$OUT/machine.json"
python3 "$HERE/cluster_report.py" "$OUT" | tee "$OUT/report.md"
echo "== results in $OUT"
if grep -q '"ok":false' "$RESULTS"; then
  echo "cluster bench: some scenario runs failed (\"ok\":false in $RESULTS)" >&2
  exit 1
fi
