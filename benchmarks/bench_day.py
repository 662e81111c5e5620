"""The simulated hospital day (1,400 servers, 17,000 sessions at the peak, ~3.7 M engine
operations) through ``usher.sim.simulator.simulate_day``: wall time of one whole day, fleet
build included, and the share spent inside the engine. Target: <= 2 s on the 2-core
development machine (benchmarks/README.md).

Run:
    python -m pytest benchmarks/bench_day.py --benchmark-only --benchmark-json=day.json
    python benchmarks/report.py day.json
"""

from __future__ import annotations

import pytest

from usher.sim.scenario import Scenario
from usher.sim.simulator import simulate_day


@pytest.mark.parametrize("policy", ["horizontal"])
def test_simulated_day(benchmark, policy):
    sc = Scenario().with_changes(day={"policy": policy})
    seen = []

    def target():
        seen.append(simulate_day(sc))

    benchmark.pedantic(target, rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    k = seen[-1].kpis
    # the day really happened: its shape, and books that balance
    assert abs(k["sessions.peak"] - 17_000) <= 0.05 * 17_000, k["sessions.peak"]
    assert k["books.mismatch"] == 0 and k["books.unexpected_decisions"] == 0
    assert k["launches.placed"] > 50_000
    benchmark.extra_info.update(kind="day", size=1400, mix=policy, impl="usher", decisions=1,
                                engine_s=k["engine.seconds"], operations=k["engine.ops"])
