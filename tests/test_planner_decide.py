"""The autoscale planner's compiled decisions against the plain-Python reference
(tests/planner_reference.py): over seeded random fleets, settings and days, every
call answers the same actions (kind, server, reason text) in the same order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner_reference import ReferenceAutoscale
from usher.planner.autoscale import Autoscale, Citrix, autoscale_settings, citrix_settings
from usher.planner.power import BOOT, DRAIN, ENABLE, LOGOFF, PLACE_FIRST, PLACE_LAST, SHUTDOWN, FleetView
from usher.planner.settings import GroupSettings, PlannerSettings, Schedule, TimeSlot

OFF, BOOTING, ON, SHUTTING = 0, 1, 2, 3
ENABLED, DRAIN_M, MAINT = 0, 1, 2


def _schedule(rng) -> Schedule:
    def slots():
        out, t = [], 0.0
        while t < 86_400 and rng.random() < 0.7:
            end = min(t + float(rng.integers(1, 10)) * 1800.0, 86_400.0)
            out.append(TimeSlot(t, end, int(rng.integers(0, 4)),
                                None if rng.random() < 0.4 else float(rng.choice([0.0, 5.0, 12.5, 30.0]))))
            t = end + float(rng.integers(0, 3)) * 900.0
        return tuple(out)

    return Schedule(slots(), slots(), None if rng.random() < 0.5 else slots())


def _group_settings(rng) -> GroupSettings:
    min_powered = int(rng.integers(0, 3))
    return GroupSettings(
        buffer_pct=float(rng.choice([0.0, 3.0, 10.0, 17.5])), min_powered=min_powered,
        max_powered=None if rng.random() < 0.6 else min_powered + int(rng.integers(0, 6)),
        min_ready=int(rng.integers(0, 3)), boot_lead_minutes=float(rng.choice([0.0, 4.0, 7.5])),
        power_off_delay_minutes=float(rng.choice([0.0, 2.0, 30.0])),
        off_delay_from=str(rng.choice(["idle", "drain"])),
        forced_logoff_minutes=None if rng.random() < 0.6 else float(rng.choice([0.0, 3.0])),
        cooldown_minutes=float(rng.choice([0.0, 2.0, 10.0])), hysteresis_pct=float(rng.choice([0.0, 2.0, 5.0])),
        forecast=bool(rng.random() < 0.7), trend=bool(rng.random() < 0.7),
        drain_fewest_first=bool(rng.random() < 0.8),
        drain_max_sessions=None if rng.random() < 0.6 else int(rng.integers(0, 6)),
        place_last_pct=float(rng.choice([0.0, 15.0])), consolidate_pct=float(rng.choice([0.0, 0.0, 20.0])),
        consolidate_min_free=int(rng.integers(0, 20)), failover=bool(rng.random() < 0.6),
        zone_reserve_pct=float(rng.choice([0.0, 0.0, 50.0, 100.0])),
        pack=str(rng.choice(["off", "always", "falling"])), pack_margin=int(rng.integers(0, 12)),
        pack_pct=None if rng.random() < 0.4 else float(rng.choice([0.0, 1.0, 25.0])),
        pack_by_load=bool(rng.random() < 0.7), pack_hold=bool(rng.random() < 0.6), schedule=_schedule(rng))


def _settings(rng, pool_names, zone_names) -> PlannerSettings:
    """Defaults, some pools and some groups with their own settings."""
    pools = {p: {"pack": str(rng.choice(["off", "always", "falling"])), "pack_hold": bool(rng.random() < 0.5),
                 "buffer_pct": float(rng.integers(0, 20)),
                 "cooldown_minutes": float(rng.choice([0.0, 5.0]))}
             for p in pool_names if rng.random() < 0.5}
    groups = {f"{p}/{z}": {"min_ready": int(rng.integers(0, 3)), "forecast": bool(rng.random() < 0.5),
                           "schedule": {"weekday": [{"start": "06:00", "end": "18:00",
                                                     "min_on": int(rng.integers(0, 3))}]}}
              for p in pool_names for z in zone_names if rng.random() < 0.3}
    return PlannerSettings(_group_settings(rng), pools, groups)


class _Fleet:
    """A small fleet that follows the actions it is given and drifts at random."""

    def __init__(self, rng):
        self.rng = rng
        n = int(rng.integers(1, 40))
        self.nz, self.npool = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        self.power = rng.choice([OFF, BOOTING, ON, ON, ON, SHUTTING], n).astype(np.int64)
        self.mode = rng.choice([ENABLED, ENABLED, ENABLED, DRAIN_M, MAINT], n).astype(np.int64)
        self.seats = rng.integers(1, 16, n).astype(np.int64)
        self.sessions = np.where(self.power == ON, rng.integers(0, 16, n) % (self.seats + 1), 0).astype(np.int64)
        self.pending = np.zeros(n, np.int64)
        self.zone = rng.integers(0, self.nz, n).astype(np.int64)
        self.pool = rng.integers(0, self.npool, n).astype(np.int64)
        self.down = np.zeros(n, bool)
        self.excluded = rng.random(n) < 0.1 if rng.random() < 0.5 else None
        self.registered = rng.random(n) < 0.9 if rng.random() < 0.5 else None
        self.marks = np.zeros(n, bool) if rng.random() < 0.5 else None  # the engine's place-last marks, or None

    def view(self, now, weekday, holiday) -> FleetView:
        n = len(self.power)
        li = (self.sessions * 10_000 // self.seats + self.rng.integers(-500, 500, n)).astype(np.int64)
        return FleetView(now, self.power.copy(), self.mode.copy(), self.sessions.copy(), self.pending.copy(),
                         li, self.seats.copy(), self.zone, self.pool, self.down.copy(), np.ones(n, bool),
                         [f"z{k}" for k in range(self.nz)], [f"p{k}" for k in range(self.npool)],
                         excluded=self.excluded, registered=self.registered, weekday=weekday, holiday=holiday,
                         place_last=None if self.marks is None else self.marks.copy())

    def apply(self, actions):
        for a in actions:
            i = a.server
            if a.kind == BOOT:
                self.power[i] = BOOTING
            elif a.kind == SHUTDOWN:
                self.power[i] = SHUTTING
            elif a.kind == DRAIN:
                self.mode[i] = DRAIN_M
            elif a.kind == ENABLE:
                self.mode[i] = ENABLED
            elif a.kind == LOGOFF:
                self.sessions[i] = 0
            elif self.marks is not None and a.kind in (PLACE_LAST, PLACE_FIRST):
                self.marks[i] = a.kind == PLACE_LAST

    def drift(self):
        rng, n = self.rng, len(self.power)
        self.power[(self.power == BOOTING) & (rng.random(n) < 0.5)] = ON
        self.power[(self.power == SHUTTING) & (rng.random(n) < 0.5)] = OFF
        on = self.power == ON
        self.sessions = np.clip(self.sessions + np.where(on, rng.integers(-3, 4, n), 0), 0, self.seats)
        self.sessions[~on] = 0
        self.pending = np.where(on & (self.mode == ENABLED) & (rng.random(n) < 0.2), 1, 0).astype(np.int64)
        if rng.random() < 0.1:  # a zone outage or its end
            z = int(rng.integers(0, self.nz))
            self.down[self.zone == z] = not self.down[self.zone == z].any()
            self.power[self.down] = OFF
            self.sessions[self.down] = 0
            self.pending[self.down] = 0


def _answers(actions) -> list:
    return [(a.kind, a.server, a.reason) for a in actions]


@pytest.mark.parametrize("seed", range(60))
def test_compiled_plan_equals_reference(seed):
    """Random fleets, settings and two days with history: the planner and the
    reference answer the same actions, action for action, at every call."""
    rng = np.random.default_rng(seed)
    fleet = _Fleet(rng)
    settings = _settings(rng, [f"p{k}" for k in range(fleet.npool)], [f"z{k}" for k in range(fleet.nz)])
    fast, ref = Autoscale(settings), ReferenceAutoscale(settings)
    now = float(rng.integers(0, 40)) * 1800.0
    for day in range(2):
        weekday, holiday = int(rng.integers(0, 7)), bool(rng.random() < 0.2)
        if day:
            fast.new_day()
            ref.new_day()
        v = fleet.view(now, weekday, holiday)
        got, want = fast.initial(v), ref.initial(v)
        assert (got is None) == (want is None)
        if got is not None:
            assert _answers(got) == _answers(want)
            fleet.apply(got)
        for step in range(30):
            t = now + 60.0 * step
            v = fleet.view(t, weekday, holiday)
            got, want = fast.plan(v, t), ref.plan(v, t)
            assert _answers(got) == _answers(want), (seed, day, step)
            fleet.apply(got)
            fleet.drift()


def _afresh_settings() -> PlannerSettings:
    """Autoscale's settings with the keep set chosen afresh every call."""
    return PlannerSettings(dataclasses.replace(autoscale_settings().default, pack_hold=False))


@pytest.mark.parametrize("cls,make", [(Autoscale, autoscale_settings), (Autoscale, _afresh_settings),
                                      (Citrix, citrix_settings)])
def test_default_settings_plan_equals_reference(cls, make):
    """The shipped settings (autoscale's, with and without the sticky keep set;
    Citrix's) on a larger fleet over a day of calls every 20 minutes, the
    forecast learning from a first day."""
    rng = np.random.default_rng(11)
    fleet = _Fleet(rng)
    while len(fleet.power) < 30:
        fleet = _Fleet(rng)
    fast, ref = cls(make()), ReferenceAutoscale(make())
    for day in range(2):
        if day:
            fast.new_day()
            ref.new_day()
        for step in range(72):
            t = 1200.0 * step
            v = fleet.view(t, day, False)
            got, want = fast.plan(v, t), ref.plan(v, t)
            assert _answers(got) == _answers(want), (day, step)
            fleet.apply(got)
            fleet.drift()
