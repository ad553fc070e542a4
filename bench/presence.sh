#!/usr/bin/env bash
# Presence at scale on the local cluster (scripts/cluster.sh: Redis, three nodes): a room of
# MEMBERS users (default 50,000) spread over the three nodes, one SSE connection each. Prints how
# fast the room fills and empties, the latency of the online count and of one member page, what
# reading the whole list costs, and Redis memory per member (INFO memory before and after).
# See bench/src/bin/presence-bench.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nimbus -p nimbus-bench >/dev/null 2>&1
# 50,000 connections need as many descriptors in the load generator (root may raise the hard limit).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-18950}
MEMBERS=${MEMBERS:-50000}
DIR=target/bench-presence
KEY=bench-key
SECRET=bench-secret
export NIMBUS_BIN=$PWD/target/release/nimbus RUST_LOG=warn
export NIMBUS_ARGS="--workers 1 --api-key $KEY --jwt-hmac-secret $SECRET --reconnect-window-secs 1"
trap 'scripts/cluster.sh down --dir "$DIR" >/dev/null 2>&1 || true' EXIT
scripts/cluster.sh up --dir "$DIR" --port "$PORT" >/dev/null
redis_memory() { redis-cli -p "$((PORT + 9))" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }
before=$(redis_memory)
nodes="http://127.0.0.1:$((PORT + 1)),http://127.0.0.1:$((PORT + 2)),http://127.0.0.1:$((PORT + 3))"
rm -f "$DIR/release"
# One holder per node (each process may open only so many descriptors), its share of the room.
share=$(( (MEMBERS + 2) / 3 ))
for n in 1 2 3; do
  first=$(( (n - 1) * share ))
  count=$(( MEMBERS - first < share ? MEMBERS - first : share ))
  ./target/release/presence-bench --hold "http://127.0.0.1:$((PORT + n))" --first "$first" --count "$count" \
    --jwt-secret "$SECRET" --release-file "$DIR/release" &
done
# The Redis memory is read while the room is full: the measurer pauses for it.
./target/release/presence-bench --nodes "$nodes" --api-key "$KEY" --jwt-secret "$SECRET" \
  --members "$MEMBERS" --memory-probe "$DIR/full" --release-file "$DIR/release" &
bench=$!
for _ in $(seq 1200); do [ -e "$DIR/full" ] && break; sleep 0.1; kill -0 "$bench" 2>/dev/null || break; done
if [ -e "$DIR/full" ]; then
  full=$(redis_memory)
  touch "$DIR/measured"
fi
wait "$bench"
wait
rm -f "$DIR/full" "$DIR/measured" "$DIR/release"
echo "| Redis memory per member | $(( (full - before) / MEMBERS )) B ($(( (full - before) / 1024 / 1024 )) MiB for $MEMBERS) |"
