"""The compiled per-event code of the simulated day (sim/_events.pyx): its types
keep the Python semantics the handlers relied on (books, visits, counted and
traced engine calls, Python's index checks)."""

from __future__ import annotations

import numpy as np
import pytest

from usher.sim.books import Books, Visit
from usher.sim.calendar import L_NEW
from usher.sim.day import Day
from usher.sim.handlers import new_visits
from usher.sim.launches import launches
from usher.sim.scenario import Scenario

TINY = Scenario().scaled(0.02).with_changes(day={"hours": 2.0})


def test_books_book_unbook_and_balance():
    b = Books(3, naming=True)
    v = Visit()
    b.book(11, v, 2, "r1")
    b.book(12, v, 2, "r2")
    assert 11 in b and len(b) == 2 and b.booked == [0, 0, 2] and b.names == {11: "r1", 12: "r2"}
    assert b.launching == {11, 12}
    assert b.unbook(11) == (v, 2) and b.unbook(11) is None
    assert b.booked == [0, 0, 1] and 11 not in b
    assert b.balance(np.array([0, 0, 1]), 1)
    assert not b.balance(np.array([0, 1, 0]), 1) and not b.balance(np.array([0, 0, 1]), 2)
    unnamed = Books(1, naming=False)
    unnamed.book(5, v, 0, None)
    assert unnamed.names == {}


def test_a_visit_keeps_its_fields_and_compares_by_identity():
    v, w = Visit(), Visit()
    v.end, v.sid, v.ext, v.extras, v.loc = 1 << 40, (7 << 32) | 3, True, [4], None
    assert (v.end, v.sid, v.ext, v.extras, v.loc) == (1 << 40, (7 << 32) | 3, True, [4], None)
    assert v.ext is True  # traced as a JSON boolean
    assert (v, 0, L_NEW) in [(v, 0, L_NEW)] and (v, 0, L_NEW) not in [(w, 0, L_NEW)]
    with pytest.raises(AttributeError):
        v.not_a_field = 1  # type: ignore[attr-defined]


def test_engine_calls_count_and_time_every_operation():
    d = Day(TINY.copy().validate())
    tick = 10
    d.arrivals.counts[tick] = max(d.arrivals.counts[tick], 1)
    reqs: list = []
    new_visits(d, tick, reqs)
    ops, seconds = d.calls.ops, d.calls.seconds
    warm = d.arrivals.logon[reqs[0][0].a] == 0  # a warm arrival: its logon completes at once
    launches(d, reqs[:1], tick, float(tick))
    assert d.calls.ops == ops + 1 + warm and d.calls.seconds > seconds
    assert d.calls.launch_seconds > 0 and sum(d.state.outcomes) == 1
    v = reqs[0][0]
    assert v.sid >= 0 and d.books.entries[v.sid][0] is v


def test_a_bad_arrival_index_raises_as_python_does():
    """Indexing keeps Python's checks: a pick outside [0, 1) indexes past the idle
    list and raises IndexError, it does not read past the list."""
    d = Day(TINY.copy().validate())
    tick = 10
    d.arrivals.counts[tick] = max(d.arrivals.counts[tick], 1)
    d.arrivals.pick[d.state.next_arrival] = 1.0
    with pytest.raises(IndexError):
        new_visits(d, tick, [])
