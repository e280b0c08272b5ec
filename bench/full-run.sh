#!/usr/bin/env bash
# Every figure of the README's performance section in one session, in this order: the TCP
# scenarios a-f against nestling, NestJS and the ceiling; NATS (i); the whole seed system
# over HTTP (--http); the servers on 1 then 2 cores (b, c); the client at its ceiling
# (--client); resident memory per connection (--memory). Each part runs every scenario
# REPEAT times (default 3), interleaved, and shows the median run. The load average is
# recorded before and after every part (the machine is shared: read it with the figures).
#
# Usage: bench/full-run.sh [output directory]   (default bench/results/full-<UTC time>)
# Env: REPEAT (3), SECS (5 measured seconds per run).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/full-$(date -u +%Y%m%dT%H%MZ)}
repeat=${REPEAT:-3}
secs=${SECS:-5}
mkdir -p "$out"
cargo build --release -q -p nestling-bench
cargo build --release -q --example user_service --example gateway
bench=${CARGO_TARGET_DIR:-target}/release/nestling-bench
load() { echo "$(date -u +%H:%M:%S) $1: load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"; }
load "start tcp+nats"
"$bench" --no-build --repeat "$repeat" --seconds "$secs" --scenario a,b,c,d,e,f,i \
    --json "$out/tcp-nats.json" | tee "$out/tcp-nats.txt"
load "start http"
"$bench" --no-build --http --repeat "$repeat" --seconds "$secs" \
    --json "$out/http.json" | tee "$out/http.txt"
# 1 and 2 server cores back to back, so the two rows see the same machine load.
load "start cores 1"
"$bench" --no-build --server-cores 1 --servers nestling,ceiling --scenario b,c \
    --repeat "$repeat" --seconds "$secs" --json "$out/cores1.json" | tee "$out/cores1.txt"
load "start cores 2"
"$bench" --no-build --server-cores 2 --servers nestling,ceiling --scenario b,c \
    --repeat "$repeat" --seconds "$secs" --json "$out/cores2.json" | tee "$out/cores2.txt"
load "start client"
"$bench" --no-build --client --repeat "$repeat" --seconds "$secs" | tee "$out/client.txt"
load "start memory"
"$bench" --no-build --memory | tee "$out/memory.txt"
load "end"
echo "results in $out"
