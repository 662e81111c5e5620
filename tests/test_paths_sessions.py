"""``Scheduler.session_ops_many``: the batch of session operations equals the
same operations one by one when every row succeeds, and changes nothing (the
error naming the failing row) when one would fail; the replay's runs of
session lines give the same output as the replay without batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import usher
from usher.core.codes import SessionOp
from usher.formats.replay import replay

from test_hostile import full_snapshot

_OPS = (SessionOp.LOGON_COMPLETE, SessionOp.DISCONNECT, SessionOp.LOGOFF, SessionOp.LAUNCH_FAILED)
_METHODS = {SessionOp.LOGON_COMPLETE: "logon_complete", SessionOp.DISCONNECT: "disconnect",
            SessionOp.LOGOFF: "logoff", SessionOp.LAUNCH_FAILED: "launch_failed"}


def _fleet(n_sessions=6, pending_timeout=120.0, sinbin=60.0):
    s = usher.Scheduler(seed=5, pending_timeout=pending_timeout, sinbin_seconds=sinbin)
    s.add_pool("P")
    s.add_app("a", ["P"])
    for i in range(4):
        s.add_server(f"s{i}", "Z", "P", max_sessions=8, now=0.0)
    sids = [s.launch(f"u{k}", "a", endpoint=f"e{k}", now=float(k)).session for k in range(n_sessions)]
    return s, sids


def _one_by_one(s, ops, sessions, times):
    """Apply the rows in order; (index of the failing row, its error) or (None, None)."""
    for k, (op, sid, t) in enumerate(zip(ops, sessions, times)):
        try:
            getattr(s, _METHODS[op])(sid, now=t)
        except usher.UsherError as e:
            return k, e
    return None, None


@st.composite
def _rows(draw):
    n = draw(st.integers(1, 12))
    ops = draw(st.lists(st.sampled_from(_OPS), min_size=n, max_size=n))
    picks = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))  # 6, 7: no such session
    steps = draw(st.lists(st.sampled_from([0.0, 0.5, 3.0, 200.0, -1.0]), min_size=n, max_size=n))
    return ops, picks, steps


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_rows(), st.booleans())
def test_batch_equals_one_by_one_or_changes_nothing(rows, as_arrays):
    ops, picks, steps = rows
    s, sids = _fleet()
    ref, _ = _fleet()
    bogus = [sids[0] + (1 << 40), 123456789]  # a future generation; a slot beyond the table
    sessions = [sids[p] if p < len(sids) else bogus[p - len(sids)] for p in picks]
    times, t = [], 10.0
    for step in steps:
        t += step
        times.append(t)
    before = full_snapshot(s)
    row, err = _one_by_one(ref, ops, sessions, times)
    args = ([int(o) for o in ops], sessions, times)
    if as_arrays:
        args = (np.array(args[0], dtype=np.int64), np.array(sessions, dtype=np.int64), np.array(times))
    if row is None:
        s.session_ops_many(*args)
        assert full_snapshot(s) == full_snapshot(ref)
        return
    with pytest.raises(type(err)) as e:
        s.session_ops_many(*args)
    assert full_snapshot(s) == before  # all or nothing
    field = e.value.field
    assert field in (f"sessions[{row}]", f"now[{row}]", "session", "now"), field
    if len(ops) > 1:
        assert field.endswith(f"[{row}]")


def test_rows_are_checked_by_the_input_rules():
    s, sids = _fleet()
    before = full_snapshot(s)
    cases = [
        (["x"], [sids[0]], [1.0], "ops[0]"),
        ([SessionOp.CLOSE_APP], [sids[0]], [10.0], "ops[0]"),
        ([0, 2], [sids[0], -1], [10.0, 11.0], "sessions[1]"),
        ([0, 2], [sids[0], 2 ** 64], [10.0, 11.0], "sessions[1]"),
        ([0, 2], [sids[0], True], [10.0, 11.0], "sessions[1]"),
        ([0, 2], [sids[0], sids[1]], [10.0, float("nan")], "now[1]"),
        ([0, 2], [sids[0], sids[1]], [10.0, "11"], "now[1]"),
        ([0, 2], [sids[0]], [10.0, 11.0], "sessions"),
        ([0, 2], [sids[0], sids[1]], [10.0], "now"),
    ]
    for ops, sessions, times, field in cases:
        with pytest.raises(usher.InvalidArgument) as e:
            s.session_ops_many(ops, sessions, times)
        assert e.value.field == field
        assert full_snapshot(s) == before
    with pytest.raises(usher.InvalidArgument) as e:
        s.session_ops_many([0], [sids[0]], float("inf"))
    assert e.value.field == "now"
    assert full_snapshot(s) == before


def test_one_time_for_every_row_and_the_clock():
    s, sids = _fleet()
    ref, _ = _fleet()
    s.session_ops_many([SessionOp.LOGON_COMPLETE, SessionOp.LOGOFF], sids[:2], 20.0)
    ref.logon_complete(sids[0], now=20.0)
    ref.logoff(sids[1], now=20.0)
    assert full_snapshot(s) == full_snapshot(ref)
    s.session_ops_many([SessionOp.LOGOFF], [sids[2]])  # None: the clock, as logoff(now=None)
    assert s.now is not None and s.live_sessions == ref.live_sessions - 1
    s.session_ops_many([], [])
    assert s.live_sessions == ref.live_sessions - 1


def _trace(n_users=40, steps=400, bad_every=0):
    """A trace of launches, runs of session lines, telemetry; with ``bad_every``,
    some session lines name an ended, rejected or unknown session or go back in time."""
    lines = ['{"t":0,"op":"pool","name":"P"}', '{"t":0,"op":"app","name":"a","pools":["P"]}']
    lines += [f'{{"t":0,"op":"server","name":"s{i}","zone":"Z","pool":"P","max_sessions":6}}' for i in range(5)]
    rng = np.random.default_rng(7)
    t = 1.0
    live, launching, k = [], [], 0
    for step in range(steps):
        t += float(rng.integers(0, 3))
        r = rng.random()
        if r < 0.35 or not live:
            lines.append(f'{{"t":{t},"op":"launch","id":"L{k}","user":"u{k % n_users}","app":"a","endpoint":"e{k}"}}')
            live.append(f"L{k}")
            launching.append(f"L{k}")
            k += 1
            continue
        for _ in range(int(rng.integers(1, 6))):  # a run of session lines
            q = rng.random()
            if launching and q < 0.4:
                name = launching.pop(int(rng.integers(0, len(launching))))
                op = "logon_done" if q < 0.35 else "launch_failed"
            elif live:
                name = live[int(rng.integers(0, len(live)))]
                op = "logoff" if q < 0.8 else "disconnect"
            else:
                continue
            if bad_every and rng.integers(0, bad_every) == 0:
                name = rng.choice([name, "nope", f"L{k - 1}"])
                tt = t - 5.0 if rng.random() < 0.3 else t
            else:
                tt = t
            if op in ("logoff", "launch_failed") and name in live:
                live.remove(name)
                if name in launching:
                    launching.remove(name)
            lines.append(f'{{"t":{tt},"op":"{op}","session":"{name}"}}')
        if rng.random() < 0.1:
            lines.append(f'{{"t":{t},"op":"telemetry","server":"s0","cpu":50.0}}')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bad_every", [0, 4])
def test_replay_of_session_runs_equals_the_replay_line_by_line(bad_every):
    trace = _trace(bad_every=bad_every)
    outs = []
    for batch in (True, False):
        out = io.BytesIO()
        r = replay(trace.encode(), out=out, batch=batch)
        outs.append((out.getvalue(), full_snapshot(r.scheduler), [e.error for e in r.errors]))
    assert outs[0] == outs[1]
    if bad_every:  # the bad lines are there, and reported
        assert {"UnknownSession", "TimeWentBackwards"} <= set(outs[0][2])


def test_two_threads_batches_of_disjoint_sessions():
    """Each thread's rows are read and applied under the one lock: two threads
    logging off disjoint halves end every session, and nothing else."""
    import threading

    s, _ = _fleet(n_sessions=0)
    sids = [s.launch(f"u{k}", "a", now=1.0).session for k in range(24)]
    halves = (sids[0::2], sids[1::2])
    errors = []

    def work(half):
        try:
            for k in range(0, len(half), 3):
                s.session_ops_many([SessionOp.LOGON_COMPLETE] * 3, half[k:k + 3])
                s.session_ops_many([SessionOp.LOGOFF] * 3, half[k:k + 3])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(h,)) for h in halves]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert s.live_sessions == 0 and s.licences_in_use == 0
