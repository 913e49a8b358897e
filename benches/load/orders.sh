#!/usr/bin/env bash
# Order throughput on Postgres over HTTP (issue 5 targets): order creation
# with 64 concurrent clients, then status transitions (confirm), each on a
# different order. Needs wrk (apt-get install wrk) and Postgres on
# 127.0.0.1:5432. Builds and starts its own release server on a fresh
# database, and stops it at the end.
#
#   bash benches/load/orders.sh [seconds per phase, default 20]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
CONNS=64
THREADS=2
DB=dispatchd_load_$$
PG=postgres://postgres@127.0.0.1:5432

cargo build --release --quiet
psql "$PG/postgres" -qc "CREATE DATABASE $DB"
LOG=$(mktemp)
DISPATCH__LOG__LEVEL=warn DISPATCH__AUTH__JWT_SECRET=load-test-secret-0123456789 \
  target/release/dispatchd serve --demo --listen 127.0.0.1:0 --database-url "$PG/$DB" >"$LOG" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1)
for _ in $(seq 1 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
token() {
  curl -sf -XPOST "$URL/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"demo-pass\"}" | sed 's/.*"token":"\([^"]*\)".*/\1/'
}
CUSTOMER=$(token customer1@demo.local)
STAFF=$(token restaurant1@demo.local)

echo "== order creation: $CONNS connections, $THREADS threads, ${SECS}s"
TOKEN=$CUSTOMER wrk -t$THREADS -c$CONNS -d${SECS}s --latency -s benches/load/create_order.lua "$URL"
CREATED=$(psql "$PG/$DB" -Atc "SELECT count(*) FROM orders")
FIRST=$(psql "$PG/$DB" -Atc "SELECT min(id) FROM orders")
echo "orders in the store: $CREATED"

# Each confirm needs its own PLACED order: run only as long as they last
# at up to 8,000 confirms a second (past that, requests find no order and
# fail, and the rate wrk reports would mix in those quick failures).
CONFIRM_SECS=$(( CREATED / 8000 ))
if [ "$CONFIRM_SECS" -gt "$SECS" ]; then CONFIRM_SECS=$SECS; fi
if [ "$CONFIRM_SECS" -lt 3 ]; then CONFIRM_SECS=3; fi
echo "== status transitions (confirm, one per order): $CONNS connections, ${CONFIRM_SECS}s"
TOKEN=$STAFF FIRST=$FIRST THREADS=$THREADS wrk -t$THREADS -c$CONNS -d${CONFIRM_SECS}s --latency -s benches/load/confirm_orders.lua "$URL"
echo "orders confirmed: $(psql "$PG/$DB" -Atc "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'") of $CREATED"
