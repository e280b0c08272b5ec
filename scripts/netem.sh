#!/usr/bin/env bash
# Loss/latency run: the user service and a client driver in two network namespaces joined
# by a veth pair whose both ends delay, jitter and drop packets (tc netem).
#   scripts/netem.sh                       delay 50ms ±10ms, 5% loss, each direction
#   NETEM_DELAY=100ms NETEM_JITTER=20ms NETEM_LOSS=10% scripts/netem.sh
#   scripts/netem.sh --sequential 50 --timeout-ms 1000    (arguments go to netem_client)
# Needs root (ip netns, tc). Installs iproute2 with apt if `ip` or `tc` is missing.
# The addresses 10.200.0.1 (service) and 10.200.0.2 (client) exist only inside the two
# namespaces this script creates; everything is torn down on exit (trap).
#
# Kernels built without the netem qdisc (CONFIG_NET_SCH_NETEM unset, e.g. this sandbox's
# VM) make `tc qdisc add … netem` fail with "Specified qdisc kind is unknown". Then, unless
# NETEM_FALLBACK=none, the veth pair is replaced by one TUN device per namespace and a small
# userspace relay (python3, standard library only, embedded below) that forwards IP
# packets between them with the same impairment netem applies: each packet, in each
# direction, is dropped with probability LOSS or else delivered after DELAY ± JITTER
# (uniform, so packets may be reordered, as with netem's jitter).
set -euo pipefail
cd "$(dirname "$0")/.."

DELAY="${NETEM_DELAY:-50ms}"
JITTER="${NETEM_JITTER:-10ms}"
LOSS="${NETEM_LOSS:-5%}"
SRV_IP=10.200.0.1
CLI_IP=10.200.0.2
PORT=8888

if [ "$(id -u)" != 0 ]; then
  echo "netem.sh needs root (network namespaces and tc); run it with sudo" >&2
  exit 1
fi
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
  echo "== installing iproute2 (ip, tc)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

echo "== building the user_service and netem_client examples (release)"
cargo build --quiet --release --example user_service --example netem_client

SRV_NS="nestling-srv-$$"
CLI_NS="nestling-cli-$$"
SRV_IF="nls$$"
CLI_IF="nlc$$"
tmp=$(mktemp -d)
server_pid=""
relay_pid=""
cleanup() {
  set +e
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  ip netns del "$SRV_NS" 2>/dev/null # deleting a namespace also deletes its veth end
  ip netns del "$CLI_NS" 2>/dev/null
  ip link del "$SRV_IF" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

echo "== namespaces $SRV_NS ($SRV_IP) and $CLI_NS ($CLI_IP), veth $SRV_IF <-> $CLI_IF"
if ! ip netns add "$SRV_NS"; then
  echo "cannot create network namespaces here (ip netns add failed): this sandbox does not allow it" >&2
  exit 1
fi
ip netns add "$CLI_NS"
ip link add "$SRV_IF" type veth peer name "$CLI_IF"
ip link set "$SRV_IF" netns "$SRV_NS"
ip link set "$CLI_IF" netns "$CLI_NS"
ip -n "$SRV_NS" addr add "$SRV_IP/24" dev "$SRV_IF"
ip -n "$CLI_NS" addr add "$CLI_IP/24" dev "$CLI_IF"
for ns in "$SRV_NS" "$CLI_NS"; do ip -n "$ns" link set lo up; done
ip -n "$SRV_NS" link set "$SRV_IF" up
ip -n "$CLI_NS" link set "$CLI_IF" up

echo "== tc qdisc ... root netem delay $DELAY $JITTER loss $LOSS (on both veth ends)"
mode=netem
if ! err=$(ip netns exec "$SRV_NS" tc qdisc add dev "$SRV_IF" root netem delay "$DELAY" "$JITTER" loss "$LOSS" 2>&1); then
  echo "   tc netem is not available: $err"
  if zcat /proc/config.gz 2>/dev/null | grep -q '^# CONFIG_NET_SCH_NETEM is not set'; then
    echo "   (this kernel, $(uname -r), is built without CONFIG_NET_SCH_NETEM and cannot load modules)"
  fi
  if [ "${NETEM_FALLBACK:-relay}" = none ]; then
    echo "NETEM_FALLBACK=none: giving up" >&2
    exit 1
  fi
  mode=relay
else
  ip netns exec "$CLI_NS" tc qdisc add dev "$CLI_IF" root netem delay "$DELAY" "$JITTER" loss "$LOSS"
fi

if [ "$mode" = relay ]; then
  echo "== fallback: TUN devices + userspace relay with delay $DELAY ± $JITTER, loss $LOSS per direction"
  ip -n "$SRV_NS" link del "$SRV_IF" # removes both veth ends
  SRV_IF="nts$$"
  CLI_IF="ntc$$"
  ip -n "$SRV_NS" tuntap add dev "$SRV_IF" mode tun
  ip -n "$CLI_NS" tuntap add dev "$CLI_IF" mode tun
  ip -n "$SRV_NS" addr add "$SRV_IP" peer "$CLI_IP" dev "$SRV_IF"
  ip -n "$CLI_NS" addr add "$CLI_IP" peer "$SRV_IP" dev "$CLI_IF"
  ip -n "$SRV_NS" link set "$SRV_IF" up
  ip -n "$CLI_NS" link set "$CLI_IF" up
  cat >"$tmp/relay.py" <<'PY'
"""Forwards IP packets between two TUN devices in two network namespaces, dropping each
with probability LOSS and delaying the rest by DELAY +- JITTER ms (uniform), per direction."""
import ctypes, fcntl, heapq, os, random, select, signal, struct, sys, time

ns_a, tun_a, ns_b, tun_b = sys.argv[1:5]
delay, jitter, loss = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]) / 100.0
TUNSETIFF, IFF_TUN, IFF_NO_PI, CLONE_NEWNET = 0x400454CA, 0x0001, 0x1000, 0x40000000
libc = ctypes.CDLL(None, use_errno=True)

def attach(ns, name):
    nsfd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    if libc.setns(nsfd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns {ns}")
    os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd

fa, fb = attach(ns_a, tun_a), attach(ns_b, tun_b)
peer = {fa: fb, fb: fa}
label = {fa: f"{tun_a}->{tun_b}", fb: f"{tun_b}->{tun_a}"}
stats = {fd: {"packets": 0, "dropped": 0, "delay_ms": 0.0} for fd in (fa, fb)}
queue, seq = [], 0

def stop(*_):
    for fd, s in stats.items():
        sent = s["packets"] - s["dropped"]
        mean = s["delay_ms"] / sent if sent else 0.0
        print(f"relay {label[fd]}: {s['packets']} packets, {s['dropped']} dropped "
              f"({100.0 * s['dropped'] / max(s['packets'], 1):.1f}%), mean added delay {mean:.1f} ms",
              flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("RELAY READY", flush=True)
while True:
    now = time.monotonic()
    wait = max(0.0, queue[0][0] - now) if queue else 1.0
    ready, _, _ = select.select([fa, fb], [], [], wait)
    for fd in ready:
        while True:
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            s = stats[fd]
            s["packets"] += 1
            if random.random() < loss:
                s["dropped"] += 1
                continue
            d = max(0.0, delay + random.uniform(-jitter, jitter))
            s["delay_ms"] += d
            seq += 1
            heapq.heappush(queue, (time.monotonic() + d / 1000.0, seq, peer[fd], pkt))
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        _, _, out, pkt = heapq.heappop(queue)
        try:
            os.write(out, pkt)
        except OSError:
            pass
PY
  ms() { # 50ms -> 50, 1.5s -> 1500
    case "$1" in
      *ms) echo "${1%ms}" ;;
      *us) awk "BEGIN{print ${1%us}/1000}" ;;
      *s) awk "BEGIN{print ${1%s}*1000}" ;;
      *) echo "$1" ;;
    esac
  }
  python3 -u "$tmp/relay.py" "$SRV_NS" "$SRV_IF" "$CLI_NS" "$CLI_IF" \
    "$(ms "$DELAY")" "$(ms "$JITTER")" "${LOSS%\%}" >"$tmp/relay.out" 2>&1 &
  relay_pid=$!
  for _ in $(seq 1 50); do
    grep -q '^RELAY READY' "$tmp/relay.out" 2>/dev/null && break
    kill -0 "$relay_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '^RELAY READY' "$tmp/relay.out" 2>/dev/null; then
    echo "the relay did not start:" >&2
    cat "$tmp/relay.out" >&2
    exit 1
  fi
fi

# The service, in its namespace; it prints READY <port> once it listens.
ip netns exec "$SRV_NS" env HOST="$SRV_IP" PORT="$PORT" RUST_LOG=warn \
  ./target/release/examples/user_service >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^READY' "$tmp/server.out" 2>/dev/null && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if ! grep -q '^READY' "$tmp/server.out" 2>/dev/null; then
  echo "user_service did not start:" >&2
  cat "$tmp/server.out" "$tmp/server.err" >&2
  exit 1
fi
echo "== user_service listening on $SRV_IP:$PORT in $SRV_NS"

rc=0
ip netns exec "$CLI_NS" ./target/release/examples/netem_client --addr "$SRV_IP:$PORT" "$@" || rc=$?

if [ "$mode" = netem ]; then
  echo "== netem statistics"
  for pair in "$SRV_NS:$SRV_IF" "$CLI_NS:$CLI_IF"; do
    ns=${pair%%:*} dev=${pair#*:}
    echo "-- $ns $dev"
    ip netns exec "$ns" tc -s qdisc show dev "$dev" | sed 's/^/   /'
  done
else
  echo "== relay statistics (the netem stand-in)"
  kill "$relay_pid" 2>/dev/null
  wait "$relay_pid" 2>/dev/null || true
  relay_pid=""
  grep '^relay ' "$tmp/relay.out" | sed 's/^/   /'
fi
if [ -s "$tmp/server.err" ]; then
  echo "== user_service warnings (last 10 lines of stderr)"
  tail -n 10 "$tmp/server.err" | sed 's/^/   /'
fi
exit "$rc"
