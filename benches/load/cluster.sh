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
#   PERF_AT=15 PERF_SECS=15 bash benches/load/cluster.sh   # and a profile
#
# With PERF_AT, PERF_SECS of the run starting PERF_AT s after the
# simulator is ready are profiled: `perf record -e cpu-clock -a -g` into
# $OUT/perf.data (reports in $OUT/perf-*.txt), and the CPU seconds each
# process used in that window, from /proc (the three nodes, the simulator,
# nats-server, every postgres process, everything else).
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
PERF_AT=${PERF_AT:-}
PERF_SECS=${PERF_SECS:-15}
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

# Every process's CPU ticks (utime + stime) and the machine's, as JSON.
cpu_snapshot() {
  python3 - <<'PY'
import json, os
ticks = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks[pid] = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        pass
cpu = open("/proc/stat").readline().split()[1:]
print(json.dumps({"ticks": ticks, "all": sum(map(int, cpu[:3] + cpu[4:7]))}))
PY
}
if [ -n "$PERF_AT" ]; then
  until grep -q 'sim: ready' "$OUT/sim.log" 2>/dev/null; do sleep 0.5; done
  sleep "$PERF_AT"
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  cpu_snapshot >"$OUT/cpu-before.json"
  perf record -e cpu-clock -a -g -o "$OUT/perf.data" -- sleep "$PERF_SECS" 2>"$OUT/perf-record.log"
  cpu_snapshot >"$OUT/cpu-after.json"
  echo "${PIDS[*]} $SIM $(pgrep -x nats-server | head -1)" >"$OUT/pids.txt"
  python3 - "$OUT" "$PERF_SECS" "$load_before" "$(getconf CLK_TCK)" "$(pgrep -d, -x postgres)" <<'PY' | tee "$OUT/cpu.txt"
import json, sys
out, secs, load, hz, pg = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
before, after = (json.load(open(f"{out}/cpu-{w}.json")) for w in ("before", "after"))
n1, n2, n3, sim, nats = open(f"{out}/pids.txt").read().split()
groups = {"node1": [n1], "node2": [n2], "node3": [n3], "sim": [sim], "nats-server": [nats],
          "postgres (all)": [p for p in pg.split(",") if p]}
used = lambda pid: after["ticks"].get(pid, 0) - before["ticks"].get(pid, after["ticks"].get(pid, 0))
print(f"CPU seconds in the {secs:g} s window (2 cores: {2 * secs:g} s at most); load average before: {load}")
named = 0
for name, pids in groups.items():
    t = sum(used(p) for p in pids)
    named += t
    print(f"{name:16} {t / hz:6.2f} s")
total = after["all"] - before["all"]
print(f"{'everything':16} {total / hz:6.2f} s (other processes and the kernel: {(total - named) / hz:.2f} s)")
PY
fi

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
# What the three nodes moved, summed: bus messages (order subjects, geo
# subjects) and socket frames out, by kind; the work per position.
for url in "${URLS[@]}"; do
  curl -sf "$url/metrics" -H "authorization: Bearer $DISPATCH__METRICS__TOKEN" || true
done | python3 -c '
import collections, re, sys
want = ("dispatch_cluster_order_bus_messages_total", "dispatch_cluster_geo_messages_total",
        "dispatch_ws_messages_out_total", "dispatch_location_updates_total")
sums = collections.Counter()
for line in sys.stdin:
    if line.startswith(want):
        key, value = line.rsplit(" ", 1)
        sums[key] += float(value)
for key in sorted(sums):
    print(f"{key} {sums[key]:.0f}")
' | tee "$OUT/messages.txt"
if [ -n "$PERF_AT" ]; then
  perf report -i "$OUT/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
    grep -v '^$' | head -60 >"$OUT/perf-comm-dso.txt" || true
  # Each process's share of every sample (idle included: cpu-clock samples both cores).
  perf script -i "$OUT/perf.data" -F comm,pid 2>/dev/null |
    python3 -c '
import collections, sys
names = dict(zip(open(sys.argv[1]).read().split(), ["node1", "node2", "node3", "sim", "nats-server"]))
counts = collections.Counter()
for line in sys.stdin:
    *comm, pid = line.split()
    comm = " ".join(comm)
    name = names.get(pid) or {"postgres": "postgres", "swapper": "idle"}.get(comm, "other processes")
    counts[name] += 1
total = sum(counts.values())
for name, n in counts.most_common():
    print(f"{name:16} {100 * n / total:5.1f}% of both cores")
' "$OUT/pids.txt" | tee "$OUT/perf-share.txt" || true
  for pid in $(cat "$OUT/pids.txt"); do
    perf report -i "$OUT/perf.data" --no-children --pid "$pid" --sort sym --stdio -g none 2>/dev/null |
      grep -v '^$' | head -70 >"$OUT/perf-sym-$pid.txt" || true
  done
  echo "profile: $OUT/cpu.txt, $OUT/perf-comm-dso.txt, $OUT/perf-sym-<pid>.txt (node1..3, sim, nats: $(cat "$OUT/pids.txt"))"
fi
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
