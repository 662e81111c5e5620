"""The compiled replay loop (formats/_replayloop.pyx) against the Python loop it
translates (tests/replay_reference.py): on random traces with lines of every error
kind (bad JSON, unknown fields, time going back, unknown and rejected sessions,
duplicate launch ids, ops in-process with odd values), fed whole and in pieces, both
give the same output bytes, the same errors and the same replay state (``names``,
``creator``, ``last_t``, ``ops``, ``lines``, outcomes) and scheduler.

The compiled loop's cache of session names (``NameCache``) is tried at its own size
and at a size of one, two and four slots, where launch ids share slots: a session line
must reach the session of its own launch, never that of the launch that took the
slot last.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import usher
import usher.formats.replay as replay_module
from usher.errors import SessionEnded
from usher.formats._replayloop import NAME_CACHE_SLOTS, DecisionMaker
from usher.formats.replay import Replayer
from usher.formats.trace import LaunchOp, LogoffOp, LogonDoneOp, TelemetryOp

from tests.replay_reference import PythonLoopReplayer
from tests.test_replay import PRELUDE, random_trace

BAD_LINES = [
    "{not json",
    '{"t": 5, "op": "launch", "id": "x", "user": "u1"}',  # a field missing
    '{"t": 5, "op": "logon_done", "session": "r1", "extra": 1}',  # an unknown field
    '{"t": 1e400, "op": "logoff", "session": "r2"}',
    '{"t": -3, "op": "logoff", "session": "r3"}',  # back in time
    '{"t": 9e15, "op": "logon_done", "session": "r4"}',  # beyond the time rule
    '{"t": 6, "op": "disconnect", "session": 12345}',  # an integer name
    '{"t": 6, "op": "logoff", "session": "a-launch-id-longer-than-fifteen"}',
    "",
    "[]",
]


def _mangle(lines, rng_data):
    """Insert bad lines at places drawn by hypothesis."""
    out = list(lines)
    for pos, k in rng_data:
        out.insert(min(pos, len(out)), BAD_LINES[k % len(BAD_LINES)])
    return out


def _run(lines, compiled, pieces):
    out = io.BytesIO()
    r = (Replayer if compiled else PythonLoopReplayer)(usher.Scheduler(), out=out, keep=True)
    step = max(1, len(lines) // pieces)
    for k in range(0, len(lines), step):
        r.feed(lines[k:k + step])
    state = (dict(r.names), dict(r.creator), r.last_t, r.ops, r.lines, r.outcomes, r.launches,
             [(e.line, e.error, e.message) for e in r.errors])
    return out.getvalue(), state, r.scheduler.sessions().tolist()


def _applied_both(ops):
    """The prelude fed, then ``ops`` applied in-process, by the compiled loop and by
    the Python reference: [(output bytes, replayer)] in that order."""
    done = []
    for cls in (Replayer, PythonLoopReplayer):
        out = io.BytesIO()
        r = cls(out=out, keep=True)
        r.feed([json.dumps(o) for o in PRELUDE])
        r.apply(ops)
        done.append((out.getvalue(), r))
    return done


@given(seed=st.integers(0, 10_000), pieces=st.integers(1, 5), min_run=st.sampled_from([4, 1024]),
       bad=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 50)), max_size=12),
       slots=st.sampled_from([1, 4, NAME_CACHE_SLOTS]))
def test_compiled_loop_is_the_python_loop(seed, pieces, min_run, bad, slots):
    lines = _mangle(random_trace(seed, 300), bad)
    with pytest.MonkeyPatch.context() as mp:  # short runs batched too
        mp.setattr(replay_module, "_MIN_LAUNCH_RUN", min_run)
        mp.setattr(replay_module, "_MIN_TELEMETRY_RUN", 4)
        mp.setattr(Replayer, "name_cache_slots", slots)
        compiled = _run(lines, True, pieces)
        python = _run(lines, False, pieces)
    assert compiled[0] == python[0]
    assert compiled[1] == python[1]
    assert compiled[2] == python[2]


def test_in_process_ops_with_odd_values_match():
    """Ops built in-process (``Replayer.apply``): integer times, integer session
    names, a name of the cache's size limit and beyond; the same lines both ways."""
    ops = [LaunchOp(t=1, id="r1", user="u1", app="a"), LaunchOp(t=2.0, id="r" * 15, user="u2", app="a"),
           LaunchOp(t=2.0, id="s" * 16, user="u2", app="a"), LaunchOp(t=2.5, id=7, user="u1", app="a"),
           LogonDoneOp(t=3, session="r1"), LogonDoneOp(t=3.0, session="r" * 15),
           LogonDoneOp(t=3.0, session="s" * 16), LogonDoneOp(t=3.0, session=7),
           LogoffOp(t=4.0, session="r1"), LogoffOp(t=4.0, session="r1"), LogoffOp(t=3.5, session="r" * 15)]
    results = [(out, dict(r.names), dict(r.creator), r.last_t, type(r.last_t), r.ops, r.lines)
               for out, r in _applied_both(ops)]
    assert results[0] == results[1]
    assert b'"error"' in results[0][0]  # the second logoff of r1 failed


def test_names_written_from_outside_are_followed():
    """A replayer restored from a snapshot (``names`` filled in before any line, as the
    journal does) names the restored sessions through the dict."""
    first = Replayer(keep=True)
    first.feed([json.dumps(o) for o in PRELUDE] + [json.dumps({"t": 1, "op": "launch", "id": "r1", "user": "u1",
                                                              "app": "a"})])
    first.feed([json.dumps({"t": 2, "op": "logon_done", "session": "r1"})])  # fills the cache
    restored = Replayer(first.scheduler, keep=True)
    restored.names.update(first.names)
    restored.creator.update(first.creator)
    restored.last_t = first.last_t
    restored.feed([json.dumps({"t": 3, "op": "logoff", "session": "r1"})])
    assert not restored.errors
    restored.feed([json.dumps({"t": 4, "op": "logoff", "session": "r1"})])
    assert [e.error for e in restored.errors] == ["SessionEnded"]
    restored.feed([json.dumps({"t": 5, "op": "logoff", "session": "r9"})])
    assert [e.error for e in restored.errors] == ["SessionEnded", "UnknownSession"]


FLEET = [
    {"t": 0, "op": "settings", "enforce_entitlement": False},
    {"t": 0, "op": "pool", "name": "P"},
    {"t": 0, "op": "app", "name": "a", "pools": ["P"]},
    {"t": 0, "op": "server", "name": "s1", "zone": "Z", "pool": "P", "max_sessions": 100},
]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize("slots", [1, 2, 4, NAME_CACHE_SLOTS])
def test_session_lines_reach_their_own_session(slots, compiled, monkeypatch):
    """Ten launches placed, then a session line for each, alone in its run (a
    telemetry line after each), in an order where the launch that took a slot last
    is rarely the one named: every line applies, and each session is in the state its
    own lines made. A cache that answered with another launch's session would end or
    log on a live session of someone else (no error on that line, the wrong state)."""
    monkeypatch.setattr(Replayer, "name_cache_slots", slots)
    ids = [f"r{k}" for k in range(10)]  # one length: in a tiny cache they share slots
    lines = list(FLEET)
    lines += [{"t": 1.0, "op": "launch", "id": rid, "user": f"u{k}", "app": "a"} for k, rid in enumerate(ids)]
    ended = set(ids[0::3])
    t = 2.0
    for rid in ids:  # the first ids first: the slots hold the last launches
        op = "logoff" if rid in ended else "logon_done"
        lines += [{"t": t, "op": op, "session": rid}, {"t": t, "op": "telemetry", "server": "s1", "cpu": 10.0}]
        t += 1.0
    r = (Replayer if compiled else PythonLoopReplayer)(keep=True)
    r.feed([json.dumps(o) for o in lines])
    assert not r.errors, r.errors
    assert [d.outcome for d in r.decisions] == ["placed"] * len(ids)
    for rid in ids:
        if rid in ended:
            with pytest.raises(SessionEnded):
                r.scheduler.session(r.names[rid])
        else:
            assert r.scheduler.session(r.names[rid])["state"] == "active", rid


@pytest.mark.parametrize("slots", [1, 2])
def test_a_rejected_launch_in_a_shared_slot_names_no_session(slots, monkeypatch):
    """A rejected launch's id (None in ``names``) takes a slot of a tiny cache as the
    id of no session; a placed launch taking the slot after it, and a line naming
    the rejected one, give the Python loop's lines."""
    monkeypatch.setattr(Replayer, "name_cache_slots", slots)
    lines = FLEET[:3] + [  # no server yet: the first launch is rejected
        {"t": 1, "op": "launch", "id": "r0", "user": "u0", "app": "a"},
        {"t": 1, "op": "server", "name": "s1", "zone": "Z", "pool": "P", "max_sessions": 100},
        {"t": 2, "op": "launch", "id": "r1", "user": "u1", "app": "a"},
        {"t": 3, "op": "logon_done", "session": "r0"},
        {"t": 4, "op": "logon_done", "session": "r1"},
        {"t": 5, "op": "launch", "id": "r2", "user": "u2", "app": "a"},
        {"t": 6, "op": "logoff", "session": "r0"},
        {"t": 7, "op": "logoff", "session": "r1"},
    ]
    lines = [json.dumps(o) for o in lines]
    compiled, python = _run(lines, True, 1), _run(lines, False, 1)
    assert compiled == python
    assert [e[1] for e in compiled[1][-1]] == ["UnknownSession", "UnknownSession"]


def test_cache_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        DecisionMaker({}, {}, None, None, 3)


def test_telemetry_run_with_values_not_floats_matches():
    """Telemetry ops built in-process with integer values and times (the compiled
    run leaves those to the Python method), in runs long enough to batch."""
    ops = [TelemetryOp(t=1.0 + k // 8, server="s1", cpu=10 if k % 5 == 0 else 20.0, mem=30.0) for k in range(40)]
    ops += [TelemetryOp(t=7 if k == 3 else 7.0, server="s2", cpu=15.0) for k in range(20)]
    ops += [TelemetryOp(t=8.0, server="s1" if k != 9 else "ghost", cpu=float(k)) for k in range(20)]
    results = [(out, r.last_t, type(r.last_t), r.ops, r.lines, r.scheduler.servers().tolist())
               for out, r in _applied_both(ops)]
    assert results[0] == results[1]
    assert b"UnknownServer" in results[0][0]


def test_telemetry_runs_through_the_engine_entry_match():
    """Float telemetry runs long enough to batch (the engine's C entry): a good run, a
    run naming an unknown server, one with a value out of range and one going back in
    time: the same output, errors, replay state and servers as the Python loop."""
    ops = [TelemetryOp(t=2.0, server="s1" if k % 2 else "s2", cpu=float(k), mem=40.0) for k in range(30)]
    ops += [TelemetryOp(t=3.0, server="s1" if k != 11 else "ghost", cpu=1.0) for k in range(20)]
    ops += [TelemetryOp(t=4.0, server="s2", cpu=500.0 if k == 7 else 2.0) for k in range(20)]
    ops += [TelemetryOp(t=5.0 if k < 17 else 4.5, server="s1", custom=9.0) for k in range(20)]
    results = [(out, r.last_t, r.ops, r.lines, [(e.line, e.error) for e in r.errors], r.scheduler.servers().tolist())
               for out, r in _applied_both(ops)]
    assert results[0] == results[1]
    errors = [e for _, e in results[0][4]]
    assert "UnknownServer" in errors and "InvalidArgument" in errors and "TimeWentBackwards" in errors
    s = _applied_both(ops[:30])[0][1].scheduler
    assert s.server_field("cpu")[s.server_indices(["s1", "s2"])].tolist() == [29.0, 28.0]


class _OwnLaunch(usher.Scheduler):
    """A scheduler whose ``launch`` is its own (a broker's wrapper): the replay calls it,
    not the engine's row-writing launch."""

    def launch(self, *args, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        return super().launch(*args, **kwargs)


class _OwnSessionOps(usher.Scheduler):
    """A scheduler whose ``session_ops_many`` is its own: the replay gives it lists."""

    def session_ops_many(self, ops, sessions, now=None):
        self.calls = getattr(self, "calls", 0) + 1
        return super().session_ops_many(ops, sessions, now)


class _OwnTelemetry(usher.Scheduler):
    """A scheduler whose ``telemetry_many`` is its own: the replay calls it, not the
    engine's C entry."""

    def telemetry_many(self, *args, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        return super().telemetry_many(*args, **kwargs)


@pytest.mark.parametrize("scheduler_class", [_OwnLaunch, _OwnSessionOps, _OwnTelemetry])
@given(seed=st.integers(0, 10_000), bad=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 50)), max_size=8))
def test_a_scheduler_with_its_own_methods_is_called(scheduler_class, seed, bad):
    """The compiled loop places launches and applies runs of session and telemetry
    lines through the engine's C entries only when the scheduler's ``launch`` /
    ``session_ops_many`` / ``telemetry_many`` are its own; a subclass's own methods are called, with the same output, errors,
    replay state and scheduler as the plain scheduler and the Python loop."""
    # a launch that places and a session line naming it, at the end: whatever the
    # random lines did, the loop reaches both methods
    tail = [{"t": 1e9, "op": "licences", "cap": None}, {"t": 1e9, "op": "pool", "name": "PX"}, {"t": 1e9, "op": "app", "name": "ax", "pools": ["PX"]},
            {"t": 1e9, "op": "server", "name": "sx", "zone": "ZX", "pool": "PX"},
            {"t": 1e9, "op": "user", "id": "ux", "apps": ["ax"]},
            {"t": 1e9, "op": "launch", "id": "rx", "user": "ux", "app": "ax"},
            {"t": 1e9 + 1, "op": "logon_done", "session": "rx"}]
    tail += [{"t": 1e9 + 2, "op": "telemetry", "server": "sx", "cpu": float(k)} for k in range(40)]
    lines = _mangle(random_trace(seed, 300), bad) + [json.dumps(o) for o in tail]
    results = []
    for cls, replayer in ((scheduler_class, Replayer), (usher.Scheduler, Replayer),
                          (usher.Scheduler, PythonLoopReplayer)):
        out = io.BytesIO()
        r = replayer(cls(), out=out, keep=True)
        r.feed(lines)
        results.append((out.getvalue(), dict(r.names), dict(r.creator), r.last_t, r.outcomes,
                        [(e.line, e.error, e.message) for e in r.errors], r.scheduler.sessions().tolist()))
        if cls is scheduler_class:  # every launch decided (or run applied) by its own method
            assert r.names["rx"] is not None
            assert getattr(r.scheduler, "calls", 0) >= (r.launches if cls is _OwnLaunch else 1)
    assert results[0] == results[1] == results[2]
