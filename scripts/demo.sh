#!/usr/bin/env bash
# Runs the tutorial's two services in Rust: the user microservice (TCP, Nest wire, :8888)
# and the HTTP gateway (:3000) that calls it, then calls the gateway once.
#   scripts/demo.sh          keep both running until Ctrl-C
#   scripts/demo.sh --once   call once and stop (used by CI as a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
USER_PORT="${USER_PORT:-8888}"
GATEWAY_PORT="${GATEWAY_PORT:-3000}"

. scripts/demo-common.sh
PORT="$USER_PORT" ./target/debug/examples/user_service >"$log_dir/user.out" 2>"$log_dir/user.err" &
pids+=($!)
wait_ready "$log_dir/user.out"
PORT="$GATEWAY_PORT" USER_SERVICE_PORT="$USER_PORT" ./target/debug/examples/gateway >"$log_dir/gateway.out" 2>"$log_dir/gateway.err" &
pids+=($!)
wait_ready "$log_dir/gateway.out"

echo "user service (Nest TCP wire) on 127.0.0.1:$USER_PORT, gateway (HTTP) on 127.0.0.1:$GATEWAY_PORT"
echo "\$ curl 'http://127.0.0.1:$GATEWAY_PORT/sum?num=1,2,3'"
answer=$(curl -sS "http://127.0.0.1:$GATEWAY_PORT/sum?num=1,2,3")
echo "$answer"
sleep 0.2
echo "user service printed: $(grep -v '^READY' "$log_dir/user.out" | tail -n 1)"
[ "$answer" = "6" ] || { echo "unexpected answer: $answer" >&2; exit 1; }

if [ "${1:-}" = "--once" ]; then exit 0; fi
echo
echo "Try: curl 'http://127.0.0.1:$GATEWAY_PORT/sum?num=10,20,30'   (Ctrl-C to stop)"
tail -n +2 -f "$log_dir/user.out" &
pids+=($!)
wait "${pids[0]}"
