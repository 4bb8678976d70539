#!/usr/bin/env bash
# Runs Strand's multi-process topology on this machine, without Docker:
# a real nats-server with JetStream, the given PostgreSQL, one api, one
# or more projectors, N sync workers, one pusher, and nginx routing /sync to the sync workers
# and everything else to the api, all on loopback. It prints the public URL
# when everything answers, restarts nats-server or a Strand role that dies
# (as compose's restart policy would), and stops every process on SIGTERM/SIGINT/exit.
#
#   deploy/run-local.sh --sync N --port P --database-url URL [--workdir DIR]
#                       [--projectors N] [--appservice FILE]...
# With --projectors N (default 1), N projector processes share the lanes
# (ACCOUNTS, RECEIPTS and one per ROOMS partition).
# With --appservice (repeatable), the api knows the application services
# and an appservice role delivers events to them.
#
# nginx must be installed (Debian: apt-get install nginx-light); the
# nats-server and strand binaries are built from this module.
set -euo pipefail

SYNC=2
PROJECTORS=1
PORT=8008
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/strand_local?sslmode=disable}
WORK=""
APPSERVICES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sync) SYNC=$2; shift 2 ;;
    --projectors) PROJECTORS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --database-url) DATABASE_URL=$2; shift 2 ;;
    --workdir) WORK=$2; shift 2 ;;
    --appservice) APPSERVICES+=(--appservice "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run-local: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$SYNC" in ''|*[!0-9]*) echo "run-local: --sync needs a number" >&2; exit 2 ;; esac
[ "$SYNC" -ge 1 ] || { echo "run-local: --sync must be at least 1" >&2; exit 2; }
case "$PROJECTORS" in ''|*[!0-9]*) echo "run-local: --projectors needs a number" >&2; exit 2 ;; esac
[ "$PROJECTORS" -ge 1 ] || { echo "run-local: --projectors must be at least 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$WORK" ] || WORK=$(mktemp -d -t strand-local.XXXXXX)
mkdir -p "$WORK/bin" "$WORK/nats" "$WORK/data" "$WORK/nginx" "$WORK/logs"
# nginx's worker writes request bodies over its buffer (16 KB) and large
# upstream responses to temp files. Run as root, the worker is "nobody",
# which cannot enter a work directory of mode 0700 (what mktemp -d and Go's
# t.TempDir make): every upload would get nginx's 500. Its temp files go to
# a directory of their own that any user may enter (not list); nginx, as
# root, creates the subdirectories there owned by its worker's user.
NGINX_TMP=$(mktemp -d -t strand-nginx.XXXXXX)
chmod 0711 "$NGINX_TMP"
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || NGINX=/usr/sbin/nginx
[ -x "$NGINX" ] || { echo "run-local: nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

echo "run-local: building strand and nats-server into $WORK/bin" >&2
(cd "$ROOT" && go build -o "$WORK/bin/strand" ./cmd/strand && go build -o "$WORK/bin/nats-server" github.com/nats-io/nats-server/v2)

# Free loopback ports, chosen by the kernel.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

PIDS=()
cleanup() {
  trap - TERM INT EXIT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$NGINX_TMP"
}
trap 'cleanup; exit 0' TERM INT
trap cleanup EXIT

# supervise runs a Strand role and restarts it whenever it exits, as
# compose's restart policy does: the roles are crash-only, so a killed one
# just comes back and carries on. $WORK/<name>.pid holds the live PID.
supervise() {
  local name=$1
  shift
  (
    child=""
    trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM
    while :; do
      "$@" >>"$WORK/logs/$name.log" 2>&1 &
      child=$!
      echo "$child" >"$WORK/$name.pid"
      wait "$child" && status=0 || status=$?
      echo "run-local: $name exited with status $status; restarting" >&2
      sleep 0.5
    done
  ) &
  PIDS+=($!)
}

wait_http() { # url, what
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run-local: $2 did not come up ($1); logs in $WORK/logs" >&2
  exit 1
}

NATS_PORT=$(free_port)
NATS_MON=$(free_port)
# Every acknowledged append is fsynced first, as in deploy/nats.conf.
cat >"$WORK/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_MON
jetstream { store_dir: "$WORK/nats", sync_interval: always }
CONF
supervise nats "$WORK/bin/nats-server" -c "$WORK/nats.conf"
wait_http "http://127.0.0.1:$NATS_MON/healthz?js-enabled-only=true" nats-server
NATS_URL="nats://127.0.0.1:$NATS_PORT"

export NATS_URL DATABASE_URL STRAND_DATA_DIR="$WORK/data" STRAND_LOG_FORMAT=json

"$WORK/bin/strand" migrate >"$WORK/logs/migrate.log" 2>&1

PROJ_OPS=()
for i in $(seq 1 "$PROJECTORS"); do
  p=$(free_port)
  PROJ_OPS+=("$p")
  name=projector
  [ "$PROJECTORS" -eq 1 ] || name="projector-$i"
  supervise "$name" "$WORK/bin/strand" projector --ops-listen "127.0.0.1:$p"
done

# The pusher role reaches push gateways only at public addresses unless
# STRAND_OUTBOUND_ALLOW (inherited) opens more.
PUSH_OPS=$(free_port)
supervise pusher "$WORK/bin/strand" pusher --ops-listen "127.0.0.1:$PUSH_OPS"

API_PORT=$(free_port)
supervise api "$WORK/bin/strand" api --listen "127.0.0.1:$API_PORT" --public-base-url "http://127.0.0.1:$PORT" ${APPSERVICES[@]+"${APPSERVICES[@]}"}

AS_OPS=""
if [ ${#APPSERVICES[@]} -gt 0 ]; then
  AS_OPS=$(free_port)
  supervise appservice "$WORK/bin/strand" appservice --ops-listen "127.0.0.1:$AS_OPS" "${APPSERVICES[@]}"
fi

SYNC_SERVERS=""
for i in $(seq 1 "$SYNC"); do
  p=$(free_port)
  # nginx sends only /sync here, so /metrics on this loopback port is
  # not reachable through the proxy.
  supervise "sync-$i" "$WORK/bin/strand" sync --listen "127.0.0.1:$p" --metrics-on-listen
  SYNC_SERVERS="$SYNC_SERVERS    server 127.0.0.1:$p;
"
done

sed -e "s|@WORK@|$WORK/nginx|g" -e "s|@TMP@|$NGINX_TMP|g" -e "s|@PORT@|$PORT|g" -e "s|@API@|    server 127.0.0.1:$API_PORT;|" \
  "$ROOT/deploy/nginx-local.conf.in" | awk -v servers="$SYNC_SERVERS" '{ if ($0 ~ /@SYNC@/) printf "%s", servers; else print }' >"$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/logs/nginx-error.log" &
PIDS+=($!)

for p in "${PROJ_OPS[@]}"; do wait_http "http://127.0.0.1:$p/ready" projector; done
wait_http "http://127.0.0.1:$API_PORT/ready" api
wait_http "http://127.0.0.1:$PUSH_OPS/ready" pusher
[ -z "$AS_OPS" ] || wait_http "http://127.0.0.1:$AS_OPS/ready" appservice
wait_http "http://127.0.0.1:$PORT/_matrix/client/versions" nginx
echo "Strand is ready at http://127.0.0.1:$PORT (api 1, projector $PROJECTORS, sync $SYNC, pusher 1; nats $NATS_URL; work dir $WORK)"

# Run until told to stop, or until nginx dies (nats-server and the Strand
# roles are restarted by their supervisors).
wait -n "${PIDS[@]}" || true
echo "run-local: nginx exited; stopping all (logs in $WORK/logs)" >&2
exit 1
