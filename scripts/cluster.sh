#!/usr/bin/env bash
# The docker-compose topology without Docker, on loopback: one redis-server, three Nimbus
# nodes and HAProxy with deploy/haproxy.cfg (the very file docker-compose.yml mounts).
#
#   scripts/cluster.sh up   [--dir DIR] [--port PORT]   start; the balancer listens on PORT
#   scripts/cluster.sh down [--dir DIR]                 stop everything started in DIR
#   scripts/cluster.sh kill-node N [--dir DIR]          kill -9 node N (1..3)
#   scripts/cluster.sh stop-node N [--dir DIR]          SIGTERM node N (graceful drain)
#   scripts/cluster.sh start-node N [--dir DIR]         start node N again
#   scripts/cluster.sh stop-redis | start-redis [--dir DIR]
#
# Ports: PORT (balancer), PORT+1..PORT+3 (nodes), PORT+9 (Redis), PORT+10 (HAProxy stats).
# The nimbus binary is $NIMBUS_BIN, or target/release/nimbus. Extra node flags: $NIMBUS_ARGS.
# Logs and pid files go to DIR (default: target/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

command=${1:-}
shift || true
node_number=""
case "$command" in
  kill-node|stop-node|start-node) node_number=${1:?node number}; shift ;;
esac
dir=target/cluster
port=8080
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ -f "$dir/port" ] && [ "$command" != up ] && port=$(cat "$dir/port")
bin=${NIMBUS_BIN:-$PWD/target/release/nimbus}
redis_port=$((port + 9))

wait_http() { # url seconds
  for _ in $(seq 1 $(($2 * 10))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

start_redis() {
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --daemonize no --logfile "$dir/redis.log" &
  echo $! > "$dir/redis.pid"
  for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis did not start" >&2
  return 1
}

start_node() { # n
  local n=$1
  # shellcheck disable=SC2086
  # The balancer is on loopback: its X-Forwarded-For names the client (an environment
  # variable rather than a flag, so that builds older than the setting still start).
  NIMBUS_TRUSTED_PROXIES=${NIMBUS_TRUSTED_PROXIES-127.0.0.1/32} RUST_LOG=${RUST_LOG:-info} \
    "$bin" --bind "127.0.0.1:$((port + n))" --node-id "nimbus$n" \
    --redis-url "redis://127.0.0.1:$redis_port/" ${NIMBUS_ARGS:-} >>"$dir/nimbus$n.log" 2>&1 &
  echo $! > "$dir/nimbus$n.pid"
  wait_http "http://127.0.0.1:$((port + n))/readyz" 20
}

stop_pid() { # file signal
  [ -f "$1" ] || return 0
  kill "-${2:-TERM}" "$(cat "$1")" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$(cat "$1")" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$(cat "$1")" 2>/dev/null || true
  rm -f "$1"
}

case "$command" in
  up)
    echo "$port" > "$dir/port"
    start_redis
    for n in 1 2 3; do start_node "$n"; done
    LB_BIND="127.0.0.1:$port" HAPROXY_STATS="127.0.0.1:$((port + 10))" \
      NIMBUS_NODE1="127.0.0.1:$((port + 1))" NIMBUS_NODE2="127.0.0.1:$((port + 2))" \
      NIMBUS_NODE3="127.0.0.1:$((port + 3))" \
      haproxy -f deploy/haproxy.cfg -db >"$dir/haproxy.log" 2>&1 &
    echo $! > "$dir/haproxy.pid"
    wait_http "http://127.0.0.1:$port/readyz" 10
    echo "cluster up: balancer http://127.0.0.1:$port/ (nodes on $((port + 1))-$((port + 3)), redis on $redis_port)"
    ;;
  down)
    stop_pid "$dir/haproxy.pid"
    for n in 1 2 3; do stop_pid "$dir/nimbus$n.pid"; done
    stop_pid "$dir/redis.pid"
    ;;
  kill-node) stop_pid "$dir/nimbus$node_number.pid" KILL ;;
  stop-node) stop_pid "$dir/nimbus$node_number.pid" TERM ;;
  start-node) start_node "$node_number" ;;
  stop-redis) stop_pid "$dir/redis.pid" ;;
  start-redis) start_redis ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
