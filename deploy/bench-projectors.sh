#!/usr/bin/env bash
# Measures projector throughput: N projector processes apply a log that is
# already on NATS (ROOMS, ACCOUNTS, RECEIPTS) into an empty database, as
# they would after a restore or when they fall behind. It reports the
# seconds until every room event is applied and until every lane is
# complete through the head, the rate, each process's CPU seconds and how
# many ROOMS lanes each took.
#
#   deploy/bench-projectors.sh --strand BIN --nats-url URL --database-url URL \
#                              --projectors N --events E
# E is how many rows the events table holds when everything is applied
# (count them in the projection the log was written with). The database
# named in URL is dropped and created again.
set -euo pipefail

N=1
while [ $# -gt 0 ]; do
  case "$1" in
    --strand) STRAND=$2; shift 2 ;;
    --nats-url) NATS=$2; shift 2 ;;
    --database-url) DB=$2; shift 2 ;;
    --projectors) N=$2; shift 2 ;;
    --events) EVENTS=$2; shift 2 ;;
    *) echo "bench-projectors: unknown argument $1" >&2; exit 2 ;;
  esac
done
: "${STRAND:?--strand}" "${NATS:?--nats-url}" "${DB:?--database-url}" "${EVENTS:?--events}"
NAME=$(echo "$DB" | sed -E 's|^.*/([^/?]+)(\?.*)?$|\1|')
ADMIN=$(echo "$DB" | sed -E "s|/$NAME|/postgres|")
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $NAME" -c "CREATE DATABASE $NAME"
WORK=$(mktemp -d -t strand-bench-proj.XXXXXX)
DATABASE_URL=$DB NATS_URL=$NATS STRAND_DATA_DIR=$WORK "$STRAND" migrate >"$WORK/migrate.log" 2>&1
HEAD=$(curl -s "$(echo "$NATS" | sed -E 's|nats://([^:]+):.*|http://\1|'):${NATS_MONITOR_PORT:?NATS_MONITOR_PORT}/jsz?streams=true" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print([s["state"]["last_seq"] for a in d["account_details"] for s in a["stream_detail"] if s["name"]=="ROOMS"][0])')

# ROOMS applied through: the lowest lane (its applied record or what its
# idle check recorded, the higher), or the single ROOMS row of a version
# without lanes.
if [ "$(psql -Atq "$DB" -c "SELECT to_regclass('projector_lane_complete') IS NOT NULL")" = t ]; then
  ROOMS_SQL="SELECT COALESCE(min(GREATEST(COALESCE(p.seq, 0), COALESCE(c.seq, 0))), 0)
    FROM (SELECT 'ROOMS.' || i AS lane FROM generate_series(0, 15) i UNION ALL SELECT 'ROOMS.alias') l
    LEFT JOIN projector_positions p ON p.stream = l.lane LEFT JOIN projector_lane_complete c ON c.lane = l.lane"
else
  ROOMS_SQL="SELECT COALESCE((SELECT seq FROM projector_positions WHERE stream = 'ROOMS'), 0)"
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  DATABASE_URL=$DB NATS_URL=$NATS STRAND_DATA_DIR=$WORK "$STRAND" projector --log-level info >"$WORK/projector-$i.log" 2>&1 &
  PIDS+=($!)
done
t_events=""
while :; do
  now=$(date +%s.%N)
  if [ -z "$t_events" ] && [ "$(psql -Atq "$DB" -c 'SELECT count(*) FROM events')" -ge "$EVENTS" ]; then
    t_events=$(echo "$now - $start" | bc)
  fi
  if [ -n "$t_events" ] && [ "$(psql -Atq "$DB" -c "$ROOMS_SQL")" -ge "$HEAD" ]; then
    t_done=$(echo "$now - $start" | bc)
    break
  fi
  if [ "$(echo "$now - $start > 600" | bc)" = 1 ]; then echo "bench-projectors: not done after 600 s ($WORK)" >&2; exit 1; fi
  sleep 0.05
done
tck=$(getconf CLK_TCK)
cpu=""
lanes=""
for i in $(seq 1 "$N"); do
  p=${PIDS[$((i - 1))]}
  cpu="$cpu $(awk -v t="$tck" '{printf "%.2f", ($14+$15)/t}' "/proc/$p/stat")"
  lanes="$lanes $(grep 'took lane' "$WORK/projector-$i.log" | grep -c 'ROOMS' || true)"
done
printf 'projectors %d  rooms head %d  events applied %.2f s  (%.0f records/s)  all lanes complete %.2f s  cpu s:%s  ROOMS lanes taken:%s\n' \
  "$N" "$HEAD" "$t_events" "$(echo "$HEAD / $t_events" | bc -l)" "$t_done" "$cpu" "$lanes"
rm -rf "$WORK"
