#!/usr/bin/env bash
# The chat-hosting shape (issue 27): ROOMS rooms of MEMBERS members over three nodes and one
# Redis, a room's members on different nodes, every member publishing a 90-byte message into its
# room every INTERVAL_MS; Nimbus (Atmosphere over WebSocket) beside socketioxide with its Redis
# adapter (../shared/peers/sioxide), the same load generator (bench/src/bin/chat-bench.rs),
# alternating, ROUNDS rounds of DURATION seconds each. Then the overload curve: the same rooms
# with shorter intervals (CURVE, in ms), both servers at each point, until they break.
#
#   bench/chat.sh                       ROUNDS=3 DURATION=30 by default
#   BIG_ROOM=1000 bench/chat.sh         plus one room of 1,000 members at 2 msg/s
#   CURVE="" bench/chat.sh              no overload curve
#   BEFORE=/path/to/old/nimbus bench/chat.sh   also a row of that build in each round
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin nimbus >/dev/null 2>&1
cargo build --release -p nimbus-bench >/dev/null 2>&1
cargo build --release --manifest-path ../shared/peers/sioxide/Cargo.toml --target-dir target/peers >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-19100}
DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-3}
ROOMS=${ROOMS:-1000}
MEMBERS=${MEMBERS:-5}
INTERVAL_MS=${INTERVAL_MS:-2000}
BIG_ROOM=${BIG_ROOM:-0}
CURVE=${CURVE-1000 700 500 350}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
DIR=target/bench-chat
REDIS_PORT=$((PORT + 9))
# One worker per node (three nodes share two cores). Every member comes from 127.0.0.1, and an
# anonymous client's publish rate and history share are counted per address: both off here, or
# the limits would close the members (as they should, for one address sending this much).
NIMBUS=$PWD/target/release/nimbus
BEFORE=${BEFORE:-}
export RUST_LOG=warn
export NIMBUS_ARGS="${NIMBUS_ARGS:---workers 1 --max-publishes-per-sec 0 --history-share-bytes 0}"
SIOXIDE=$PWD/target/peers/release/sioxide
mkdir -p "$DIR"

wait_port() { # port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

nimbus_up() { NIMBUS_BIN=$1 scripts/cluster.sh up --dir "$DIR" --port "$PORT" >/dev/null; }
nimbus_down() { scripts/cluster.sh down --dir "$DIR"; }

sioxide_up() {
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --logfile "$DIR/redis.log" &
  echo $! >"$DIR/redis.pid"
  wait_port "$REDIS_PORT"
  for n in 1 2 3; do
    PORT=$((PORT + n)) REDIS_URL="redis://127.0.0.1:$REDIS_PORT/?protocol=resp3" \
      "$SIOXIDE" >>"$DIR/sioxide$n.log" 2>&1 &
    echo $! >"$DIR/sioxide$n.pid"
    wait_port $((PORT + n))
  done
}
sioxide_down() {
  for name in sioxide1 sioxide2 sioxide3 redis; do
    [ -f "$DIR/$name.pid" ] || continue
    kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
    while kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; do sleep 0.1; done
    rm -f "$DIR/$name.pid"
  done
}
trap 'nimbus_down; sioxide_down' EXIT

pid() { cat "$DIR/$1.pid"; }

# One row: server (nimbus | socketio), interval (ms), label[, nimbus binary].
row() {
  local server=$1 interval=$2 label=$3 prefix
  if [ "$server" = nimbus ]; then nimbus_up "${4:-$NIMBUS}"; prefix=nimbus; else sioxide_up; prefix=sioxide; fi
  ./target/release/chat-bench --server "$server" --threads "$LOADGEN_THREADS" \
    --rooms "$ROOMS" --members "$MEMBERS" --interval-ms "$interval" \
    --big-room "$BIG_ROOM" --duration-secs "$DURATION" --label "$label" \
    --addr "127.0.0.1:$((PORT + 1))" --addr "127.0.0.1:$((PORT + 2))" --addr "127.0.0.1:$((PORT + 3))" \
    --node-pid "$(pid "${prefix}1")" --node-pid "$(pid "${prefix}2")" --node-pid "$(pid "${prefix}3")" \
    --redis-pid "$(pid redis)" || true
  if [ "$server" = nimbus ]; then nimbus_down; else sioxide_down; fi
}

rows=$(mktemp)
trap 'nimbus_down; sioxide_down; rm -f "$rows"' EXIT
./target/release/chat-bench --header
for _ in $(seq "$ROUNDS"); do
  row socketio "$INTERVAL_MS" socketioxide | tee -a "$rows"
  row nimbus "$INTERVAL_MS" nimbus | tee -a "$rows"
  if [ -n "$BEFORE" ]; then row nimbus "$INTERVAL_MS" "nimbus before" "$BEFORE" | tee -a "$rows"; fi
done
for interval in $CURVE; do
  row socketio "$interval" "socketioxide, every ${interval} ms"
  row nimbus "$interval" "nimbus, every ${interval} ms"
done

# Medians of the rounds (awk fields: p50 9, p99 10, node 11, Redis 12, node + Redis 13).
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
for label in socketioxide nimbus "nimbus before"; do
  lines=$(grep -F "| $label |" "$rows" || true)
  [ -n "$lines" ] || continue
  field() { echo "$lines" | awk -F'|' -v f="$1" '{ gsub(/ /, "", $f); print $f }'; }
  echo "$label, median of $(echo "$lines" | wc -l) rounds: node + Redis $(field 13 | median) µs/delivery" \
    "(node $(field 11 | median), Redis $(field 12 | median)), p50 $(field 9 | median) ms, p99 $(field 10 | median) ms," \
    "lost $(field 6 | awk '{ s += $1 } END { print s }') in all"
done
