"""The compiled per-event code of the simulated day (sim/_events.pyx): its types
keep the Python semantics the handlers relied on (books, visits, counted and
traced engine calls, Python's index checks)."""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usher.sim.books import Books, Visit
from usher.sim._events import DayRefs, IdlePools, LaunchQueue, SessionQueue
from usher.sim.calendar import E_END, E_FAIL, E_LOGON, L_NEW, L_SECOND
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
    d.refs = DayRefs(d)  # the presampled columns are read once, when the day is built
    with pytest.raises(IndexError):
        new_visits(d, tick, [])


# ---------------------------------------------------------------- the session events' queue
def test_session_queue_keeps_each_ticks_items_in_order():
    q = SessionQueue(10)
    v, w = Visit(), Visit()
    sid = 1 << 40  # not a cached int: the queue holds its own reference
    q.schedule(3, (E_LOGON, v, 0, sid))
    q.schedule(5, (E_END, w, 2, 7))
    q.schedule(3, (E_END, v, 1, 8))
    q.schedule(10, (E_END, v, 1, 9))  # outside the day: never run, not kept
    q.schedule(-1, (E_END, v, 1, 9))
    assert len(q) == 3
    assert q.take(3) == [(E_LOGON, v, 0, sid), (E_END, v, 1, 8)]
    assert q.take(3) == [] and len(q) == 1
    q.schedule(3, (E_FAIL, w, 4, 6))  # a bucket for a tick already taken is a new one
    assert q.take(5) == [(E_END, w, 2, 7)] and q.take(3) == [(E_FAIL, w, 4, 6)] and len(q) == 0
    assert q.take(10) == [] and q.take(-3) == []
    with pytest.raises(ValueError):
        q.schedule(1, (E_END, v, 0))
    with pytest.raises(ValueError, match="T must be"):
        SessionQueue(-1)


def test_session_queue_holds_and_releases_references():
    v, sid = Visit(), 10 ** 30 + 1
    before = sys.getrefcount(v), sys.getrefcount(sid)
    q = SessionQueue(100)
    for t in range(50):
        q.schedule(t % 7, (E_LOGON, v, t, sid))
    assert sys.getrefcount(v) == before[0] + 50 and sys.getrefcount(sid) == before[1] + 50
    taken = q.take(3)
    del taken
    assert sys.getrefcount(v) == before[0] + 50 - 7
    del q  # the items left are released
    assert (sys.getrefcount(v), sys.getrefcount(sid)) == before


def test_launch_queue_keeps_visit_generation_kind_items():
    q, v = LaunchQueue(20), Visit()
    q.schedule(4, (v, 2, L_SECOND))
    q.schedule(4, (v, 3, L_NEW))
    assert q.peek(4) == [(v, 2, L_SECOND), (v, 3, L_NEW)] and len(q) == 2  # peeking leaves them
    assert q.take(4) == [(v, 2, L_SECOND), (v, 3, L_NEW)] and q.peek(4) == [] and len(q) == 0
    with pytest.raises(ValueError):
        q.schedule(1, (v, 0, L_NEW, 5))


def _session_item(kind, v, gen, sid):
    return (kind, v, gen, sid)


def _launch_item(kind, v, gen, sid):
    return (v, gen, kind)


@pytest.mark.parametrize("queue, item", [(SessionQueue, _session_item), (LaunchQueue, _launch_item)])
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 2), st.integers(-3, 40), st.integers(0, 4), st.integers(0, 9)),
                    max_size=300))
def test_a_tick_queue_is_a_dict_of_lists(queue, item, ops):
    """Against the dict of lists it replaces: schedules, takes and peeks
    interleaved, slots reused; a tick outside ``[0, T)`` is never taken."""
    T = 32
    q, ref = queue(T), defaultdict(list)
    visits = [Visit() for _ in range(3)]
    for op, tick, kind, sid in ops:
        if op == 0:
            assert q.take(tick) == (ref.pop(tick, []) if 0 <= tick < T else [])
        elif op == 1:
            assert q.peek(tick) == (ref.get(tick, []) if 0 <= tick < T else [])
        else:
            x = item(kind, visits[sid % 3], sid // 3, sid)
            q.schedule(tick, x)
            if 0 <= tick < T:
                ref[tick].append(x)
        assert len(q) == sum(map(len, ref.values()))
    for tick in range(T):
        assert q.take(tick) == ref.pop(tick, [])


# ---------------------------------------------------------------- the idle users
@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=4),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 1), st.floats(0, 0.999)),
                    max_size=120))
def test_idle_pools_take_and_put_back_as_lists_do(sizes, ops):
    """Against the lists they replace: ``u = pool[j]; pool[j] = pool[-1];
    pool.pop()`` to take, an append to put back."""
    ref, n = [], 0
    for a, b in sizes:
        ref.append([list(range(n, n + a)), list(range(n + a, n + a + b))])
        n += a + b
    pools = IdlePools([[list(p) for p in h] for h in ref])
    taken = []
    for take, h, role, pick in ops:
        h %= len(ref)
        pool = ref[h][role]
        if take and pool:
            j = int(pick * len(pool))
            u = pool[j]
            pool[j] = pool[-1]
            pool.pop()
            assert pools.take(h, role, j) == u
            taken.append((h, role, u))
        elif taken:
            h, role, u = taken.pop(0)
            ref[h][role].append(u)
            pools.put(h, role, u)
        for hh in range(len(ref)):
            for rr in (0, 1):
                assert pools.users_of(hh, rr) == ref[hh][rr] and pools.count(hh, rr) == len(ref[hh][rr])


def test_idle_pools_refuse_what_lists_would_not_hold():
    pools = IdlePools([[[0, 1], [2]], [[], [3]]])
    with pytest.raises(IndexError):
        pools.take(0, 0, 2)  # past the end, as pool[2] of two
    assert pools.take(0, 0, -1) == 1  # Python's negative index
    with pytest.raises(IndexError):
        pools.count(2, 0)
    with pytest.raises(IndexError):
        pools.put(0, 2, 1)
    pools.put(0, 0, 1)
    with pytest.raises(RuntimeError, match="put back twice"):
        pools.put(0, 0, 1)  # the pool holds every user it started with already
