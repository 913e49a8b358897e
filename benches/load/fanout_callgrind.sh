#!/usr/bin/env bash
# Instructions the server spends per driver position, counted by callgrind
# (the same total for the same binary and input whatever else the machine
# runs, unlike wall-clock on this shared 2-core box). The server runs under
# valgrind on the demo city (SQLite); the simulator, not under valgrind,
# drives 50 drivers at 4 Hz carrying 20 orders. Once 3,000 positions are in,
# the counters are zeroed; 60 s later they are dumped, and the total is
# divided by the rise of dispatch_location_updates_total over those 60 s.
#
#   bash benches/load/fanout_callgrind.sh            # target/release/dispatchd
#   BIN=/path/to/dispatchd bash benches/load/fanout_callgrind.sh
#   DISPATCH__ARRIVALS__ENABLED=false bash benches/load/fanout_callgrind.sh
#   DB_URL=postgres://postgres@127.0.0.1:5432/EMPTY_DB bash benches/load/fanout_callgrind.sh
#   # cluster mode (one node holding every region; Postgres, NATS):
#   DB_URL=postgres://... DISPATCH__CLUSTER__NATS_URL=nats://127.0.0.1:4222 \
#     DISPATCH__CLUSTER__BUCKET=fresh_name DISPATCH__CLUSTER__LEASE_TTL_MS=20000 \
#     bash benches/load/fanout_callgrind.sh
#
# Extra DISPATCH__* variables in the environment reach the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/dispatchd}
WINDOW=${WINDOW:-60}
export DISPATCH__METRICS__TOKEN=fanout-callgrind-metrics-token-0123456789
OUT=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
DB_URL=${DB_URL:-sqlite:$OUT/db.sqlite}

DISPATCH__LOG__LEVEL=warn DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS=1 DISPATCH__WS__MESSAGES_PER_SEC=200 \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" \
  "$BIN" serve --demo --listen "127.0.0.1:$PORT" --database-url "$DB_URL" \
  >"$OUT/server.log" 2>&1 &
SERVER=$!
SIM=
cleanup() {
  [ -n "$SIM" ] && kill "$SIM" 2>/dev/null || true
  kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 600); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.5; done

positions() {
  curl -sf -H "authorization: Bearer $DISPATCH__METRICS__TOKEN" "$URL/metrics" |
    awk '/^dispatch_location_updates_total/ {s += $NF} END {printf "%d\n", s}'
}

"$BIN" sim --server "$URL" --drivers 50 --customers 20 --order-rate 2 --max-orders 20 \
  --location-hz 4 --duration 400 --time-scale 1 --kitchen-secs 0.5 --accept-probability 1 \
  >"$OUT/sim.log" 2>&1 &
SIM=$!
until [ "$(positions)" -ge 3000 ]; do sleep 1; done
callgrind_control -z "$SERVER" >/dev/null
START=$(positions)
sleep "$WINDOW"
END=$(positions)
callgrind_control -d "$SERVER" >/dev/null
sleep 2
DUMP=$(ls -t "$OUT"/cg.out.* | head -1)
IR=$(awk '/^(summary|totals):/ {print $2; exit}' "$DUMP")
N=$((END - START))
echo "positions in ${WINDOW} s: $N"
echo "instructions: $IR"
echo "instructions per position: $((IR / N))"
echo "profile: $DUMP (callgrind_annotate --inclusive=yes $DUMP)"
