"""Power planner benchmarks: one ``plan(view, now)`` call of the autoscale planner
and of the reactive Citrix baseline, by fleet size (1,400 / 10,000 servers).

Design: the view is a steady mid-morning fleet (60 % on, 2 % draining, 10 % off,
sessions 0-20 per server, 3 zones x 3 pools) with a warmed-up forecast. Each round
is one call on a fresh planner copy whose state is the warmed one (``pedantic``
setup), so every round plans the same situation; the teardown checks that every
action is valid for its server (``usher.planner.power.action_valid``).
Target: a call for 1,400 servers <= 1 ms (docs/AUTOSCALE.md).

Run: ``pytest benchmarks/bench_planner.py --benchmark-only``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from usher.planner.autoscale import Autoscale, Citrix
from usher.planner.power import FleetView, action_valid

SIZES = [pytest.param(n, id=f"{n}srv") for n in (1_400, 10_000)]


def _view(n: int, now: float) -> FleetView:
    rng = np.random.default_rng(7)
    power = rng.choice([0, 2], n, p=[0.35, 0.65]).astype(np.int64)
    mode = np.where((power == 2) & (rng.random(n) < 0.03), 1, 0).astype(np.int64)
    seats = np.where(rng.random(n) < 0.04, 30, 20).astype(np.int64)
    sessions = np.where(power == 2, rng.integers(0, 21, n), 0).astype(np.int64)
    pending = np.where((power == 2) & (mode == 0), rng.integers(0, 2, n), 0).astype(np.int64)
    return FleetView(now, power, mode, sessions, pending, np.zeros(n, np.int64), seats, rng.integers(0, 3, n),
                     rng.integers(0, 3, n), np.zeros(n, bool), np.ones(n, bool), ["z0", "z1", "z2"],
                     ["records", "imaging", "remote"])


@pytest.mark.parametrize("cls", [Autoscale, Citrix], ids=["autoscale", "citrix"])
@pytest.mark.parametrize("n", SIZES)
def test_plan(benchmark, n, cls):
    view = _view(n, 10 * 3600.0)
    warm = cls()
    for k in range(30):  # a warmed forecast and bookkeeping
        warm.plan(_view(n, 10 * 3600.0 - 60 * (30 - k)), 10 * 3600.0 - 60 * (30 - k))
    out = {}

    def setup():
        out["p"] = copy.deepcopy(warm)
        return (out["p"], view), {}

    def call(p, v):
        out["a"] = p.plan(v, v.now)

    benchmark.pedantic(call, setup=setup, rounds=200, iterations=1)
    for a in out["a"]:
        i = a.server
        assert action_valid(a.kind, int(view.power[i]), int(view.mode[i]), int(view.sessions[i]),
                            int(view.pending[i]), bool(view.down[i]))
