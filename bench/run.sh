#!/usr/bin/env bash
# Benchmark one Nimbus node on loopback: idle memory and fan-out cost. Prints a markdown table.
# Each scenario gets a fresh node; the load generator is a separate process.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nimbus -p nimbus-bench >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-18800}
DURATION=${DURATION:-15}
# Subscriber threads of the load generator (one readiness loop each, its share of the subscribers).
LOADGEN_THREADS=${LOADGEN_THREADS:-2}

# scenario SERVER ARGS...: SERVER is `nimbus`, or `fanout-floor` (bench/src/bin/fanout-floor.rs,
# the smallest fan-out this load generator can drive: this machine's floor at this moment).
scenario() {
  local server=$1
  shift
  local args=("$@")
  "./target/release/$server" --bind "127.0.0.1:$PORT" --workers 2 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  ./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --addr "127.0.0.1:$PORT" --server-pid "$pid" --duration-secs "$DURATION" "${args[@]}" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| scenario | subscribers | rate | delivered msg/s | lost | dups | p50 ms | p99 ms | arrival p50 / p99 ms | server CPU µs/delivery | server CPU | loadgen CPU | loadgen timer lag p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
scenario nimbus --scenario idle --subscribers 10000
# Each WebSocket row is preceded by the floor's, measured minutes apart: the shared VM's speed
# drifts, and Nimbus's cost is best read against the floor of the same moment.
scenario fanout-floor --scenario ws --subscribers 2000 --rate 50 --label "websocket fan-out, fanout-floor"
scenario nimbus --scenario ws --subscribers 2000 --rate 50
scenario fanout-floor --scenario ws --subscribers 5000 --rate 20 --label "websocket fan-out, fanout-floor"
scenario nimbus --scenario ws --subscribers 5000 --rate 20
scenario nimbus --scenario longpoll --subscribers 500 --rate 20
