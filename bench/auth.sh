#!/usr/bin/env bash
# What signing clients in costs: ROUNDS rounds (default 3), each running one node with anonymous
# clients, then one with `--jwt-hmac-secret` and every client (5,000 WebSocket subscribers, the
# publisher) presenting an HS256 token, on the WebSocket fan-out at 20 msg/s. Prints the rows,
# each run's connect rate (connections per second while the subscribers open, handshake
# included) and the medians: server CPU per delivery and connect rate, auth off and on. Tokens
# are checked once per connection, never per message, so delivery should not feel them.
# The shared VM drifts from minute to minute: only rows of one round are compared.
#   bench/auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nimbus -p nimbus-bench >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
PORT=${PORT:-18750}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
SECRET=bench-auth-secret-0123456789abcdef
export RUST_LOG=warn
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT

run() { # LABEL [NODE FLAGS...] -- [BENCH FLAGS...]
  local label=$1 node=() bench=()
  shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do node+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  bench=("$@")
  ./target/release/nimbus --bind "127.0.0.1:$PORT" --workers 2 "${node[@]}" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  # What an anonymous client gets here: 401 shows the node checks tokens.
  echo "anonymous | $label | $(curl -s -o /dev/null -w '%{http_code}' \
    "http://127.0.0.1:$PORT/bench?X-Atmosphere-Transport=long-polling&X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7")"
  ./target/release/nimbus-bench --threads 2 --scenario ws --subscribers 5000 --rate 20 \
    --duration-secs "$DURATION" --label "$label" --addr "127.0.0.1:$PORT" --server-pid "$pid" \
    "${bench[@]}" | tee -a "$rows" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| scenario | subscribers | rate | delivered msg/s | lost | dups | p50 ms | p99 ms | arrival p50 / p99 ms | server CPU µs/delivery | server CPU | loadgen CPU | loadgen timer lag p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  run "auth off"
  run "auth on (JWT)" --jwt-hmac-secret "$SECRET" -- --jwt-secret "$SECRET"
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
for label in "auth off" "auth on (JWT)"; do
  sel=$(grep -F "| $label |" "$rows" | grep -v '^connect' || true)
  [ -n "$sel" ] || continue
  cpu=$(echo "$sel" | awk -F'|' '{ gsub(/ /, "", $11); print $11 }' | median)
  lost=$(echo "$sel" | awk -F'|' '{ gsub(/ /, "", $6); s += $6 } END { print s }')
  rate=$(grep -F "connect | $label |" "$rows" | awk -F'|' '{ gsub(/[ \/s]/, "", $4); print $4 }' | median)
  echo "$label, median of $(echo "$sel" | wc -l) rounds: $cpu µs/delivery, $rate connections/s, lost $lost in all"
done
