#!/usr/bin/env bash
# End-to-end tests: the real atmosphere.js 5.0.45 in headless Chromium against target/release/nimbus.
# Expects `cargo build --release` and scripts/install-test-deps.sh to have run.
set -euo pipefail
cd "$(dirname "$0")"
[ -x ../target/release/nimbus ] || { echo "build the node first: cargo build --release" >&2; exit 1; }
# The chat test's Cettia member runs the reference client (conformance/, Node 10).
(cd ../conformance && [ -d node_modules/cettia-protocol ] || npm ci --no-audit --no-fund --silent)
exec timeout 900 node --test --test-concurrency=1 --test-timeout=120000 tests/
