#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need, then runs the Rust
# checks and tests and the end-to-end tests with the real clients.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p nimbus
cargo build --release --all-targets
cargo test --release
scripts/cettia-conformance.sh
scripts/cettia-auth.sh
scripts/cettia-cluster.sh
if [ -x e2e/run.sh ]; then
  e2e/run.sh
fi
