#!/usr/bin/env bash
# Store outage under load (issue 11): the simulated city runs against the
# release server on a private Postgres, which is stopped (immediate mode,
# like a crash) for OUTAGE seconds and started again. Reports:
#   - every write probe during the outage: status, code and how long it took
#     (must be 503 STORE_UNAVAILABLE within the acquire timeout);
#   - fan-out during the outage: the simulator's 5 s windows (positions
#     received per second, p99) that lie wholly inside it;
#   - recovery: seconds from Postgres back to /readyz 200, with no restart;
#   - nothing changed: the orders in the store equal the orders the
#     simulator and the probes were told were created, and the order the
#     probes tried to confirm is still PLACED at version 1.
# Never touches the shared Postgres on 5432: it runs its own on PORT.
#
#   bash benches/load/store_outage.sh [outage secs, default 30] [drivers, default 200]
#   DISPATCHD_BIN=path/to/dispatchd  (default target/release/dispatchd, built if missing)
#   ACQUIRE_MS=1000 ORDER_RATE=4 WARM=25 PORT=...
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTAGE=${1:-30}
DRIVERS=${2:-200}
ACQUIRE_MS=${ACQUIRE_MS:-1000}
ORDER_RATE=${ORDER_RATE:-4}
WARM=${WARM:-25}
PORT=${PORT:-$((56000 + $$ % 1000))}
BIN=${DISPATCHD_BIN:-target/release/dispatchd}
if [ ! -x "$BIN" ]; then nice -n 10 cargo build --release --quiet --bin dispatchd; fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
pg_start() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null; }
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate -w stop >/dev/null; }
SERVER="" SIM=""
cleanup() {
  [ -n "$SIM" ] && kill "$SIM" 2>/dev/null || true
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  pg_stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
pg_start
DB=postgres://postgres@127.0.0.1:$PORT/postgres
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

export DISPATCH__METRICS__TOKEN=store-outage-bench-metrics-token-0123456789
export DISPATCH__AUTH__JWT_SECRET=store-outage-bench-jwt-secret-0123456789abcdef
DISPATCH__LOG__LEVEL=warn DISPATCH__DATABASE__ACQUIRE_TIMEOUT_MS=$ACQUIRE_MS \
  DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE=100000 \
  "$BIN" serve --demo --listen 127.0.0.1:0 --database-url "$DB" >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER=$!
URL=""
for _ in $(seq 1 600); do
  URL=$(grep -o 'http://[0-9.:]*' "$WORK/server.out" | head -1 || true)
  [ -n "$URL" ] && curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== server $URL on private Postgres :$PORT, acquire timeout $ACQUIRE_MS ms ($BIN)"

# The simulator; each progress line is stamped with the time it arrived.
"$BIN" sim --server "$URL" --drivers "$DRIVERS" --customers 50 --order-rate "$ORDER_RATE" \
  --duration $((WARM + OUTAGE + 40)) --json >"$WORK/sim.out" 2> >(while IFS= read -r l; do echo "$(now) $l"; done >"$WORK/sim.err") &
SIM=$!
until grep -q "sim: .*locations" "$WORK/sim.err" 2>/dev/null; do
  kill -0 "$SIM" 2>/dev/null || { cat "$WORK/sim.err"; exit 1; }
  sleep 1
done
echo "== simulator running; warming $WARM s"
sleep "$WARM"

login() {
  curl -s "$URL/api/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1@demo.local\",\"password\":\"demo-pass\"}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p'
}
CUSTOMER=$(login customer1)
STAFF=$(login restaurant1)
ORDER_BODY='{"restaurantId":1,"items":[{"menuItemId":1,"quantity":1}],"deliveryAddress":{"street":"1100 Congress Ave","city":"Austin","state":"TX","zip":"78701","lat":30.2747,"lon":-97.7404}}'
PROBE=$(curl -s "$URL/api/orders" -H "authorization: Bearer $CUSTOMER" -H 'content-type: application/json' \
  -H "Idempotency-Key: outage-probe-before" -d "$ORDER_BODY" | sed -n 's/^{"order":{"id":\([0-9]*\).*/\1/p')
[ -n "$PROBE" ] || { echo "the probe order was not placed"; exit 1; }
PROBES_CREATED=1

# A write probe: prints "status code seconds".
probe() {
  curl -s -o "$WORK/probe" -w '%{http_code} %{time_total}\n' "$@" |
    while read -r status secs; do echo "$status $(sed -n 's/.*"code":"\([A-Z_]*\)".*/\1/p' "$WORK/probe") $secs"; done
}

echo "== stopping Postgres (immediate) for $OUTAGE s"
DOWN=$(now)
pg_stop
: >"$WORK/probes"
N=0
while [ "$(echo "$(now) - $DOWN < $OUTAGE" | bc)" = 1 ]; do
  N=$((N + 1))
  probe -X PATCH "$URL/api/orders/$PROBE/status" -H "authorization: Bearer $STAFF" \
    -H 'content-type: application/json' -d '{"action":"confirm","expectedVersion":1}' | sed 's/^/confirm /' >>"$WORK/probes"
  probe "$URL/api/orders" -H "authorization: Bearer $CUSTOMER" -H 'content-type: application/json' \
    -H "Idempotency-Key: outage-probe-$N" -d "$ORDER_BODY" | sed 's/^/create  /' >>"$WORK/probes"
  echo "readyz $(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz") healthz $(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" >>"$WORK/ready"
  sleep 1
done
pg_start
UP=$(now)
until curl -sf "$URL/readyz" >/dev/null 2>&1; do sleep 0.1; done
echo "== Postgres back; /readyz 200 after $(since "$UP") s, server pid $SERVER still the same: $(kill -0 "$SERVER" && echo yes)"

echo "== write probes during the outage (status code seconds)"
sort "$WORK/probes" | awk '{k=$1" "$2" "$3; n[k]++; if ($4>max[k]) max[k]=$4} END {for (k in n) printf "  %-36s x%-4d max %.3f s\n", k, n[k], max[k]}'
echo "  readiness during the outage: $(sort "$WORK/ready" | uniq -c | tr -s ' ' | paste -sd ';')"

wait "$SIM" || true
SIM=""
# A probe creation accepted during the outage would be an extra order.
PROBES_CREATED=$((PROBES_CREATED + $(grep -c "^create  201" "$WORK/probes" || true)))
STATE=$(curl -s "$URL/api/orders/$PROBE" -H "authorization: Bearer $CUSTOMER" | sed -n 's/.*"status":"\([A-Z_]*\)","version":\([0-9]*\).*/\1 v\2/p' | head -1)
AFTER=$(probe -X PATCH "$URL/api/orders/$PROBE/status" -H "authorization: Bearer $STAFF" \
  -H 'content-type: application/json' -d '{"action":"confirm","expectedVersion":1}')
STORED=$(psql "$DB" -Atc "SELECT count(*) FROM orders")
PLACED=$(tail -1 "$WORK/sim.out" | sed -n 's/.*"ordersPlaced":\([0-9]*\).*/\1/p')
echo "== nothing changed: probe order after the outage $STATE, its confirm now: $AFTER"
echo "  orders stored $STORED = placed by the simulator $PLACED + probes $PROBES_CREATED ? $([ "$STORED" = $((PLACED + PROBES_CREATED)) ] && echo yes || echo NO)"

echo "== fan-out, the simulator's 5 s windows (time from the outage start)"
awk -v down="$DOWN" -v up="$UP" '/sim: .*locations/ {
    t = $1 - down; phase = (t <= 0) ? "before" : (t - 5 >= 0 && t <= up - down) ? "OUTAGE" : (t > up - down + 5) ? "after" : "edge";
    match($0, /[0-9]+\/s received/); recv = substr($0, RSTART, RLENGTH);
    match($0, /p99 [0-9.-]+ ms/); p = substr($0, RSTART, RLENGTH);
    match($0, /errors [0-9]+/); e = substr($0, RSTART, RLENGTH);
    printf "  %+6.0f s  %-6s  %-16s %-14s %s\n", t, phase, recv, p, e }' "$WORK/sim.err"
echo "== simulator report"
grep -v '^{' "$WORK/sim.out" | sed 's/^/  /'
echo "== server log (warnings and errors, first 10)"
sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log" | grep -E "WARN|ERROR" | cut -c1-220 | sort | uniq -c | sort -rn | head -10
