"""The simulator with a rollout: books balance, safety rules hold every interval."""

import numpy as np
import pytest

from usher.planner.autoscale import Autoscale
from usher.planner.rollout import DRAINING, REBOOTING, ROLLBACK
from usher.sim.day import simulate_day
from usher.sim.scenario import Scenario


def _day(bad=False, **ro):
    return Scenario().scaled(0.1).with_changes(
        day={"hours": 6.0},
        rollout={"enabled": True, "start": "00:00", "deadline": "05:00", "soak_minutes": 10.0,
                 "max_unavailable_pct": 25.0, "bad_image": bad, **ro})


@pytest.mark.parametrize("bad", [False, True])
@pytest.mark.parametrize("power", ["fixed", "autoscale"])
def test_books_balance_with_a_rollout(power, bad):
    r = simulate_day(_day(bad), power_policy=Autoscale() if power == "autoscale" else None)
    k = r.kpis
    assert k["books.mismatch"] == 0
    assert k["rollout.servers"] == k["scenario.servers"]
    assert k["rollout.forced_logoffs"] == 0
    if bad:
        assert k["rollout.max_on_new_image"] <= k["rollout.canaries"]
        assert k["rollout.updated"] == 0 or not k["rollout.halted"]


def test_never_more_unavailable_than_allowed_nor_a_reboot_with_sessions():
    from usher.sim import day as day_mod

    seen = []
    orig = day_mod.apply_actions

    def spy(d, tick, now, actions):
        ro = d.rollout.rollout
        if ro.status is not None:
            held = np.isin(ro.status, (DRAINING, REBOOTING, ROLLBACK))
            for k, members in ro.members:
                seen.append(int(held[members].sum()) <= ro._limit(len(members)))
        for a in actions:
            if a.kind == "shutdown":
                seen.append(int(d.sessions_v[a.server]) == 0)
        return orig(d, tick, now, actions)

    day_mod.apply_actions = spy
    try:
        simulate_day(_day())
    finally:
        day_mod.apply_actions = orig
    assert seen and all(seen)
