"""The simulated hospital day (1,400 servers, 17,000 sessions at the peak, ~3.7 M engine
operations) through ``usher.sim.simulator.simulate_day``: wall time of one whole day, fleet
build included, and the share spent inside the engine. Target: <= 2 s on the 2-core
development machine (benchmarks/README.md). Then the day and a week (seven days, one
planner learning across them) under the autoscale planner, as ``usher simulate`` runs
them by default (``--power autoscale``, ``--days 7``): CPU time of the loops is in the
KPIs' ``run.loop_seconds`` (wall) and reported as extra info.

Run:
    python -m pytest benchmarks/bench_day.py --benchmark-only --benchmark-json=day.json
    python benchmarks/report.py day.json
"""

from __future__ import annotations

import pytest

from usher.planner import power_policy
from usher.sim.days import simulate_days
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


@pytest.mark.parametrize("days", [1, 7])
def test_simulated_days_autoscale(benchmark, days):
    sc = Scenario().with_changes(day={"days": days})
    seen = []

    def target():
        seen.append(simulate_days(sc, power_policy=power_policy("autoscale", None,
                                                                sc.power.policy_interval_seconds)))

    benchmark.pedantic(target, rounds=1 if benchmark.disabled or days > 1 else 3, warmup_rounds=0)
    run = seen[-1]
    assert len(run.days) == days
    for day in run.days:  # every day happened and its books balance
        k = day.kpis
        assert k["books.mismatch"] == 0 and k["books.unexpected_decisions"] == 0
        assert k["launches.placed"] > 10_000
    benchmark.extra_info.update(kind="day", size=1400, mix=f"autoscale-{days}d", impl="usher", decisions=1,
                                loop_s=sum(d.kpis["run.loop_seconds"] for d in run.days),
                                engine_s=sum(d.kpis["engine.seconds"] for d in run.days),
                                operations=sum(d.kpis["engine.ops"] for d in run.days))
