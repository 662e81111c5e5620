"""Pickling a scheduler keeps its whole state — configuration, servers, users,
sessions, counters, clock, seed and tiebreak sequence — so an unpickled copy
makes the same next decisions as the original."""

from __future__ import annotations

import pickle
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import usher


def _fleet(seed):
    s = usher.Scheduler(seed=seed, licences=400)
    s.add_pool("p", logon_tolerance=3, load_rules=("sessions", "cpu"))
    s.add_pool("q", load_balancing="vertical", external_access=True)
    s.add_app("a", ["p", "q"])
    s.add_app("b", ["q"], max_instances_total=50)
    s.add_users([f"d{k}" for k in range(20)], home_zones=[f"z{k % 3}" for k in range(20)])
    for i in range(12):
        s.add_server(f"s{i}", f"z{i % 3}", "p" if i % 2 else "q", max_sessions=30, now=0.0)
    return s


def _ops(s, rng, t, n):
    """n random operations at times from t; returns (decisions, t)."""
    out = []
    for _ in range(n):
        t += float(rng.integers(0, 3))
        op = rng.integers(0, 10)
        try:
            if op < 5:
                d = s.launch(f"{'d' if op < 3 else 'w'}{rng.integers(0, 40)}", "ab"[op % 2],
                             location=f"z{rng.integers(0, 3)}", endpoint=f"pc{rng.integers(0, 9)}", now=t)
                out.append(d.to_dict())
            elif op < 8 and s.live_sessions:
                sid = int(s.sessions()["id"][rng.integers(0, s.live_sessions)])
                (s.logoff, s.disconnect, s.logon_complete)[op - 5](sid, now=t)
                out.append(("session", sid))
            elif op == 8:
                s.telemetry(f"s{rng.integers(0, 12)}", cpu=float(rng.integers(0, 100)), now=t)
            else:
                b = s.launch_many([f"w{rng.integers(0, 40)}" for _ in range(3)], ["a"] * 3, now=t)
                out.append(b.outcome.tolist() + b.server.tolist() + b.session.tolist())
        except usher.UsherError as exc:
            out.append(type(exc).__name__)
    return out, t


def _view(s):
    return (s.servers().tolist(), s.sessions().tolist(), s.now, s.licences_in_use, s.user_ids,
            s.zone_names, s.pool_names, s.app_names, s.seed)


@given(st.integers(0, 2**31 - 1), st.integers(0, 200))
@settings(max_examples=25)
def test_an_unpickled_scheduler_makes_the_same_decisions(seed, before):
    s = _fleet(seed % 7)
    rng = np.random.default_rng(seed)
    _, t = _ops(s, rng, 1.0, before)
    c = pickle.loads(pickle.dumps(s))
    assert _view(c) == _view(s)
    state = rng.bit_generator.state
    a, _ = _ops(s, rng, t, 150)
    rng.bit_generator.state = state
    b, _ = _ops(c, rng, t, 150)
    assert a == b
    assert _view(c) == _view(s)


def test_pickle_keeps_forgotten_indices_and_the_clock_function():
    s = _fleet(1)
    for k in range(usher.scheduler.SWEEP_FLOOR + 10):
        s.logoff(s.launch(f"w{k}", "a", now=float(k + 1)).session, now=float(k + 1))
    c = pickle.loads(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL))
    assert c._user_free == s._user_free and c.user_ids == s.user_ids
    assert c._clock is s._clock is time.monotonic
    assert c.launch("new", "a", now=1e5).to_dict() == s.launch("new", "a", now=1e5).to_dict()


def test_the_copy_and_the_original_share_nothing():
    s = _fleet(2)
    c = s.copy()
    s.launch("d1", "a", now=5.0)
    assert c.live_sessions == 0 and c.now == 0.0
