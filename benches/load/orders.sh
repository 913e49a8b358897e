#!/usr/bin/env bash
# Order throughput on Postgres over HTTP (issue 5 targets): order creation
# with 64 concurrent clients, then status transitions (confirm), each on a
# different order. Needs wrk (apt-get install wrk) and Postgres on
# 127.0.0.1:5432. Builds and starts its own release server on a fresh
# database, and stops it at the end.
#
#   bash benches/load/orders.sh [seconds per phase, default 20]
#
# BIN=path runs that binary instead of building (to compare commits with
# this same script). WEBHOOK=answering registers a webhook for every event
# at a receiver that answers 200 at once; WEBHOOK=blackhole at one that
# accepts connections and never answers. The two together show what a dead
# receiver costs the orders beyond what any webhook does (issue 13).
# STORE=sqlite runs it on a temporary SQLite file instead of Postgres.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
CONNS=64
THREADS=2
DB=dispatchd_load_$$
PG=postgres://postgres@127.0.0.1:5432

BIN=${BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=target/release/dispatchd
fi
STORE=${STORE:-postgres}
if [ "$STORE" = sqlite ]; then
  SQLITE_DIR=$(mktemp -d)
  DATABASE_URL="sqlite:$SQLITE_DIR/load.db"
  sql() { python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$SQLITE_DIR/load.db" "$1"; }
else
  psql "$PG/postgres" -qc "CREATE DATABASE $DB"
  DATABASE_URL="$PG/$DB"
  sql() { psql "$PG/$DB" -Atc "$1"; }
fi
LOG=$(mktemp)
# One customer places every order: lift its per-minute limit (issue 11).
DISPATCH__LOG__LEVEL=warn DISPATCH__AUTH__JWT_SECRET=load-test-secret-0123456789 \
  DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE=100000000 DISPATCH__WEBHOOKS__ALLOW_PRIVATE=true \
  "$BIN" serve --demo --listen 127.0.0.1:0 --database-url "$DATABASE_URL" >"$LOG" 2>&1 &
SERVER=$!
HOLE=
cleanup() {
  [ -n "$HOLE" ] && kill "$HOLE" 2>/dev/null || true
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  if [ "$STORE" = sqlite ]; then rm -rf "$SQLITE_DIR"; else
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  fi
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

if [ -n "${WEBHOOK:-}" ]; then
  HOLE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ "$WEBHOOK" = blackhole ]; then
    # Accepts every connection and reads, never answers.
    python3 -c '
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024); held = []
def drain(c):
    while c.recv(65536): pass
while True:
    c, _ = s.accept(); held.append(c); threading.Thread(target=drain, args=(c,), daemon=True).start()
' "$HOLE_PORT" &
  else
    # Answers every request 200 at once.
    python3 -c '
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
' "$HOLE_PORT" &
  fi
  HOLE=$!
  ADMIN=$(token admin@demo.local)
  curl -sf -XPOST "$URL/api/webhooks" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
    -d "{\"url\":\"http://127.0.0.1:$HOLE_PORT/hook\"}" >/dev/null
  echo "== a webhook for every event at a receiver that is $WEBHOOK (127.0.0.1:$HOLE_PORT)"
fi

echo "== order creation: $CONNS connections, $THREADS threads, ${SECS}s"
TOKEN=$CUSTOMER wrk -t$THREADS -c$CONNS -d${SECS}s --latency -s benches/load/create_order.lua "$URL"
CREATED=$(sql "SELECT count(*) FROM orders")
FIRST=$(sql "SELECT min(id) FROM orders")
echo "orders in the store: $CREATED"

# Each confirm needs its own PLACED order: run only as long as they last
# at up to 8,000 confirms a second (past that, requests find no order and
# fail, and the rate wrk reports would mix in those quick failures).
CONFIRM_SECS=$(( CREATED / 8000 ))
if [ "$CONFIRM_SECS" -gt "$SECS" ]; then CONFIRM_SECS=$SECS; fi
if [ "$CONFIRM_SECS" -lt 3 ]; then CONFIRM_SECS=3; fi
echo "== status transitions (confirm, one per order): $CONNS connections, ${CONFIRM_SECS}s"
TOKEN=$STAFF FIRST=$FIRST THREADS=$THREADS wrk -t$THREADS -c$CONNS -d${CONFIRM_SECS}s --latency -s benches/load/confirm_orders.lua "$URL"
echo "orders confirmed: $(sql "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'") of $CREATED"
