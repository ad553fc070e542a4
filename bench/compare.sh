#!/usr/bin/env bash
# Compare two builds of nimbus on the per-delivery hot path, against the floor of the same
# moment: ROUNDS rounds (default 3), each running fanout-floor, then BEFORE, then this checkout's
# build, on the WebSocket fan-out of one node (5,000 subscribers at 20 msg/s) and of the cluster
# (5,000 subscribers over two nodes and Redis). The shared VM's speed drifts by 15-30 % from one
# minute to the next, so only rows of one round are compared, and the medians close the output.
#   BEFORE=/path/to/old/nimbus bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE:?set BEFORE to the nimbus binary to compare with}"
cargo build --release -p nimbus -p nimbus-bench >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-18700}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
AFTER=$PWD/target/release/nimbus
DIR=target/bench-compare
export RUST_LOG=warn NIMBUS_ARGS="${NIMBUS_ARGS:---workers 1}"
rows=$(mktemp)
trap 'scripts/cluster.sh down --dir "$DIR" >/dev/null 2>&1 || true; rm -f "$rows"' EXIT

bench() { ./target/release/nimbus-bench --threads "$LOADGEN_THREADS" --scenario ws --subscribers 5000 --rate 20 --duration-secs "$DURATION" "$@" | tee -a "$rows" || true; }
single() { # BINARY LABEL
  "$1" --bind "127.0.0.1:$PORT" --workers 2 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  bench --label "$2" --addr "127.0.0.1:$PORT" --server-pid "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
cluster() { # BINARY LABEL
  NIMBUS_BIN=$1 scripts/cluster.sh up --dir "$DIR" --port "$PORT" >/dev/null
  local p1 p2 r
  p1=$(cat "$DIR/nimbus1.pid"); p2=$(cat "$DIR/nimbus2.pid"); r=$(cat "$DIR/redis.pid")
  bench --label "$2" --addr "127.0.0.1:$((PORT + 1))" --addr "127.0.0.1:$((PORT + 2))" \
    --publish-addr "127.0.0.1:$((PORT + 1))" --server-pid "$p1" --server-pid "$p2" --server-pid "$r"
  scripts/cluster.sh down --dir "$DIR" >/dev/null
}

echo "| scenario | subscribers | rate | delivered msg/s | lost | dups | p50 ms | p99 ms | arrival p50 / p99 ms | server CPU µs/delivery | server CPU | loadgen CPU | loadgen timer lag p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  single ./target/release/fanout-floor "floor, 1 process"
  single "$BEFORE" "before, 1 node"
  single "$AFTER" "after, 1 node"
  single ./target/release/fanout-floor "floor, 1 process (cluster round)"
  cluster "$BEFORE" "before, 2 nodes"
  cluster "$AFTER" "after, 2 nodes"
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
for label in "floor, 1 process" "before, 1 node" "after, 1 node" "floor, 1 process (cluster round)" "before, 2 nodes" "after, 2 nodes"; do
  sel=$(grep -F "| $label |" "$rows" || true)
  [ -n "$sel" ] || continue
  field() { echo "$sel" | awk -F'|' -v f="$1" '{ gsub(/ /, "", $f); print $f }'; }
  echo "$label, median of $(echo "$sel" | wc -l) rounds: $(field 11 | median) µs/delivery, p99 $(field 9 | median) ms, lost $(field 6 | awk '{ s += $1 } END { print s }') in all"
done
