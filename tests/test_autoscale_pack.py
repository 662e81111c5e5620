"""Ramp-down packing (``pack``) and the zone reserve (``zone_reserve_pct``):
the keep set never leaves the free seats the group needs uncovered, marks only
servers able to take a session, is sticky with ``pack_hold`` (a kept server is
marked only when a whole server is surplus, a marked one unmarked only when the
room is short, a call's marks are a fixed point), and the reserve boots for a
zone's loss."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from usher.planner import kernels
from usher.planner.autoscale import Autoscale, autoscale_settings
from usher.planner.power import BOOT, DRAIN, PLACE_FIRST, PLACE_LAST, FleetView
from usher.planner.settings import GroupSettings, PlannerSettings, SettingsError

OFF, BOOTING, ON, SHUTTING = 0, 1, 2, 3
ENABLED, DRAIN_M, MAINT = 0, 1, 2


@st.composite
def views(draw):
    """A small fleet of one to three groups: any power state and mode, seats 1-20,
    some servers excluded, down or unregistered, some marked place-last already."""
    n = draw(st.integers(1, 30))
    nz = draw(st.integers(1, 3))
    power = np.array(draw(st.lists(st.sampled_from([OFF, BOOTING, ON, ON, ON, SHUTTING]), min_size=n, max_size=n)))
    mode = np.array(draw(st.lists(st.sampled_from([ENABLED, ENABLED, ENABLED, DRAIN_M, MAINT]), min_size=n,
                                  max_size=n)))
    seats = np.array(draw(st.lists(st.integers(1, 20), min_size=n, max_size=n)), dtype=np.int64)
    sessions = np.array([draw(st.integers(0, int(s))) if p == ON else 0 for p, s in zip(power, seats)],
                        dtype=np.int64)
    pending = np.array([draw(st.integers(0, 1)) if p == ON and m == ENABLED else 0 for p, m in zip(power, mode)],
                       dtype=np.int64)
    load = np.array([draw(st.integers(0, 10_000)) for _ in range(n)], dtype=np.int64)
    down = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) & (power == OFF)
    excluded = np.array(draw(st.lists(st.sampled_from([False, False, False, True]), min_size=n, max_size=n)))
    registered = np.array(draw(st.lists(st.sampled_from([True, True, True, False]), min_size=n, max_size=n)))
    marked = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    zone = np.array(draw(st.lists(st.integers(0, nz - 1), min_size=n, max_size=n)), dtype=np.int64)
    return FleetView(float(draw(st.integers(0, 86_399))), power, mode, sessions, pending, load, seats, zone,
                     np.zeros(n, np.int64), down, np.ones(n, bool), [f"z{k}" for k in range(nz)], ["p"],
                     excluded=excluded, registered=registered, place_last=marked)


def _pack_settings(pct, margin, by_load, buffer_pct, hold=True):
    return PlannerSettings(GroupSettings(buffer_pct=buffer_pct, forecast=False, trend=False, cooldown_minutes=0.0,
                                         hysteresis_pct=0.0, pack="always", pack_pct=pct, pack_margin=margin,
                                         pack_by_load=by_load, pack_hold=hold, failover=False))


@settings(max_examples=200, deadline=None)
@given(views(), st.sampled_from([None, 0.0, 1.0, 50.0]), st.integers(0, 40), st.booleans(),
       st.sampled_from([0.0, 3.0, 10.0]), st.booleans())
def test_keep_set_covers_the_free_seats_needed_and_marks_only_servers_able_to_take_one(view, pct, margin, by_load,
                                                                                      buffer_pct, hold):
    pol = Autoscale(_pack_settings(pct, margin, by_load, buffer_pct, hold))
    actions = pol.plan(view, view.now)
    drained = {a.server for a in actions if a.kind == DRAIN}
    locked = (view.mode == MAINT) | view.down | view.excluded
    able = (view.power == ON) & (view.mode == ENABLED) & view.registered & ~locked
    for a in actions:
        if a.kind == PLACE_LAST:
            assert able[a.server] and a.server not in drained, a
            assert not view.place_last[a.server]
        elif a.kind == PLACE_FIRST:
            assert view.place_last[a.server]
    marked = view.place_last.copy()
    for a in actions:
        if a.kind in (PLACE_LAST, PLACE_FIRST):
            marked[a.server] = a.kind == PLACE_LAST
    assert not (marked & ~view.place_last & ~able).any(), "a server unable to take a session was marked"
    busy = view.sessions + view.pending
    ready = able | ((view.power == BOOTING) & (view.mode == ENABLED) & ~locked)
    g = view.zone
    for k in np.unique(g):
        m = g == k
        demand = float(busy[m].sum())
        need_up = math.ceil(demand * (1.0 + buffer_pct / 100.0)) - float(busy[m & ~ready].sum())
        free_need = max(need_up - float(busy[m & ready].sum()), 0.0)
        head = (free_need if pct is None else min(free_need, pct / 100.0 * demand)) + margin
        cand = m & able & ~np.isin(np.arange(len(g)), list(drained))
        room = (view.max_sessions - busy).astype(np.float64)
        if by_load:
            room = np.minimum(room, np.floor(view.max_sessions * np.clip(1 - view.load_index / 10_000, 0, 1)))
        room = np.maximum(room, 0.0)
        boot_room = float(view.max_sessions[m & ready & (view.power == BOOTING)].sum())
        kept = float(room[cand & ~marked].sum()) + boot_room
        assert kept >= min(head, float(room[cand].sum()) + boot_room), "the keep set leaves the need uncovered"
        if cand.any():
            assert (cand & ~marked).any() or head <= boot_room, "no server left open to new sessions"


def _marks_after(view, actions) -> np.ndarray:
    marked = view.place_last.copy()
    for a in actions:
        if a.kind in (PLACE_LAST, PLACE_FIRST):
            marked[a.server] = a.kind == PLACE_LAST
    return marked


def _mark_changes_on_replan(pol) -> int:
    """How many marks the packing kernel would change if run again on the
    gathered columns of the planner's last call with the marks it left."""
    p, _, _, _, b, seats, li = pol._gi
    rd, lk = pol._gb
    n = len(p)
    mk = pol.marked[pol.order].copy()
    out, counts = np.empty((4, n, 3), np.int64), np.zeros(4, np.int64)
    cand, key, want = np.empty(n, np.int64), np.empty(n, np.int64), np.zeros(n, bool)
    for k in range(pol.n_groups):
        lo, hi = pol.bounds[k], pol.bounds[k + 1]
        if hi > lo:
            kernels._pack(k, lo, hi, p, b, seats, rd, lk, li, pol._gf[0], mk, int(seats.max()) + 1, pol._par[k],
                          cand, key, want, out, counts)
    return int(counts[kernels.MARKS])


@settings(max_examples=200, deadline=None)
@given(views(), st.sampled_from([None, 0.0, 1.0, 50.0]), st.integers(0, 40), st.booleans(),
       st.sampled_from([0.0, 3.0, 10.0]), st.booleans(), st.booleans())
def test_sticky_keep_set_moves_by_whole_servers_and_a_call_is_a_fixed_point(view, pct, margin, by_load, buffer_pct,
                                                                            hold, equal_seats):
    if equal_seats:
        view = dataclasses.replace(view, max_sessions=np.full(len(view.power), 20, np.int64))
    pol = Autoscale(_pack_settings(pct, margin, by_load, buffer_pct, hold))
    actions = pol.plan(view, view.now)
    assert _mark_changes_on_replan(pol) == 0, "the same call on the marks it left would change some"
    if not hold:
        return
    before, after = view.place_last, _marks_after(view, actions)
    n = len(view.power)
    drained = np.isin(np.arange(n), [a.server for a in actions if a.kind == DRAIN])
    locked = (view.mode == MAINT) | view.down | view.excluded
    cand = (view.power == ON) & (view.mode == ENABLED) & view.registered & ~locked & ~drained
    booting = (view.power == BOOTING) & (view.mode == ENABLED) & ~locked
    busy = view.sessions + view.pending
    room = (view.max_sessions - busy).astype(np.float64)
    if by_load:
        room = np.minimum(room, np.floor(view.max_sessions * np.clip(1 - view.load_index / 10_000, 0, 1)))
    room = np.maximum(room, 0.0)
    for k in np.unique(view.zone):  # one pool: group k is zone k
        m = view.zone == k
        head, boot = pol._par[k, kernels.P_HEAD], pol._par[k, kernels.P_BOOT_SEATS]
        left, joined = m & cand & ~before & after, m & cand & before & ~after
        if joined.any():
            assert room[m & cand & ~before].sum() < head, "a marked server joined a keep set that held the need"
        if left.any():
            assert room[m & cand & ~after].sum() >= head + boot + view.max_sessions[left].min(), \
                "a kept server left with less than a whole server to spare"
        if equal_seats:
            assert not (left.any() and joined.any()), "servers swapped in one call"
        other = m & ~cand
        assert not after[other & booting].any(), "a booting server stayed marked"
        assert (after[other & ~booting] == before[other & ~booting]).all(), "a non-candidate's mark changed"


def test_sticky_keep_set_does_not_flip_as_sessions_come_and_go():
    """Constant demand, each minute a session ends (any session alike) and one
    starts, on a kept server with room (as placement prefers them) or, one time
    in three, on any server with room (overflow past the logon tolerance): afresh, the
    servers near the keep set's boundary change places minute after minute;
    the sticky keep set moves far less."""
    n = 12
    base = np.array([19, 19, 18, 18, 17, 12, 10, 6, 4, 2, 1, 0], dtype=np.int64)

    def changes(hold):
        rng = np.random.default_rng(1)
        s = base.copy()
        pol = Autoscale(PlannerSettings(GroupSettings(buffer_pct=0.0, forecast=False, trend=False,
                                                      hysteresis_pct=500.0, pack="always", pack_pct=None,
                                                      pack_margin=5, pack_by_load=False, pack_hold=hold)))
        marked, count = np.zeros(n, bool), 0
        for minute in range(120):
            t = 36_000.0 + 60.0 * minute
            view = FleetView(t, np.full(n, ON), np.zeros(n, np.int64), s.copy(), np.zeros(n, np.int64),
                             np.zeros(n, np.int64), np.full(n, 20, np.int64), np.zeros(n, np.int64),
                             np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool), ["z"], ["p"],
                             place_last=marked.copy())
            acts = pol.plan(view, t)
            assert all(a.kind in (PLACE_LAST, PLACE_FIRST) for a in acts)
            count += len(acts) if minute else 0
            marked = _marks_after(view, acts)
            s[rng.choice(n, p=s / s.sum())] -= 1
            kept = np.nonzero((s < 20) & ~marked)[0]
            s[rng.choice(kept if len(kept) and rng.random() >= 0.3 else np.nonzero(s < 20)[0])] += 1
        return count

    sticky, afresh = changes(True), changes(False)
    assert afresh >= 10
    assert sticky * 5 <= afresh, (sticky, afresh)


@pytest.mark.parametrize("hold,kept", [(False, {1, 3, 5, 2}), (True, {1, 3, 5, 2, 4})])
def test_pack_keeps_the_fullest_open_and_marks_the_rest(hold, kept):
    n = 10
    sessions = np.array([2, 19, 10, 18, 5, 17, 3, 1, 1, 0], dtype=np.int64)
    view = FleetView(50_000.0, np.full(n, ON), np.zeros(n, np.int64), sessions, np.zeros(n, np.int64),
                     np.zeros(n, np.int64), np.full(n, 20, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.zeros(n, bool), np.ones(n, bool), ["z"], ["p"])
    # 76 sessions, 10 % buffer: free need 8 seats; pack_pct 100 (the whole need) and no margin;
    # no drain (a hysteresis above the surplus)
    pol = Autoscale(PlannerSettings(GroupSettings(buffer_pct=10.0, forecast=False, trend=False, hysteresis_pct=500.0,
                                                  pack="always", pack_pct=100.0, pack_margin=0, pack_by_load=False,
                                                  pack_hold=hold)))
    actions = pol.plan(view, view.now)
    marked = {a.server for a in actions if a.kind == PLACE_LAST}
    # afresh, the fullest first: 19 (1 free), 18 (2), 17 (3), 10 (10) hold the 8 seats needed; sticky, from
    # no mark the emptiest leave while the rest hold 8 + their 20 seats: 19, 18, 17, 10, 5 (31 free) stay
    assert marked == set(range(n)) - kept
    assert all("packing" in a.reason for a in actions if a.kind == PLACE_LAST)
    # demand grows: the next call unmarks servers to widen the keep set (no boot needed)
    more = sessions.copy()
    more[sorted(kept)] = 20  # the keep set full
    view2 = FleetView(50_060.0, view.power, view.mode, more, view.pending, view.load_index, view.max_sessions,
                      view.zone, view.pool, view.down, view.want_on, view.zone_names, view.pool_names)
    unmarked = {a.server for a in pol.plan(view2, view2.now) if a.kind == PLACE_FIRST}
    assert unmarked and unmarked <= marked


@pytest.mark.parametrize("hold", [False, True])
def test_pack_falling_marks_nothing_while_the_demand_rises(hold):
    n = 6
    sessions = np.array([10, 8, 6, 4, 2, 0], dtype=np.int64)
    # no drain (a hysteresis above the surplus): every server stays a candidate
    gs = GroupSettings(buffer_pct=0.0, forecast=False, trend=True, cooldown_minutes=0.0, hysteresis_pct=500.0,
                       pack="falling", pack_pct=1.0, pack_margin=0, pack_hold=hold)
    pol = Autoscale(PlannerSettings(gs))

    def view(now, s):
        return FleetView(now, np.full(n, ON), np.zeros(n, np.int64), s, np.zeros(n, np.int64), np.zeros(n, np.int64),
                         np.full(n, 20, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool),
                         np.ones(n, bool), ["z"], ["p"])

    pol.plan(view(36_000.0, sessions // 2), 36_000.0)
    rising = pol.plan(view(36_060.0, sessions), 36_060.0)  # the trend is up: no mark
    assert not any(a.kind == PLACE_LAST for a in rising) and pol.marked.sum() == 0
    falling = pol.plan(view(36_120.0, sessions // 2), 36_120.0)  # down again: the emptiest are marked
    assert any(a.kind == PLACE_LAST for a in falling)


def _pool_in_zones(sessions_per_zone):
    """One pool in len(sessions_per_zone) zones of 10 servers of 20 seats; each zone's
    first 3 servers are on and hold its sessions (spread evenly)."""
    nz = len(sessions_per_zone)
    n = 10 * nz
    zone = np.repeat(np.arange(nz), 10).astype(np.int64)
    power = np.tile(np.array([ON] * 3 + [OFF] * 7), nz)
    sessions = np.zeros(n, np.int64)
    for z, s in enumerate(sessions_per_zone):
        sessions[10 * z:10 * z + 3] = [s // 3 + (1 if j < s % 3 else 0) for j in range(3)]
    return FleetView(36_000.0, power, np.zeros(n, np.int64), sessions, np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.full(n, 20, np.int64), zone, np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool),
                     [f"z{k}" for k in range(nz)], ["p"])


@pytest.mark.parametrize("pct", [0.0, 50.0, 100.0])
def test_zone_reserve_holds_the_other_zones_demand(pct):
    gs = GroupSettings(buffer_pct=0.0, forecast=False, trend=False, hysteresis_pct=0.0, zone_reserve_pct=pct,
                       cooldown_minutes=0.0)
    pol = Autoscale(PlannerSettings(gs))
    actions = pol.plan(_pool_in_zones([40, 20]), 36_000.0)
    boots = [a for a in actions if a.kind == BOOT]
    # zone 1 (20 sessions, 60 seats ready) would take zone 0's 40: 60 seats needed at 100 %
    # zone 0 (40 sessions) would take zone 1's 20: 60 seats needed; 60 ready: no boot
    need1 = 20 + pct / 100.0 * 40
    assert sum(1 for a in boots if a.server >= 10) == max(0, math.ceil((need1 - 60) / 20))
    assert all(a.server >= 10 for a in boots)
    assert not any(a.kind == DRAIN for a in actions if a.server >= 10 and pct == 100.0)
    if boots:
        assert "sessions" in boots[0].reason


def test_zone_reserve_splits_a_zone_by_the_others_demand():
    pol = Autoscale(PlannerSettings(GroupSettings(zone_reserve_pct=100.0, forecast=False, trend=False)))
    pol.plan(_pool_in_zones([60, 30, 0]), 36_000.0)
    r = pol._reserve
    # zone 0 lost: zones 1, 2 take 60 split (31 : 1); zone 1 lost: zones 0, 2 take 30 split (61 : 1)
    assert r[1] == pytest.approx(60 * 31 / 32)
    assert r[0] == pytest.approx(30 * 61 / 62)
    assert r[2] == pytest.approx(max(60 / 32, 30 / 62))


@pytest.mark.parametrize("key,value", [("pack", "sideways"), ("pack_pct", -1.0), ("pack_margin", -3),
                                       ("pack_by_load", "yes"), ("pack_hold", "yes"), ("pack_hold", 1),
                                       ("zone_reserve_pct", -5.0),
                                       ("zone_reserve_pct", float("nan"))])
def test_pack_and_reserve_settings_errors_name_the_key(key, value):
    with pytest.raises(SettingsError) as e:
        PlannerSettings.from_dict({"default": {key: value}})
    assert key in str(e.value)


def test_autoscale_packs_by_default_and_citrix_does_not():
    from usher.planner.autoscale import citrix_settings

    assert autoscale_settings().default.pack == "always"
    assert autoscale_settings().default.pack_hold
    assert citrix_settings().default.pack == "off"
    assert autoscale_settings().default.zone_reserve_pct == 0.0


@pytest.mark.parametrize("reserve", [0.0, 100.0])
def test_books_balance_with_packing_and_a_zone_reserve(reserve):
    from usher.sim.day import simulate_day
    from usher.sim.scenario import Scenario

    sc = Scenario().scaled(0.1).with_changes(day={"hours": 12.0}, faults={"enabled": True, "zone_outage_at": "09:00"})
    gs = autoscale_settings().default
    import dataclasses
    k = simulate_day(sc, power_policy=Autoscale(PlannerSettings(dataclasses.replace(gs, zone_reserve_pct=reserve)))).kpis
    assert k["books.mismatch"] == 0 and k["books.lost_unbooked"] == 0 and k["books.unexpected_decisions"] == 0
    assert k["power.forced_logoffs"] == 0 and k["logons.on_draining"] == 0
    assert k["power.server_hours"] >= k["power.server_hours_lower_bound"] > 0


@settings(max_examples=150, deadline=None)
@given(views(), st.sampled_from([0.0, 25.0, 100.0]), st.integers(0, 40))
def test_initial_marks_only_servers_able_to_take_a_session_and_keeps_the_expected_seats_open(view, keep_pct, margin):
    gs = GroupSettings(buffer_pct=3.0, pack="always", pack_margin=margin, initial_keep_pct=keep_pct)
    pol = Autoscale(PlannerSettings(gs))
    actions = pol.initial(view)
    assert all(a.kind == PLACE_LAST and a.reason for a in actions)
    assert len({a.server for a in actions}) == len(actions)
    locked = (view.mode == MAINT) | view.down | view.excluded
    able = (view.power == ON) & (view.mode == ENABLED) & view.registered & ~locked
    marked = np.zeros(len(able), bool)
    marked[[a.server for a in actions]] = True
    assert not (marked & ~able).any(), "a server unable to take a session was marked"
    for k in np.unique(view.zone):
        m = (view.zone == k) & able
        if not m.any():
            continue
        head = math.ceil(keep_pct / 100.0 * view.max_sessions[m].sum() * 1.03) + margin
        kept = view.max_sessions[m & ~marked].sum()
        assert (m & ~marked).any(), "every group keeps a server open"
        assert kept >= min(head, view.max_sessions[m].sum())


def test_initial_packs_the_forecast_once_it_has_history_and_is_silent_without_pack():
    from usher.planner.settings import PlannerSettings as PS
    n = 10
    view = FleetView(0.0, np.full(n, ON), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.zeros(n, np.int64), np.full(n, 20, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.zeros(n, bool), np.ones(n, bool), ["z"], ["p"])
    assert Autoscale(PS(GroupSettings(pack="off"))).initial(view) is None
    pol = Autoscale(PS(GroupSettings(buffer_pct=0.0, pack="always", pack_margin=0, initial_keep_pct=50.0)))
    assert len(pol.initial(view)) == 5  # no history: half of the 200 seats kept open
    busy = view.sessions.copy()
    busy[:3] = 10  # a day with 30 sessions at midnight
    pol.plan(FleetView(0.0, view.power, view.mode, busy, view.pending, view.load_index, view.max_sessions, view.zone,
                       view.pool, view.down, view.want_on, view.zone_names, view.pool_names), 0.0)
    pol.new_day(view)
    assert len(pol.initial(view)) == 8  # the profile says 30 sessions: 2 servers of 20 seats kept open
