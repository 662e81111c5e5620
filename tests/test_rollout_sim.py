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


def _spied(scenario, spy_fn, power=None):
    """Run a day with ``spy_fn(d, now, actions)`` called on every interval's actions."""
    from usher.sim import day as day_mod

    orig = day_mod.apply_actions

    def spy(d, tick, now, actions):
        spy_fn(d, now, actions)
        return orig(d, tick, now, actions)

    day_mod.apply_actions = spy
    try:
        return simulate_day(scenario, power_policy=power)
    finally:
        day_mod.apply_actions = orig


@pytest.mark.parametrize("power", ["fixed", "autoscale"])
def test_a_halt_stops_every_further_drain(power):
    seen = {"halted": False, "after": 0}

    def spy(d, now, actions):
        ro = d.rollout.rollout
        if seen["halted"]:
            for a in actions:
                if a.kind == "drain" and a.reason.startswith("rollout"):
                    assert ro.status[a.server] == ROLLBACK, a  # only the rollback of a canary
                    seen["after"] += 1
                assert not (a.kind == "reimage" and a.image == ro.settings.image), a
        seen["halted"] = seen["halted"] or ro.phase == "halted"

    r = _spied(_day(bad=True), spy, Autoscale() if power == "autoscale" else None)
    assert seen["halted"] and r.kpis["rollout.halted"]
    assert r.kpis["rollout.max_on_new_image"] <= r.kpis["rollout.canaries"]


def test_a_restored_rollout_continues_the_same_plan_in_the_simulator():
    import pickle

    from usher.planner.rollout import Rollout

    def run(restart_at):
        log = []

        def spy(d, now, actions):
            if restart_at is not None and now >= restart_at and not log_restarted:
                # the broker restarts: the rollout is rebuilt from its saved state
                d.rollout.rollout = Rollout.from_dict(pickle.loads(pickle.dumps(d.rollout.rollout.to_dict())))
                log_restarted.append(now)
            log.extend((now, a.kind, a.server, a.reason) for a in actions)

        log_restarted: list = []
        r = _spied(_day(), spy)
        assert restart_at is None or log_restarted
        return log, r.kpis

    a, ka = run(None)
    b, kb = run(2 * 3600.0)  # mid-window, waves under way
    assert a == b
    assert {k: v for k, v in ka.items() if k.startswith("rollout.")} == \
        {k: v for k, v in kb.items() if k.startswith("rollout.")}
    assert ka["rollout.updated"] > ka["rollout.canaries"]


def test_the_report_has_a_rollout_panel(tmp_path):
    from matplotlib.image import imread

    from usher.sim.report import write_outputs

    plain = simulate_day(Scenario().scaled(0.1).with_changes(day={"hours": 2.0}))
    rolled = simulate_day(_day())
    assert plain.rollout_timeline is None and rolled.rollout_timeline
    write_outputs(plain, tmp_path / "plain")
    write_outputs(rolled, tmp_path / "rolled")
    h_plain = imread(tmp_path / "plain" / "report.png").shape[0]
    h_rolled = imread(tmp_path / "rolled" / "report.png").shape[0]
    assert h_rolled > h_plain  # the third row: servers by image and state


@pytest.mark.parametrize("power", ["fixed", "autoscale"])
def test_a_forced_logoff_updates_every_server_by_the_deadline_and_books_balance(power):
    r = simulate_day(_day(forced_logoff=True, max_unavailable_pct=50.0),
                     power_policy=Autoscale() if power == "autoscale" else None)
    k = r.kpis
    assert k["books.mismatch"] == 0 and k["logons.denied"] == 0 and k["launches.rejected"] == 0
    assert k["rollout.updated_by_deadline"] == k["rollout.servers"] == k["scenario.servers"]
    assert k["rollout.finished_at"] <= 5 * 3600
    assert k["rollout.forced_logoffs"] > 0 and k["rollout.forced_logoff_servers"] > 0
    assert k["rollout.users_warned"] > 0 and k["rollout.warnings"] >= k["rollout.users_warned"]
    assert k["rollout.min_spare_over_buffer"] >= 0
    logoffs = [a for a in r.actions if a[1] == "logoff"]
    warns = [a for a in r.actions if a[1] == "warn"]
    assert min(t for t, *_ in logoffs) >= 5 * 3600 - 20 * 60  # not before the logoff time
    assert {t for t, *_ in warns} == {5 * 3600 - 20 * 60 - m * 60 for m in (15, 5, 1)}


def test_logons_failing_on_the_new_image_halt_the_rollout_and_roll_the_canaries_back():
    r = simulate_day(_day(bad_image_launch_failure_pct=60.0))
    k = r.kpis
    assert k["rollout.halted"] and "launches on w2022-2507 failed" in k["rollout.halt_reason"]
    assert k["rollout.max_on_new_image"] <= k["rollout.canaries"]
    assert k["rollout.updated"] == 0  # the canaries are rolling back (once their sessions end)
    assert k["books.mismatch"] == 0 and k["logons.denied"] == 0


def test_with_autoscale_the_spare_seats_stay_over_the_buffer():
    k = simulate_day(_day(), power_policy=Autoscale()).kpis
    assert k["rollout.min_spare_over_buffer"] >= 0
    assert k["rollout.updated"] > k["rollout.canaries"]
