"""``Journal.submit`` in process: the apply of ``POST /v1/ops`` without HTTP.

On the 1,400-server fleet of mix (b) (fleets.py, no sessions), an in-memory journal
(``usher.journal.in_memory``: the same applying, naming and records as on disk, no
writer thread) is given what ``usher serve`` gives it: bodies decoded by
``usher.service.opsbody.decode`` (launches without ``t``). Measured, as CPU time
(``time.process_time``: on a shared machine the steadier figure):

- array: arrays of 1,000 launches, each followed by the array of their logoffs
  (untimed, so the fleet never fills): microseconds per launch;
- single: one launch per submit, each followed by its logoff (untimed): microseconds
  per submit.

    python benchmarks/bench_journal_submit.py            # prints one JSON line
    python -m pytest benchmarks/bench_journal_submit.py -p no:cacheprovider --benchmark-disable  # CI: briefly
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import msgspec

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE, MIX, USERS = 1400, "b", 5000


def measure(arrays: int = 60, singles: int = 5000, warm: int = 5) -> dict:
    sys.path.insert(0, HERE)
    import fleets

    from usher import journal
    from usher.service import opsbody

    fleet = fleets.build(SIZE, MIX)
    apps = list(fleet.apps)
    j = journal.in_memory(fleet.s)
    seq = 0

    def body(n):
        nonlocal seq
        items = [{"op": "launch", "id": f"L{k}", "user": f"u{k % USERS:07d}", "app": apps[k % len(apps)]}
                 for k in range(seq, seq + n)]
        seq += n
        return msgspec.json.encode(items if n > 1 else items[0]), [{"op": "logoff", "session": o["id"]} for o in items]

    def run(n, rounds):
        spent, placed = 0.0, 0
        for r in range(rounds):
            launches, logoffs = body(n)
            ops, _ = opsbody.decode(launches, j.now)
            started = time.process_time()
            _, outputs, _ = j.submit(ops)
            if r >= warm:
                spent += time.process_time() - started
            placed += sum(o is not None and o.outcome == "placed" for o in outputs)
            j.submit(opsbody.decode(msgspec.json.encode(logoffs), j.now)[0])
        return spent / ((rounds - warm) * n) * 1e6, placed

    array_us, array_placed = run(1000, arrays + warm)
    single_us, single_placed = run(1, singles + warm)
    return {"array_us_per_launch": array_us, "single_us_per_submit": single_us,
            "placed": array_placed + single_placed}


def test_journal_submit(benchmark):
    quick = benchmark.disabled
    result = benchmark.pedantic(measure, kwargs=dict(arrays=3 if quick else 60, singles=50 if quick else 5000),
                                rounds=1, iterations=1)
    assert result["placed"] > 0
    benchmark.extra_info.update(result)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Journal.submit in process (see the module's doc)")
    p.add_argument("--arrays", type=int, default=60)
    p.add_argument("--singles", type=int, default=5000)
    a = p.parse_args()
    print(json.dumps(measure(a.arrays, a.singles)))
