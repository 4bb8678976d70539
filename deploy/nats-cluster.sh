#!/usr/bin/env bash
# Starts a three-node NATS cluster with JetStream on loopback, for running
# Strand with replicated (R3) streams on one machine: benchmarks of the
# durability settings, and trying a node failure by hand.
#
#   deploy/nats-cluster.sh --workdir DIR [--sync always|interval]
#
# Prints "NATS_URL=nats://..." (all three client URLs) when the cluster has
# JetStream ready, then runs until SIGTERM or SIGINT, which stops all nodes.
# Point Strand at it with --nats-url "$NATS_URL" --replicas 3.
# --sync always fsyncs every append on every node before it is
# acknowledged; interval (the nats-server default, every two minutes)
# relies on the append being on a majority of the nodes instead.
set -euo pipefail

WORK=""
SYNC="always"
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) WORK="$2"; shift 2 ;;
    --sync) SYNC="$2"; shift 2 ;;
    *) echo "usage: $0 --workdir DIR [--sync always|interval]" >&2; exit 2 ;;
  esac
done
[ -n "$WORK" ] || { echo "usage: $0 --workdir DIR [--sync always|interval]" >&2; exit 2; }
case "$SYNC" in
  always) SYNC_LINE="sync_interval: always" ;;
  interval) SYNC_LINE="" ;;
  *) echo "--sync must be always or interval" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$WORK/bin" "$WORK/logs"
(cd "$ROOT" && go build -o "$WORK/bin/nats-server" github.com/nats-io/nats-server/v2)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

declare -a CLIENT ROUTE MON PIDS
for i in 1 2 3; do
  CLIENT[$i]=$(free_port); ROUTE[$i]=$(free_port); MON[$i]=$(free_port)
done
ROUTES="nats-route://127.0.0.1:${ROUTE[1]}, nats-route://127.0.0.1:${ROUTE[2]}, nats-route://127.0.0.1:${ROUTE[3]}"

stop() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT
trap stop EXIT

for i in 1 2 3; do
  mkdir -p "$WORK/n$i"
  cat >"$WORK/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${CLIENT[$i]}
http: 127.0.0.1:${MON[$i]}
jetstream { store_dir: "$WORK/n$i", $SYNC_LINE }
cluster { name: strand, listen: 127.0.0.1:${ROUTE[$i]}, routes: [ $ROUTES ] }
CONF
  "$WORK/bin/nats-server" -c "$WORK/n$i.conf" >"$WORK/logs/n$i.log" 2>&1 &
  PIDS+=($!)
done

for i in 1 2 3; do
  for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:${MON[$i]}/healthz?js-enabled-only=true" >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
done
# JetStream in a cluster needs a meta leader before streams can be made.
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:${MON[1]}/jsz" 2>/dev/null | grep -q '"leader"'; then break; fi
  sleep 0.2
done
echo "NATS_URL=nats://127.0.0.1:${CLIENT[1]},nats://127.0.0.1:${CLIENT[2]},nats://127.0.0.1:${CLIENT[3]}"
echo "pids=${PIDS[*]}"
wait
