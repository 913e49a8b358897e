#!/usr/bin/env bash
# Three release nodes in cluster mode on one machine (a fresh Postgres
# database on 127.0.0.1:5432, a fresh bucket on the NATS at 127.0.0.1:4222)
# and `dispatchd sim --server URL1,URL2,URL3` spread over them: the
# cross-node fan-out figures of issue 12 and, with KILL_AT, a SIGKILL of the
# second node mid-run (failover: time until every region is held by a live
# node again, and the simulator's reconnection figures).
#
#   cargo build --release --bin dispatchd
#   bash benches/load/cluster.sh                    # 1000 drivers at 10 Hz, 40 s
#   DRIVERS=500 HZ=4 DURATION=60 KILL_AT=25 bash benches/load/cluster.sh
#
# Cluster settings are the defaults (lease TTL 5 s, renewal 1 s, rebalance
# 1 s, 0.05° regions). Logs and the simulator's JSON stay in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/dispatchd}
DRIVERS=${DRIVERS:-1000}
HZ=${HZ:-10}
DURATION=${DURATION:-40}
KILL_AT=${KILL_AT:-}
PG=postgres://postgres@127.0.0.1:5432
OUT=$(mktemp -d)
DB=dispatchd_bench_cluster_$$
BUCKET=dispatchd_bench_cluster_$$_$RANDOM
psql "$PG/postgres" -qc "CREATE DATABASE $DB"

export DISPATCH__AUTH__JWT_SECRET=cluster-bench-jwt-secret-0123456789abcdef0123
export DISPATCH__METRICS__TOKEN=cluster-bench-metrics-token-0123456789abcdef
export DISPATCH__CLUSTER__NATS_URL=nats://127.0.0.1:4222
export DISPATCH__CLUSTER__BUCKET=$BUCKET
export DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS=1
export DISPATCH__WS__MESSAGES_PER_SEC=200
export DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE=100000
export DISPATCH__LOG__LEVEL=warn,dispatchd=info

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
URLS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT

for i in 1 2 3; do
  port=$(free_port)
  demo=()
  [ "$i" = 1 ] && demo=(--demo)
  "$BIN" serve "${demo[@]}" --listen "127.0.0.1:$port" --database-url "$PG/$DB" \
    >"$OUT/node$i.log" 2>&1 &
  PIDS+=($!)
  URLS+=("http://127.0.0.1:$port")
  # The first loads the demo city before the others start.
  for _ in $(seq 1 120); do curl -sf "${URLS[-1]}/healthz" >/dev/null && break; sleep 0.5; done
done
for url in "${URLS[@]}"; do
  for _ in $(seq 1 120); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.5; done
done
TOKEN=$(curl -sf "${URLS[0]}/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"admin@demo.local","password":"demo-pass"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
held() { # regions, and how many are held by a node in $2 (a space-separated list)
  curl -sf "$1/api/admin/cluster" -H "authorization: Bearer $TOKEN" |
    python3 -c 'import json,sys; v=json.load(sys.stdin); live=set(sys.argv[1].split()); r=v["regions"]; print(len(r), sum(1 for x in r if x.get("node") in live), len(v["nodes"]))' "$2"
}
nodes_of() { curl -sf "$1/api/admin/cluster" -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nodeId"])'; }
IDS=()
for url in "${URLS[@]}"; do IDS+=("$(nodes_of "$url")"); done
echo "nodes: ${IDS[*]}; regions, held, live nodes: $(held "${URLS[0]}" "${IDS[*]}")"

ulimit -n 20000
SERVERS=$(IFS=,; echo "${URLS[*]}")
"$BIN" sim --server "$SERVERS" --drivers "$DRIVERS" --customers "$DRIVERS" \
  --order-rate "$((DRIVERS / 10))" --max-orders "$DRIVERS" --location-hz "$HZ" --duration "$DURATION" \
  --time-scale 1 --kitchen-secs 0.5 --accept-probability 1 --json >"$OUT/sim.json" 2>"$OUT/sim.log" &
SIM=$!

if [ -n "$KILL_AT" ]; then
  sleep "$KILL_AT"
  kill -9 "${PIDS[1]}"
  KILLED=$(date +%s.%N)
  echo "SIGKILL node 2 (${IDS[1]}) at ${KILL_AT} s"
  LIVE="${IDS[0]} ${IDS[2]}"
  while :; do
    read -r total ok live <<<"$(held "${URLS[0]}" "$LIVE" || echo "0 -1 0")"
    if [ "$total" -gt 0 ] && [ "$ok" = "$total" ]; then
      echo "every region ($total) held by a live node again $(python3 -c "import time; print(round(time.time() - $KILLED, 2))") s after the kill ($live live nodes seen)"
      break
    fi
    sleep 0.2
  done
fi
wait "$SIM" || true
python3 - "$OUT/sim.json" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip().startswith("{")]
r = json.loads(lines[-1])
keys = ["locationUpdatesSentPerSec", "locationUpdatesPerSec", "fanoutLatencyMs",
        "fanoutCrossNodeLatencyMs", "ordersPlaced", "ordersAssigned", "ordersDelivered",
        "reconnections", "customerResumeMs", "errors"]
for k in keys:
    print(f"{k}: {json.dumps(r.get(k))}")
EOF
echo "logs and the simulator's JSON: $OUT"
