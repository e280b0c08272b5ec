#!/usr/bin/env bash
# The README's test command: makes sure everything the tests talk to is there, then runs every
# test of the workspace with none skipped.
#
#   scripts/test.sh [extra `cargo test` arguments]
#
# What the tests need besides Rust: Node >= 20 with the pinned NestJS peer (`npm ci` in
# tests/nest, redone whenever package-lock.json changes), `nats-server` and `rabbitmq-server`
# (Debian packages; the tests boot throw-away instances of both on free loopback ports).
# As root it installs what is missing with apt-get; otherwise it prints exactly what to
# install and exits 1. When all is present it costs a few hundred milliseconds before
# `cargo test`.
#
# The tests run with CI=1: a test that cannot reach its peer then fails instead of printing
# SKIPPED and passing, and the run fails if any SKIPPED line appears anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
NODE_MAJOR_MIN=20
apt_missing=()   # Debian packages to install
todo=()          # what a non-root user must do, one line each

say() { printf '== %s\n' "$*"; }
is_root() { [ "$(id -u)" = 0 ]; }
have_apt() { command -v apt-get >/dev/null && command -v apt-cache >/dev/null; }

# The major version apt would install for a package ("" if none).
apt_candidate_major() {
  have_apt || return 0
  apt-cache policy "$1" 2>/dev/null |
    sed -n 's/^ *Candidate: *\([0-9]*:\)\{0,1\}\([0-9][0-9]*\)\..*/\2/p' | head -n1
}

# --- Rust --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null; then
  echo "cargo is not on PATH: install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi

# --- Node (the NestJS peers) --------------------------------------------------------------
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
need_npm=false
if ! command -v node >/dev/null || [ "$(node_major)" -lt "$NODE_MAJOR_MIN" ]; then
  candidate=$(apt_candidate_major nodejs)
  if [ -n "$candidate" ] && [ "$candidate" -ge "$NODE_MAJOR_MIN" ]; then
    apt_missing+=(nodejs)
    need_npm=true
  else
    have=$(command -v node >/dev/null && node --version || echo "none")
    echo "Node >= $NODE_MAJOR_MIN with npm is needed for the NestJS interop tests (found: $have);" >&2
    echo "apt offers nodejs ${candidate:-(none)}. Install Node $NODE_MAJOR_MIN or later from" >&2
    echo "https://nodejs.org/en/download or NodeSource (https://github.com/nodesource/distributions)," >&2
    echo "then re-run scripts/test.sh." >&2
    exit 1
  fi
elif ! command -v npm >/dev/null; then
  need_npm=true
fi

# --- Brokers -------------------------------------------------------------------------------
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ] && [ ! -x /usr/local/bin/nats-server ]; then
  apt_missing+=(nats-server)
fi
# The tests start the node from Debian's script (tests/support/rmq.rs).
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  apt_missing+=(rabbitmq-server)
fi
# `kill -INT <pid>` / `kill -TERM -<group>`: the tests signal the processes they start.
if ! type -P kill >/dev/null; then
  apt_missing+=(procps)
fi

if [ ${#apt_missing[@]} -gt 0 ]; then
  if is_root && have_apt; then
    say "installing ${apt_missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
  elif have_apt; then
    todo+=("sudo apt-get install -y --no-install-recommends ${apt_missing[*]}")
  else
    todo+=("install ${apt_missing[*]} (no apt-get here: see https://nats.io/download and https://www.rabbitmq.com/docs/download; nats-server must be on PATH, rabbitmq-server at /usr/lib/rabbitmq/bin/rabbitmq-server)")
  fi
fi
# Debian's nodejs comes without npm (NodeSource's includes it, and conflicts with Debian's npm).
if $need_npm && ! command -v npm >/dev/null; then
  if is_root && have_apt; then
    say "installing npm (apt-get)"
    apt-get install -y -qq --no-install-recommends npm
  else
    todo+=("sudo apt-get install -y --no-install-recommends npm   # if npm is still missing")
  fi
fi
if [ ${#todo[@]} -gt 0 ]; then
  echo "The tests need software that is not installed, and installing it needs root. Run:" >&2
  printf '  %s\n' "${todo[@]}" >&2
  echo "then re-run scripts/test.sh (it also runs \`npm ci\` in tests/nest, which needs no root)." >&2
  exit 1
fi

# --- The pinned NestJS project -------------------------------------------------------------
# `npm ci` installs exactly package-lock.json; a stamp of the lock file's hash in node_modules
# tells whether the installed tree is that lock's.
lock=tests/nest/package-lock.json
stamp=tests/nest/node_modules/.nestling-lock.sha256
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  say "npm ci in tests/nest (package-lock.json changed or node_modules missing)"
  (cd tests/nest && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

nats=$(command -v nats-server || ls /usr/sbin/nats-server /usr/local/bin/nats-server 2>/dev/null | head -n1)
rmq=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '(not from dpkg)')
say "peers: node $(node --version), $("$nats" --version), rabbitmq-server $rmq"

# --- Every test ------------------------------------------------------------------------------
# --no-fail-fast: one failing test binary does not hide the results of the others.
say "cargo test --workspace --no-fail-fast $* (CI=1: a missing peer fails)"
log=$(mktemp "${TMPDIR:-/tmp}/nestling-test.XXXXXX")
trap 'rm -f "$log"' EXIT
set +e
CI=${CI:-1} cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
skipped=$(grep -c '^SKIPPED' "$log" || true)
passed=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i == "passed;") n += $(i - 1) } END { print n + 0 }' "$log")
elapsed=$(( $(date +%s) - started ))
if [ "$status" -ne 0 ]; then
  say "FAILED (cargo test exit status $status) after ${elapsed}s"
  exit "$status"
fi
if [ "$skipped" -ne 0 ]; then
  say "FAILED: $skipped test(s) printed SKIPPED:"
  grep '^SKIPPED' "$log" >&2
  exit 1
fi
say "all tests passed ($passed), none skipped, in ${elapsed}s"
