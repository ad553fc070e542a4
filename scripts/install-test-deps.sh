#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: Chromium (for atmosphere.js in a real
# browser), redis-server and haproxy (cluster tests), docker-compose (checks the compose file;
# no Docker engine needed), prometheus for its promtool (checks deploy/prometheus.yml and the
# dashboard's queries), kubernetes-validate from PyPI (checks the manifests offline; its PyYAML
# also reads the YAML files for tests/deploy.rs), and the Node packages of web/ and e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
command -v haproxy >/dev/null || need+=(haproxy)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v kubernetes-validate >/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
for dir in web e2e; do
  if [ -f "$dir/package.json" ]; then
    (cd "$dir" && { [ -f package-lock.json ] && npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent; })
  fi
done
