#!/usr/bin/env bash
# Benchmark the cluster on loopback (scripts/cluster.sh: Redis, three nodes, HAProxy):
#   - 5,000 WebSocket subscribers of one topic spread over two nodes, one publisher on the
#     first node at 20 msg/s;
#   - 500 long-polling subscribers whose every poll goes through the balancer, 20 msg/s.
# Server CPU is the sum of the nodes and Redis (HAProxy's share is printed apart for the
# long-polling row). The last column is how late the load generator's own timers fire: the part
# of the latency that is the load generator itself (its subscribers share LOADGEN_THREADS threads).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nimbus -p nimbus-bench >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-18900}
DURATION=${DURATION:-15}
# Subscriber threads of the load generator (one readiness loop each, its share of the subscribers).
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
DIR=target/bench-cluster
export NIMBUS_BIN=$PWD/target/release/nimbus RUST_LOG=warn
export NIMBUS_ARGS="${NIMBUS_ARGS:---workers 1}"

up() { scripts/cluster.sh up --dir "$DIR" --port "$PORT" >/dev/null; }
down() { scripts/cluster.sh down --dir "$DIR"; }
trap down EXIT
pid() { cat "$DIR/$1.pid"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| scenario | subscribers | rate | delivered msg/s | lost | dups | p50 ms | p99 ms | arrival p50 / p99 ms | server CPU µs/delivery (nodes + Redis) | server CPU | loadgen CPU | loadgen timer lag p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
# This machine's floor at this moment (the shared VM's speed drifts): the same 5,000 subscribers
# on one fanout-floor process (bench/src/bin/fanout-floor.rs), just before the cluster row.
./target/release/fanout-floor --bind "127.0.0.1:$PORT" --workers 2 >/dev/null 2>&1 &
floor=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --scenario ws --subscribers 5000 --rate 20 --duration-secs "$DURATION" \
  --label "websocket, fanout-floor (1 process, no cluster)" --addr "127.0.0.1:$PORT" --server-pid "$floor" || true
kill "$floor"; wait "$floor" 2>/dev/null || true
up
./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --scenario ws --subscribers 5000 --rate 20 --duration-secs "$DURATION" \
  --label "websocket, 2 nodes" \
  --addr "127.0.0.1:$((PORT + 1))" --addr "127.0.0.1:$((PORT + 2))" --publish-addr "127.0.0.1:$((PORT + 1))" \
  --server-pid "$(pid nimbus1)" --server-pid "$(pid nimbus2)" --server-pid "$(pid redis)" || true
down
up
haproxy_before=$(ticks "$(pid haproxy)")
./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --scenario longpoll --subscribers 500 --rate 20 --duration-secs "$DURATION" \
  --label "long-polling via the balancer, 3 nodes" \
  --addr "127.0.0.1:$PORT" --publish-addr "127.0.0.1:$((PORT + 1))" \
  --server-pid "$(pid nimbus1)" --server-pid "$(pid nimbus2)" --server-pid "$(pid nimbus3)" \
  --server-pid "$(pid redis)" || true
haproxy_after=$(ticks "$(pid haproxy)")
echo
echo "HAProxy CPU during the long-polling row (whole run, not counted above): $(( (haproxy_after - haproxy_before) * 10 )) ms"
