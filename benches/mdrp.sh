#!/usr/bin/env bash
# Replays the shared Grubhub MDRP instances one at a time through
# `dispatchd replay` (release build), checks each solution with the
# project's checker, and prints one table row per instance.
#
#   cargo build --release && benches/mdrp.sh [MDRP_DIR] [OUT_DIR]
#
# MDRP_DIR defaults to ../shared/mdrp (the instances are not copied into
# this repository); OUT_DIR (default target/mdrp) receives each instance's
# three solution files, for the public evaluator.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
mdrp="${1:-$here/../../shared/mdrp}"
out="${2:-$here/target/mdrp}"
bin="$here/target/release/dispatchd"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -d "$mdrp" ] || { echo "no instances in $mdrp" >&2; exit 1; }
echo "| instance | orders | delivered | click-to-door mean / p90 / max | late | orders per bundle | hopeless | wall s |"
echo "|---|---|---|---|---|---|---|---|"
for name in 1o50t100s1p100 1r50t100s2p100 2o50t75s1p100 2o100t100s1p100 4r50t75s2p125 6o50t100s2p125 8o100t75s1p100 7o100t100s1p125; do
  [ -d "$mdrp/$name" ] || { echo "| $name | (absent) |"; continue; }
  "$bin" replay --mdrp "$mdrp/$name" --out "$out/$name" --json --check | tail -1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
c = r["clickToDoorMin"]
print("| %s | %d | %d | %.1f / %d / %d | %.0f%% | %.2f | %d | %.2f |" % (
    r["instance"], r["orders"], r["delivered"], c["mean"], c["p90"], c["max"],
    100 * r["overTargetShare"], r["ordersPerBundle"], r["hopeless"], r["wallSecs"]))'
done
