"""A steady-state single-launch loop to profile (benchmarks/README.md, "Where the time goes").

    py-spy record --native -r 2000 -f raw -o launch.txt -- python benchmarks/profile_launch.py b 20

Arguments: mix (a or b, default b), seconds (default 20). The timed line is the list
comprehension calling ``s.launch``; the rest is the untimed steady-state setup.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fleets  # noqa: E402

mix = sys.argv[1] if len(sys.argv) > 1 else "b"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
f = fleets.build(1400, mix)
s, now = f.s, f.now
k, n, spent = 500, 0, 0.0
deadline = time.perf_counter() + seconds
while time.perf_counter() < deadline:
    reqs = f.prepare(k)
    launch = s.launch
    t0 = time.perf_counter()
    out = [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]
    spent += time.perf_counter() - t0
    f.settle(reqs, out)
    n += k
print(f"single launch, mix {mix}: {spent / n * 1e9:.0f} ns per decision over {n:,}")
