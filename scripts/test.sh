#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need, then runs the Rust
# checks and tests and the end-to-end tests with the real clients. Prints each stage's wall
# time and the total at the end (also when a stage fails).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
timings=()
report() {
  local status=$?
  echo
  echo "== stage times =="
  printf '%s\n' "${timings[@]}"
  echo "total: $((SECONDS - started)) s"
  exit "$status"
}
trap report EXIT

# Run one stage, noting its wall time.
stage() {
  local name=$1 t0=$SECONDS
  shift
  echo "== $name =="
  "$@"
  timings+=("$(printf '%-22s %5d s' "$name" $((SECONDS - t0)))")
}

stage "install" scripts/install-test-deps.sh
stage "fmt" cargo fmt --all -- --check
stage "clippy" cargo clippy --all-targets -- -D warnings
stage "doc" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p nimbus
stage "build" cargo build --release --all-targets
stage "cargo test" cargo test --release
stage "cettia conformance" scripts/cettia-conformance.sh
stage "cettia auth" scripts/cettia-auth.sh
stage "cettia cluster" scripts/cettia-cluster.sh
if [ -x e2e/run.sh ]; then
  stage "e2e" e2e/run.sh
fi
