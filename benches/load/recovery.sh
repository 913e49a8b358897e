#!/usr/bin/env bash
# Recovery time (issue 5 target: ready in under 10 s with 100,000 non-terminal
# orders in Postgres). Loads the demo city into a fresh database, inserts N
# live orders in a spread of statuses straight into Postgres, then starts the
# release server and reports the time from exec to /readyz answering 200,
# and the server's own "Live orders recovered" line.
#
#   bash benches/load/recovery.sh [orders, default 100000]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
DB=dispatchd_recovery_$$
PG=postgres://postgres@127.0.0.1:5432
cargo build --release --quiet
psql "$PG/postgres" -qc "CREATE DATABASE $DB"
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT

start_server() {
  LOG=$(mktemp)
  DISPATCH__LOG__LEVEL=info target/release/dispatchd serve "$@" --listen 127.0.0.1:0 --database-url "$PG/$DB" >"$LOG" 2>&1 &
  SERVER=$!
}
# Demo data first (users, restaurants, menus), then stop.
start_server --demo
for _ in $(seq 1 300); do curl -sf "$(grep -o 'http://[0-9.:]*' "$LOG" | head -1)/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
kill "$SERVER"; wait "$SERVER" || true

echo "== inserting $N live orders"
psql "$PG/$DB" -q <<SQL
INSERT INTO orders (customer_id, restaurant_id, status, version, subtotal_cents, delivery_fee_cents,
    service_fee_cents, total_cents, delivery_street, delivery_city, delivery_state, delivery_zip,
    delivery_lat, delivery_lon, estimated_delivery_at, placed_at, confirmed_at, preparing_at)
SELECT (SELECT id FROM users WHERE email = 'customer1@demo.local'),
       1 + (g % 30),
       (ARRAY['PLACED','CONFIRMED','PREPARING'])[1 + g % 3],
       1 + g % 3, 1000, 299, 150, 1449,
       '1100 Congress Ave', 'Austin', 'TX', '78701', 30.2747, -97.7404,
       now() + interval '30 minutes', now(),
       CASE WHEN g % 3 >= 1 THEN now() END,
       CASE WHEN g % 3 = 2 THEN now() END
FROM generate_series(1, $N) AS g;
SQL
psql "$PG/$DB" -Atc "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status"

echo "== starting on $N live orders"
STARTED=$(date +%s.%N)
start_server
URL=""
for _ in $(seq 1 600); do
  URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1 || true)
  [ -n "$URL" ] && curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done
READY=$(date +%s.%N)
echo "ready after $(echo "$READY - $STARTED" | bc) s (exec to /readyz 200)"
grep "Live orders recovered" "$LOG" | sed 's/\x1b\[[0-9;]*m//g'
curl -s "$URL/metrics" | grep -E "^dispatch_order_actors |^process_resident_memory_bytes "
