#!/usr/bin/env bash
# Schemathesis against a live `dispatchd serve --demo` on the OpenAPI
# document it serves, once per role (customer, restaurant staff, driver,
# admin), with the default response checks and the document's links
# (create an order, then read it). Run from anywhere after a build;
# SCHEMATHESIS_EXAMPLES sets the examples per operation (CI: a few, to stay
# under five minutes; benches/README.md records a longer run).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-10}"
VENV="${SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/dispatchd-schemathesis-$VERSION}"
if [ ! -x "$VENV/bin/schemathesis" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

BIN=target/debug/dispatchd
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
# Generous limits: the run is about shapes, not about being throttled
# (429 is documented where it can happen, and is still checked).
DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE=10000 \
DISPATCH__DRIVERS__LOCATION_UPDATES_PER_SEC=1000 \
    "$BIN" serve --demo --listen "127.0.0.1:$PORT" --database-url "sqlite:$WORK/db.sqlite" \
    >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

for _ in $(seq 1 100); do
    curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$BASE/readyz" >/dev/null

token() {
    curl -fsS "$BASE/api/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"demo-pass\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

# Every token first: the runs' own failed logins soon lock this client
# out of logging in (429, as documented).
declare -A TOKENS
for account in customer1 restaurant1 driver1 admin; do
    TOKENS[$account]="$(token "$account@demo.local")"
done

# Schemathesis keeps a cache in the working directory: not in the repo.
cd "$WORK"
status=0
# Admin last: it closes restaurants and deletes zones the others use.
for account in ${SCHEMATHESIS_ACCOUNTS:-customer1 restaurant1 driver1 admin}; do
    echo "== schemathesis as $account@demo.local ($EXAMPLES examples per operation)"
    # One worker: hypothesis in threads trips a CPython 3.11 bug
    # ("AST constructor recursion depth mismatch").
    if ! "$VENV/bin/schemathesis" --no-color run "$BASE/api/openapi.json" \
        --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
        --header "Authorization: Bearer ${TOKENS[$account]}" \
        --max-examples "$EXAMPLES" --seed 14 --workers 1 \
        --suppress-health-check all --warnings off; then
        status=1
    fi
done
# What the runs drew from the server, per route and status class: a run
# that only ever met 401 or 400 would be green and worthless.
curl -fsS "$BASE/metrics" -H "Authorization: Bearer ${TOKENS[admin]}" |
    python3 -c '
import re, sys, collections, json, urllib.request
doc = json.load(urllib.request.urlopen(sys.argv[1]))
documented = {m.upper() + " " + p for p, item in doc["paths"].items() for m in item}
seen = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    m = re.match(r"dispatch_http_requests_total\{(.*)\} (\S+)", line)
    if not m:
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1)))
    route = labels["method"] + " " + labels["route"]
    if route in documented:
        seen[route][labels["status"][0] + "xx"] += int(float(m.group(2)))
print("== responses by route (schemathesis and the logins)")
for route in sorted(seen):
    print(f"  {route:55} " + " ".join(f"{k}={v}" for k, v in sorted(seen[route].items())))
ok = sum(1 for c in seen.values() if c["2xx"])
print(f"  operations that answered 2xx: {ok} of {len(documented)}")
' "$BASE/api/openapi.json"
if [ "$status" -ne 0 ]; then
    echo "== schemathesis failed; the server's log:" >&2
    tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
