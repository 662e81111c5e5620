"""The autoscale planner: safety properties over random fleets, the forecast on a
synthetic history, settings errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from usher.errors import UsherError
from usher.planner.autoscale import Autoscale, Citrix
from usher.planner.forecast import DemandForecast
from usher.planner.power import (BOOT, DRAIN, ENABLE, LOGOFF, SHUTDOWN, FleetView, action_valid)
from usher.planner.settings import GroupSettings, PlannerSettings, SettingsError

OFF, BOOTING, ON, SHUTTING = 0, 1, 2, 3
ENABLED, DRAIN_M, MAINT = 0, 1, 2


@st.composite
def fleets(draw):
    n = draw(st.integers(1, 24))
    nz, npool = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    power = np.array(draw(st.lists(st.sampled_from([OFF, BOOTING, ON, ON, ON, SHUTTING]), min_size=n, max_size=n)))
    mode = np.array(draw(st.lists(st.sampled_from([ENABLED, ENABLED, DRAIN_M, MAINT]), min_size=n, max_size=n)))
    seats = np.array(draw(st.lists(st.integers(1, 20), min_size=n, max_size=n)), dtype=np.int64)
    sessions = np.array([draw(st.integers(0, int(s))) if p == ON else 0 for p, s in zip(power, seats)],
                        dtype=np.int64)
    pending = np.array([draw(st.integers(0, 2)) if p == ON and m == ENABLED else 0 for p, m in zip(power, mode)],
                       dtype=np.int64)
    down = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) & (power == OFF)
    excluded = np.array(draw(st.lists(st.sampled_from([False, False, False, True]), min_size=n, max_size=n)))
    zone = np.array(draw(st.lists(st.integers(0, nz - 1), min_size=n, max_size=n)), dtype=np.int64)
    pool = np.array(draw(st.lists(st.integers(0, npool - 1), min_size=n, max_size=n)), dtype=np.int64)
    now = draw(st.integers(0, 86_399))
    return FleetView(float(now), power, mode, sessions, pending, np.zeros(n, np.int64), seats, zone, pool, down,
                     np.ones(n, bool), [f"z{k}" for k in range(nz)], [f"p{k}" for k in range(npool)],
                     excluded=excluded)


def _settings(draw_min, delay):
    return PlannerSettings(GroupSettings(min_powered=draw_min, min_ready=1, power_off_delay_minutes=delay,
                                         off_delay_from="drain", cooldown_minutes=0.0, buffer_pct=0.0,
                                         hysteresis_pct=0.0))


def _check(view, actions):
    touched = set()
    for a in actions:
        i = a.server
        assert a.reason and isinstance(a.reason, str)
        assert not view.excluded[i] and view.mode[i] != MAINT and not view.down[i], a
        assert action_valid(a.kind, int(view.power[i]), int(view.mode[i]), int(view.sessions[i]),
                            int(view.pending[i]), bool(view.down[i])), a
        assert a.kind != LOGOFF
        if a.kind == SHUTDOWN:
            assert view.sessions[i] == 0 and view.pending[i] == 0
        if a.kind == DRAIN:
            assert view.pending[i] == 0
        assert i not in touched, "one action per server and call"
        touched.add(i)


@settings(max_examples=150, deadline=None)
@given(fleets(), st.integers(0, 3), st.sampled_from([0.0, 30.0]), st.booleans())
def test_actions_are_safe(view, min_powered, delay, citrix):
    pol = (Citrix if citrix else Autoscale)(_settings(min_powered, delay))
    actions = pol.plan(view, view.now)
    _check(view, actions)
    # apply the actions to a copy of the view: the minimums hold afterwards
    power, mode = view.power.copy(), view.mode.copy()
    for a in actions:
        assert action_valid(a.kind, int(power[a.server]), int(mode[a.server]), int(view.sessions[a.server]),
                            int(view.pending[a.server]), bool(view.down[a.server])), a
        if a.kind == BOOT:
            power[a.server] = BOOTING
        elif a.kind == SHUTDOWN:
            power[a.server] = SHUTTING
        elif a.kind == DRAIN:
            mode[a.server] = DRAIN_M
        elif a.kind == ENABLE:
            mode[a.server] = ENABLED
    nz = len(view.zone_names)
    g = view.pool * nz + view.zone
    for k in np.unique(g):
        m = g == k
        before = int((((view.power == ON) | (view.power == BOOTING)) & m).sum())
        after = int((((power == ON) | (power == BOOTING)) & m).sum())
        assert after >= min(before, min_powered), "never below min_powered by its own shutdowns"
        ready_before = int((((view.power == ON) | (view.power == BOOTING)) & (view.mode == ENABLED) & m
                            & ~view.excluded).sum())
        ready_after = int((((power == ON) | (power == BOOTING)) & (mode == ENABLED) & m & ~view.excluded).sum())
        assert ready_after >= min(ready_before, 1), "never leaves a group without a ready server"


@settings(max_examples=60, deadline=None)
@given(fleets())
def test_drained_server_that_took_a_session_is_not_shut(view):
    pol = Autoscale(_settings(0, 0.0))
    actions = pol.plan(view, view.now)
    drained = [a.server for a in actions if a.kind == DRAIN]
    if not drained:
        return
    # the drained servers take a session (a reconnect) and lose it again before the next call
    v2 = FleetView(view.now + 60, view.power, view.mode.copy(), view.sessions.copy(), view.pending, view.load_index,
                   view.max_sessions, view.zone, view.pool, view.down, view.want_on, view.zone_names,
                   view.pool_names, excluded=view.excluded)
    for i in drained:
        v2.mode[i] = DRAIN_M
        v2.sessions[i] += 1
    pol.plan(v2, v2.now)
    for i in drained:
        v2.sessions[i] = 0
    later = pol.plan(v2, v2.now + 1)
    assert not any(a.kind == SHUTDOWN and a.server in drained for a in later if pol.gs[0].power_off_delay_minutes)


def test_forecast_learns_a_synthetic_history():
    """Two weekdays of a ramp at 07:00 teach the forecast: on the third, at 06:50,
    the peak over the next 15 minutes is the ramp's top, not the current level."""
    fc = DemandForecast(2)
    t = np.arange(0, 86_400, 60.0)
    curve = np.where((t >= 7 * 3600) & (t < 18 * 3600), 1000.0, 100.0)
    for day in range(2):
        for now, d in zip(t, curve):
            fc.observe(now, np.array([d, d / 10]), "weekday")
        fc.close_day()
    for now, d in zip(t[t < 6.8 * 3600], curve[t < 6.8 * 3600]):
        fc.observe(now, np.array([d, d / 10]), "weekday")
    now = 6 * 3600 + 50 * 60
    peak = fc.peak(now, 15 * 60)
    assert peak[0] > 900 and peak[1] > 90
    assert fc.peak(now, 15 * 60, seasonal=False)[0] < 200  # without history: the level
    assert fc.profile("weekend") is None and fc.profile("holiday") is None


def test_forecast_follows_an_unseen_spike():
    fc = DemandForecast(1)
    for k in range(30):
        fc.observe(k * 60.0, np.array([100.0 + 20 * k]))
    assert fc.peak(30 * 60.0, 600)[0] > 100 + 20 * 29


def test_settings_errors_name_the_key():
    with pytest.raises(SettingsError, match="buffer_pct"):
        PlannerSettings.from_dict({"default": {"buffer_pct": -1}})
    with pytest.raises(UsherError, match="max_powered"):
        PlannerSettings.from_dict({"pool": {"records": {"max_powered": 0, "min_powered": 2}}})
    with pytest.raises(SettingsError, match="schedule.weekday"):
        PlannerSettings.from_dict({"default": {"schedule": {"weekday": [{"start": "09:00", "end": "08:00"}]}}})
    with pytest.raises(SettingsError, match="nonsense"):
        PlannerSettings.from_dict({"default": {"nonsense": 1}})
    s = PlannerSettings.from_dict({"default": {"buffer_pct": 4, "schedule": {"weekday": [
        {"start": "06:00", "end": "18:00", "min_on": 5}]}}, "group": {"records/DC-North": {"min_powered": 3}}})
    g = s.for_group("records", "DC-North")
    assert g.buffer_pct == 4.0 and g.min_powered == 3
    assert g.schedule.slot(7 * 3600, 0, False).min_on == 5
    assert g.schedule.slot(7 * 3600, 6, False) is None


def test_plan_is_cheap_enough_to_call_every_minute():
    """Shape only (no timing): 1,400 servers, every action for a distinct server."""
    rng = np.random.default_rng(3)
    n = 1400
    power = rng.choice([OFF, ON], n, p=[0.4, 0.6])
    sessions = np.where(power == ON, rng.integers(0, 20, n), 0)
    view = FleetView(36_000.0, power, np.zeros(n, np.int64), sessions, np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.full(n, 20), rng.integers(0, 3, n), rng.integers(0, 3, n), np.zeros(n, bool),
                     np.ones(n, bool), ["a", "b", "c"], ["r", "i", "x"])
    acts = Autoscale().plan(view, view.now)
    assert len({a.server for a in acts}) == len(acts)


def _two_zones(down_a, sessions_a):
    """One pool in two zones of 10 servers each (20 seats): zone a's 5 on servers hold
    ``sessions_a`` sessions each (or are down), zone b has 3 on servers with 10 each."""
    n = 20
    zone = np.array([0] * 10 + [1] * 10, dtype=np.int64)
    power = np.array(([ON] * 5 + [OFF] * 5) * 2)
    power[10 + 3:10 + 5] = OFF
    sessions = np.where(power == ON, np.where(zone == 0, sessions_a, 10), 0).astype(np.int64)
    down = np.zeros(n, bool)
    if down_a:
        down[:10] = True
        power[:10] = OFF
        sessions[:10] = 0
    return FleetView(36_000.0, power, np.zeros(n, np.int64), sessions, np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.full(n, 20, np.int64), zone, np.zeros(n, np.int64), down, np.ones(n, bool), ["a", "b"], ["p"])


@pytest.mark.parametrize("failover", [True, False])
def test_failover_boots_for_a_dark_zone_in_the_surviving_zone(failover):
    pol = Autoscale(PlannerSettings(GroupSettings(buffer_pct=0.0, failover=failover, forecast=False, trend=False)))
    pol.plan(_two_zones(False, 16), 36_000.0)  # zone a holds 80 sessions
    actions = pol.plan(_two_zones(True, 16), 36_060.0)  # zone a goes dark
    boots = [a.server for a in actions if a.kind == BOOT]
    assert all(i >= 10 for i in boots)  # never a down server
    # zone b: 30 sessions + the 80 lost from zone a need 110 seats, 60 ready: 3 boots of 20 seats
    assert len(boots) == (3 if failover else 0)


def test_consolidation_marks_the_emptiest_and_keeps_headroom_open():
    from usher.planner.power import PLACE_LAST
    n = 10
    sessions = np.array([19, 18, 17, 10, 5, 3, 2, 1, 1, 0], dtype=np.int64)
    view = FleetView(50_000.0, np.full(n, ON), np.zeros(n, np.int64), sessions, np.zeros(n, np.int64),
                     (sessions * 500).astype(np.int64), np.full(n, 20, np.int64), np.zeros(n, np.int64),
                     np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool), ["z"], ["p"])
    gs = GroupSettings(buffer_pct=0.0, hysteresis_pct=500.0, consolidate_pct=10.0, consolidate_min_free=0, forecast=False, trend=False)
    actions = Autoscale(PlannerSettings(gs)).plan(view, view.now)
    marked = {a.server for a in actions if a.kind == PLACE_LAST}
    # headroom 10 % of 76 sessions = 7.6 free seats: the 3 fullest (1 + 2 + 3 = 6) and the 4th stay open
    assert marked == set(range(4, n))


@pytest.mark.parametrize("column", ["excluded", "registered", "sessions", "down", "pool"])
def test_a_column_of_the_wrong_length_is_refused_naming_it(column):
    """The compiled bookkeeping reads every column unchecked: one shorter than the
    fleet is an error naming it, before the planner's state moves."""
    from dataclasses import replace

    from usher.errors import InvalidArgument

    view = _two_zones(False, 16)
    pol = Autoscale(PlannerSettings(GroupSettings(buffer_pct=0.0, forecast=False, trend=False)))
    pol.plan(view, 36_000.0)
    before = (pol.idle_since.copy(), pol.drain_at.copy(), pol._now)
    base = getattr(view, column)
    short = (np.ones(20, bool) if base is None else base)[:5]
    with pytest.raises(InvalidArgument) as info:
        pol.plan(replace(view, **{column: short}), 36_060.0)
    assert info.value.field == f"view.{column}" and info.value.value == (5,)
    after = (pol.idle_since, pol.drain_at, pol._now)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1], equal_nan=True)
    assert before[2] == after[2]
    assert isinstance(pol.plan(view, 36_060.0), list)  # the right view still plans
