#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (decode, packet) for a bounded time each.
#   scripts/fuzz.sh            60 s per target
#   scripts/fuzz.sh 300        300 s per target
# Environment:
#   FUZZ_TARGETS="decode"      which targets (default: all in fuzz/fuzz_targets)
#   FUZZ_SANITIZER=none        skip AddressSanitizer (default: address, falling back to none
#                              if the ASan build fails)
# Installs cargo-fuzz if missing. cargo-fuzz passes nightly-only flags (-Zsanitizer, …);
# on a stable toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them.
# New corpus entries go to fuzz/corpus/<target> (not committed); fuzz/seeds/<target> are
# read-only seeds; logs go to fuzz/logs/<target>.log. A crash is written to fuzz/artifacts/<target>/ and its path printed;
# the script then exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
case "$secs" in '' | *[!0-9]*)
  echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2
  exit 2
  ;;
esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (cargo install cargo-fuzz)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

targets="${FUZZ_TARGETS:-$(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//' | tr '\n' ' ')}"

sanitizer="${FUZZ_SANITIZER:-address}"
echo "== building fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --sanitizer "$sanitizer" >/tmp/nestling-fuzz-build.log 2>&1; then
  if [ "$sanitizer" != none ]; then
    echo "   build with sanitizer $sanitizer failed (tail of log below); retrying with --sanitizer none"
    tail -n 15 /tmp/nestling-fuzz-build.log | sed 's/^/   | /'
    sanitizer=none
    if ! cargo fuzz build --sanitizer none >/tmp/nestling-fuzz-build.log 2>&1; then
      cat /tmp/nestling-fuzz-build.log >&2
      echo "fuzz build failed" >&2
      exit 1
    fi
  else
    cat /tmp/nestling-fuzz-build.log >&2
    echo "fuzz build failed" >&2
    exit 1
  fi
fi

failed=0
summary=()
for t in $targets; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  mkdir -p fuzz/logs
  log="fuzz/logs/$t.log"
  echo "== fuzzing $t for ${secs}s (log: $log)"
  rc=0
  # -timeout: an input taking over 10 s counts as a hang (reported like a crash).
  cargo fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" -timeout=10 -dict=fuzz/nest.dict -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  crash=$(grep -oE 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //' | tail -n 1 || true)
  line="$t: ${execs:-?} execs, ${rate:-?} exec/s, corpus ${corpus} files, coverage ${cov:-?} edges, peak RSS ${rss:-?} MB"
  if [ -n "$crash" ] || [ "$rc" -ne 0 ]; then
    failed=1
    line="$line, CRASH (exit $rc): ${crash:-see $log}"
    echo "   $line"
    grep -E "panicked at|^(left|right|  left|  right):|assertion|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY" "$log" | head -n 12 | sed 's/^/   | /'
    [ -n "$crash" ] && {
      echo "   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $t $crash"
      echo "   input (hex):"
      xxd "$crash" | head -n 20 | sed 's/^/   | /'
    }
  else
    echo "   $line, no crash"
  fi
  summary+=("$line")
done

echo "== summary (${secs}s per target, sanitizer $sanitizer)"
printf '   %s\n' "${summary[@]}"
exit "$failed"
