#!/usr/bin/env bash
# Instructions per call on the client side (scenario f, 32 in flight): nestling::Client
# vs the raw load generator, both driving the ceiling server.
#
# Runs `nestling-bench --scenario client-32 --servers ceiling` under callgrind. Both
# drivers run in the bench process, one after the other, so the profile holds both:
#   raw      = inclusive Ir of the raw generator's task (`request_worker`)
#              / its requests (calls to `wire::push_request`)
#   nestling = (whole process - the raw generator's task) / the client's calls (calls to
#              `PendingCalls::on_reply`): the callers, the client's reader and writer
#              tasks and the runtime's scheduling of them. Start-up is in it (~1 %).
# Both include the bench's own per-call work (timestamps, histograms).
#
# Usage: bench/client-cost.sh [seconds]    (needs valgrind; ~1 min for the default 3 s)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
cargo build --release -q -p nestling-bench
out=$(mktemp -d)/client.callgrind
valgrind --tool=callgrind --quiet --callgrind-out-file="$out" \
    target/release/nestling-bench --scenario client-32 --servers ceiling \
    --seconds "$secs" --warmup 1 --no-build --no-pin | grep -E "req/s" || true
tree=$(callgrind_annotate --tree=calling --inclusive=yes "$out" 2>/dev/null)
incl() { # inclusive Ir of the first function matching $1
    echo "$tree" | grep -E "^ *[0-9,]+ \([ 0-9.%]+\)  \*.*$1" | head -1 | awk '{gsub(",","",$1); print $1}'
}
calls() { # call count of the first call edge to a function matching $1
    echo "$tree" | grep -E ">.*$1 \(" | head -1 | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d ,
}
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
raw=$(incl 'request_worker::\{\{closure')
requests=$(calls 'wire::push_request')
client_calls=$(calls 'PendingCalls::on_reply')
echo "raw generator:     $((raw / requests)) Ir/request ($requests requests)"
echo "nestling::Client:  $(((total - raw) / client_calls)) Ir/call ($client_calls calls)"
echo "profile: $out"
