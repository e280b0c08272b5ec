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
