#!/usr/bin/env bash
# Benchmark one Nimbus node on loopback: idle memory and fan-out cost. Prints a markdown table.
# Each scenario gets a fresh node; the load generator is a separate, single-threaded process.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nimbus -p nimbus-bench >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-18800}
DURATION=${DURATION:-15}

scenario() {
  local args=("$@")
  ./target/release/nimbus --bind "127.0.0.1:$PORT" --workers 2 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  ./target/release/nimbus-bench --addr "127.0.0.1:$PORT" --server-pid "$pid" --duration-secs "$DURATION" "${args[@]}" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| scenario | subscribers | rate | delivered msg/s | lost | dups | p50 ms | p99 ms | server CPU µs/delivery | server CPU | loadgen CPU | loadgen timer lag p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
scenario --scenario idle --subscribers 10000
scenario --scenario ws --subscribers 2000 --rate 50
scenario --scenario ws --subscribers 5000 --rate 20
scenario --scenario longpoll --subscribers 500 --rate 20
