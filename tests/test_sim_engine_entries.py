"""The simulated day reaches the engine through its C entries (a launch's decision
row, runs of session ops) only while the scheduler's methods are the engine's own:
a scheduler whose class overrides them is called as before, with the same day; a
run of session ops the engine refuses raises the public call's error, the rows
before the bad one applied."""

from __future__ import annotations

import pytest

import usher.sim.day as day_module
from usher import Scheduler, UsherError
from usher.sim.calendar import E_END
from usher.sim.day import Day, simulate_day
from usher.sim.handlers import new_visits, session_events
from usher.sim.launches import launches
from usher.sim.scenario import Scenario, build_scheduler

TINY = Scenario().scaled(0.02).with_changes(day={"hours": 2.0})
TIMING = ("run.", "trace.", "engine.seconds", "engine.launch_seconds", "engine.us_per")


class CountingScheduler(Scheduler):
    """The engine with its launch and session calls overridden (counted, then the
    engine's own)."""

    calls: dict

    def launch(self, *args, **kw):
        self.calls["launch"] = self.calls.get("launch", 0) + 1
        return super().launch(*args, **kw)

    def logon_complete(self, session, now=None):
        self.calls["logon_complete"] = self.calls.get("logon_complete", 0) + 1
        return super().logon_complete(session, now)

    def logoff(self, session, now=None):
        self.calls["logoff"] = self.calls.get("logoff", 0) + 1
        return super().logoff(session, now)


def _kpis(result):
    return {k: v for k, v in result.kpis.items() if not k.startswith(TIMING)}


def test_a_scheduler_that_overrides_its_calls_is_called_and_the_day_is_the_same(monkeypatch):
    plain = simulate_day(TINY)
    made: list = []

    def counting(ops):
        s = build_scheduler(ops)
        s.__class__ = CountingScheduler
        s.calls = {}
        made.append(s)
        return s

    monkeypatch.setattr(day_module, "build_scheduler", counting)
    counted = simulate_day(TINY)
    calls = made[0].calls
    assert calls["launch"] > 0 and calls["logon_complete"] > 0 and calls["logoff"] > 0
    assert _kpis(counted) == _kpis(plain)
    assert counted.kpis["engine.decisions"] == plain.kpis["engine.decisions"]
    assert counted.kpis["engine.ops"] == plain.kpis["engine.ops"]


def _placed(d, tick):
    """Visits placed at ``tick`` through the handlers (at least two)."""
    d.arrivals.counts[tick] = max(d.arrivals.counts[tick], 2)
    reqs: list = []
    new_visits(d, tick, reqs)
    launches(d, reqs, tick, float(tick))
    placed = [q[0] for q in reqs if q[0].sid >= 0]
    assert len(placed) >= 2
    return placed


def test_a_refused_run_raises_the_public_calls_error_after_the_rows_before_it():
    d = Day(TINY.copy().validate())
    v, w = _placed(d, 10)[:2]
    d.s.logoff(w.sid, 20.0)  # behind the books' back: w's logoff will be refused
    live = d.s.live_sessions
    ops = d.calls.ops
    with pytest.raises(UsherError) as err:
        session_events(d, [(E_END, v, v.gen, v.sid), (E_END, w, w.gen, w.sid)], 30, 30.0)
    assert err.value.field == "session"  # the public logoff's, not the run's row
    assert d.s.live_sessions == live - 1  # v's logoff, before the bad row, applied
    assert d.calls.ops == ops + 2


def test_session_events_leave_no_op_unapplied():
    d = Day(TINY.copy().validate())
    visits = _placed(d, 10)
    live = d.s.live_sessions
    session_events(d, [(E_END, v, v.gen, v.sid) for v in visits], 30, 30.0)
    assert d.s.live_sessions == live - len(visits) == len(d.books)
