#!/usr/bin/env bash
# Benchmark the cluster on loopback (scripts/cluster.sh: Redis, three nodes, HAProxy):
#   - 5,000 WebSocket subscribers of one topic spread over two nodes, one publisher on the
#     first node at 20 msg/s;
#   - 500 long-polling subscribers whose every poll goes through the balancer, 20 msg/s.
# Server CPU is the sum of the nodes and Redis (HAProxy's share is printed apart for the
# long-polling row). "arrival" is publish → the kernel's receive stamp in the subscriber's
# socket, the server's share of the latency; the last column is how late the load generator's own
# timers fire (its subscribers share LOADGEN_THREADS threads). The WebSocket rows run ROUNDS
# times (default 3), alternating with the floor, and their medians close the output.
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
pid() { cat "$DIR/$1.pid"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The shared VM's speed drifts from one minute to the next, so the WebSocket rows run ROUNDS
# times, the floor and the cluster alternating, and their medians are printed after the rows.
ROUNDS=${ROUNDS:-3}
ws_rows=$(mktemp)
trap 'down; rm -f "$ws_rows"' EXIT

echo "| scenario | subscribers | rate | delivered msg/s | lost | dups | p50 ms | p99 ms | arrival p50 / p99 ms | server CPU µs/delivery (nodes + Redis) | server CPU | loadgen CPU | loadgen timer lag p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  # This machine's floor at this moment: the same 5,000 subscribers on one fanout-floor process
  # (bench/src/bin/fanout-floor.rs), just before the cluster row.
  ./target/release/fanout-floor --bind "127.0.0.1:$PORT" --workers 2 >/dev/null 2>&1 &
  floor=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  ./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --scenario ws --subscribers 5000 --rate 20 --duration-secs "$DURATION" \
    --label "websocket, fanout-floor (1 process, no cluster)" --addr "127.0.0.1:$PORT" --server-pid "$floor" | tee -a "$ws_rows" || true
  kill "$floor"; wait "$floor" 2>/dev/null || true
  up
  ./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --scenario ws --subscribers 5000 --rate 20 --duration-secs "$DURATION" \
    --label "websocket, 2 nodes" \
    --addr "127.0.0.1:$((PORT + 1))" --addr "127.0.0.1:$((PORT + 2))" --publish-addr "127.0.0.1:$((PORT + 1))" \
    --server-pid "$(pid nimbus1)" --server-pid "$(pid nimbus2)" --server-pid "$(pid redis)" | tee -a "$ws_rows" || true
  down
done
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

# Medians of the WebSocket rows (columns: p99 = 9th field, arrival = 10th, CPU = 11th).
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for label in "websocket, fanout-floor" "websocket, 2 nodes"; do
  rows=$(grep -F "| $label" "$ws_rows" || true)
  [ -n "$rows" ] || continue
  field() { echo "$rows" | awk -F'|' -v f="$1" '{ gsub(/ /, "", $f); print $f }'; }
  echo "$label, median of $(echo "$rows" | wc -l) rounds: $(field 11 | median) µs/delivery, p99 $(field 9 | median) ms" \
    "(arrival p99 $(field 10 | sed 's|.*/||' | median) ms), lost $(field 6 | awk '{ s += $1 } END { print s }') in all"
done
