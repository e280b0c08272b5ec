#!/usr/bin/env bash
# The same two services scaled out over NATS: a nats-server, N instances of the user
# microservice in one queue group, and the HTTP gateway calling them over NATS. Calls the
# gateway's /whoami to show the spread, then /sum once.
#   scripts/demo-nats.sh            3 instances, keep running until Ctrl-C
#   INSTANCES=5 scripts/demo-nats.sh
#   scripts/demo-nats.sh --once     show the spread and stop (a smoke test)
# Needs nats-server on PATH (Debian/Ubuntu: apt-get install -y nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_PORT="${NATS_PORT:-4222}"
GATEWAY_PORT="${GATEWAY_PORT:-3000}"
INSTANCES="${INSTANCES:-3}"
NATS_URL="nats://127.0.0.1:$NATS_PORT"

nats_bin=$(command -v nats-server || ls /usr/sbin/nats-server 2>/dev/null || true)
if [ -z "$nats_bin" ]; then
  echo "nats-server not found: install it (apt-get install -y nats-server) or put it on PATH" >&2
  exit 1
fi

. scripts/demo-common.sh
"$nats_bin" -a 127.0.0.1 -p "$NATS_PORT" >"$log_dir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q 'Server is ready' "$log_dir/nats.log" && break; sleep 0.1; done
grep -q 'Server is ready' "$log_dir/nats.log" || { cat "$log_dir/nats.log" >&2; exit 1; }

start_instances NATS_URL="$NATS_URL"
start_gateway NATS_URL="$NATS_URL"

echo "nats-server on $NATS_URL, $INSTANCES user service instances (queue group user-service),"
echo "gateway (HTTP) on 127.0.0.1:$GATEWAY_PORT"
show_spread_and_sum

if [ "${1:-}" = "--once" ]; then exit 0; fi
echo
echo "Try: curl 'http://127.0.0.1:$GATEWAY_PORT/sum?num=10,20,30'; stop an instance (kill ${pids[1]}) and call again."
echo "(Ctrl-C to stop everything)"
wait "${pids[0]}"
