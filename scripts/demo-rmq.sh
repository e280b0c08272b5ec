#!/usr/bin/env bash
# The same two services scaled out over RabbitMQ: a throw-away rabbitmq-server node,
# N instances of the user microservice competing for the queue `user_service`, and the
# HTTP gateway calling them over RabbitMQ. Calls the gateway's /whoami to show the spread,
# then /sum once.
#   scripts/demo-rmq.sh            3 instances, keep running until Ctrl-C
#   INSTANCES=5 scripts/demo-rmq.sh
#   scripts/demo-rmq.sh --once     show the spread and stop (a smoke test)
# Needs rabbitmq-server (Debian/Ubuntu: apt-get install -y rabbitmq-server); the node runs
# on RMQ_PORT (default 5672) with its data in a temporary directory, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RMQ_PORT="${RMQ_PORT:-5672}"
GATEWAY_PORT="${GATEWAY_PORT:-3000}"
INSTANCES="${INSTANCES:-3}"
RMQ_URL="amqp://127.0.0.1:$RMQ_PORT"

rabbit=/usr/lib/rabbitmq/bin/rabbitmq-server
if [ ! -x "$rabbit" ]; then
  echo "rabbitmq-server not found: install it (apt-get install -y rabbitmq-server)" >&2
  exit 1
fi

. scripts/demo-common.sh
node_dir="$log_dir/rabbit"
mkdir -p "$node_dir/mnesia" "$node_dir/log" "$node_dir/home"
echo "[]." >"$node_dir/enabled_plugins"
printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$RMQ_PORT" >"$node_dir/rabbitmq.conf"
# Its own process group (setsid), so stopping it stops Erlang and its helpers together.
HOME="$node_dir/home" RABBITMQ_NODENAME="nestling-demo$RMQ_PORT@localhost" \
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$RMQ_PORT" \
  RABBITMQ_DIST_PORT="$((RMQ_PORT + 20000))" RABBITMQ_MNESIA_BASE="$node_dir/mnesia" \
  RABBITMQ_LOG_BASE="$node_dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$node_dir/enabled_plugins" \
  RABBITMQ_CONFIG_FILE="$node_dir/rabbitmq" RABBITMQ_LOGS="$node_dir/log/node.log" \
  setsid sh -c 'cd "$1" && exec "$2"' sh "$node_dir" "$rabbit" >/dev/null 2>&1 &
rabbit_pid=$!
trap 'kill -TERM -- "-$rabbit_pid" 2>/dev/null || true; cleanup; rm -rf "$log_dir"' EXIT INT TERM
for _ in $(seq 1 600); do (echo >"/dev/tcp/127.0.0.1/$RMQ_PORT") 2>/dev/null && break; sleep 0.1; done
(echo >"/dev/tcp/127.0.0.1/$RMQ_PORT") 2>/dev/null || { cat "$node_dir/log/node.log" >&2; exit 1; }

start_instances RMQ_URL="$RMQ_URL"
start_gateway USER_SERVICE_URL="$RMQ_URL?queue=user_service"

echo "rabbitmq-server on $RMQ_URL, $INSTANCES user service instances consuming queue user_service,"
echo "gateway (HTTP) on 127.0.0.1:$GATEWAY_PORT"
show_spread_and_sum

if [ "${1:-}" = "--once" ]; then exit 0; fi
echo
echo "Try: curl 'http://127.0.0.1:$GATEWAY_PORT/sum?num=10,20,30'; kill -9 ${pids[0]} (one instance) and call again:"
echo "what it held goes back to the queue and another instance answers. (Ctrl-C to stop everything)"
wait "${pids[0]}"
