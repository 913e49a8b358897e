#!/usr/bin/env python3
"""Where a replay's courier time goes, and which orders it lost.

    benches/mdrp_trips.py ../shared/mdrp/6o50t100s2p125 target/mdrp/6o50t100s2p125

Reads an instance and the three solution files `dispatchd replay` wrote.
A trip runs from the courier's departure to the restaurant to its last
drop-off plus half a service time. Prints the courier minutes per
delivered order (before the pickup and after it), the bundle sizes, and
for every undelivered order its best case (a courier waiting at the
restaurant at placement) and how many couriers on duty were idle during
its 90 minutes.
"""
import collections
import math
import sys


def rows(path):
    with open(path) as f:
        return [line.split() for line in f.read().strip().split("\n")][1:]


inst, sol = sys.argv[1], sys.argv[2]
orders = {r[0]: dict(x=float(r[1]), y=float(r[2]), placed=int(r[3]), rest=r[4], ready=int(r[5]))
          for r in rows(f"{inst}/orders.txt")}
rests = {r[0]: (float(r[1]), float(r[2])) for r in rows(f"{inst}/restaurants.txt")}
couriers = {r[0]: dict(on=int(r[3]), off=int(r[4])) for r in rows(f"{inst}/couriers.txt")}
params = rows(f"{inst}/instance_parameters.txt")[0]
mpm, half_p, half_d, max_ctd = float(params[0]), int(params[1]) // 2, int(params[2]) // 2, int(params[4])


def travel(a, b):
    return math.ceil(math.dist(a, b) / mpm)


delivered = {r[0]: dict(pickup=int(r[3]), drop=int(r[4])) for r in rows(f"{sol}/solution_info_orders.txt")}
sizes = collections.Counter(len(r) - 3 for r in rows(f"{sol}/solution_info_assignments.txt"))
moves = collections.defaultdict(list)
for r in rows(f"{sol}/solution_info_couriers.txt"):
    moves[r[0]].append((int(r[1]), r[3]))
busy = collections.defaultdict(list)
before_pickup = after_pickup = 0
for c, ms in moves.items():
    i = 0
    while i < len(ms):
        departure = ms[i][0]
        j, drops = i + 1, []
        while j < len(ms) and ms[j][1] in orders:
            drops.append(ms[j][1])
            j += 1
        if drops:
            pickup = delivered[drops[0]]["pickup"]
            free = delivered[drops[-1]]["drop"] + half_d
            busy[c].append((departure, free))
            before_pickup += pickup - departure
            after_pickup += free - pickup
        i = j
end = max(c["off"] for c in couriers.values()) + 2
idle = [0] * end
for c, duty in couriers.items():
    for m in range(duty["on"], duty["off"]):
        if not any(s <= m < e for s, e in busy[c]):
            idle[m] += 1
n = len(delivered)
ctd = [delivered[o]["drop"] - orders[o]["placed"] for o in delivered]
print(f"orders {len(orders)} delivered {n} click-to-door mean {sum(ctd) / max(1, n):.2f}")
print(f"courier minutes per delivered order {(before_pickup + after_pickup) / max(1, n):.2f}: "
      f"departure to pickup {before_pickup / max(1, n):.2f}, pickup to free {after_pickup / max(1, n):.2f}")
print("bundle sizes", dict(sorted(sizes.items())))
for o in sorted((o for o in orders if o not in delivered), key=lambda o: orders[o]["placed"]):
    od = orders[o]
    best = (max(od["ready"], od["placed"] + half_p) + half_p
            + travel(rests[od["rest"]], (od["x"], od["y"])) + half_d - od["placed"])
    window = [idle[m] for m in range(od["placed"], min(end, od["placed"] + max_ctd))]
    print(f"  lost {o}: placed {od['placed']}, ready {od['ready']}, best case {best} min, "
          f"idle couriers min / mean over its window {min(window, default=0)} / "
          f"{sum(window) / max(1, len(window)):.1f}")
