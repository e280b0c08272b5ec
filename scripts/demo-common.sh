# Shared by the demo scripts (sourced, not run): build the examples, track started
# processes and stop them on exit, wait for a service's READY line.
cargo build --quiet --examples
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_ready() { # file
  for _ in $(seq 1 100); do grep -q '^READY' "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "service did not start; its output:" >&2; cat "$1" >&2; exit 1
}

log_dir=$(mktemp -d)

# $INSTANCES user_service instances, each with the environment given (NAME=VALUE …) and
# INSTANCE=user-<i>, started one after the other.
start_instances() {
  for i in $(seq 1 "$INSTANCES"); do
    env "$@" INSTANCE="user-$i" ./target/debug/examples/user_service \
      >"$log_dir/user-$i.out" 2>"$log_dir/user-$i.err" &
    pids+=($!)
    wait_ready "$log_dir/user-$i.out"
  done
}

# The HTTP gateway on $GATEWAY_PORT, with the environment given (how it reaches the service).
start_gateway() {
  env PORT="$GATEWAY_PORT" "$@" ./target/debug/examples/gateway \
    >"$log_dir/gateway.out" 2>"$log_dir/gateway.err" &
  pids+=($!)
  wait_ready "$log_dir/gateway.out"
}

# Shows how 30 /whoami calls spread over the instances, then checks /sum once.
show_spread_and_sum() {
  echo "\$ for i in \$(seq 30); do curl -s http://127.0.0.1:$GATEWAY_PORT/whoami; echo; done | sort | uniq -c"
  for _ in $(seq 30); do curl -sS "http://127.0.0.1:$GATEWAY_PORT/whoami"; echo; done | sort | uniq -c
  echo "\$ curl 'http://127.0.0.1:$GATEWAY_PORT/sum?num=1,2,3'"
  answer=$(curl -sS "http://127.0.0.1:$GATEWAY_PORT/sum?num=1,2,3")
  echo "$answer"
  [ "$answer" = "6" ] || { echo "unexpected answer: $answer" >&2; exit 1; }
}
