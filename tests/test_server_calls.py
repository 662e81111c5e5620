"""``Engine._server_calls`` (one server operation over many servers under one
reading of the time) against ``Engine._server_call`` once per server, and
``_server_call``'s ended-session ids against the sessions the server held.

The fleet and the state compared are ``test_server_fastpaths``'s: the same state
after a good call, the same error class, field and value after a bad one, and the
state unchanged by an error (every server and the time checked before any change).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from tests.test_server_fastpaths import N_SERVERS, _fleet, _state
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.errors import InvalidArgument, TimeWentBackwards, UnknownServer, UsherError

PRESENT = [k for k in range(N_SERVERS) if k != 5]  # _fleet removes s5


def _locked(s, call, *args):
    s._lock_acquire()
    try:
        return call(*args)
    finally:
        s._lock_release()


def _loop(s, idx, op, value, now):
    return _locked(s, s._server_calls, np.array(idx, dtype=np.int64), op, value, now)


def _one_by_one(s, idx, op, value, now):
    """The reference: every index checked as the loop does (a present server),
    then the time, then one ``_server_call`` per index; an empty list moves the
    clock."""
    def run():
        for k, i in enumerate(idx):
            if not (0 <= i < N_SERVERS and s._t["server_i"][st.SV_PRESENT, i]):
                raise UnknownServer(f"servers[{k}]" if len(idx) > 1 else "server", i, "no such server")
        if not idx:
            s._advance_to(now)
        for i in idx:
            s._server_call(i, op, value, now, 0)
    return _locked(s, run)


def _outcome(call):
    try:
        return call(), None
    except UsherError as e:
        return None, (type(e), e.field, e.value)


def _both(call, reference, *args):
    a, b = _fleet(), _fleet()
    got, want = _outcome(lambda: call(a, *args)), _outcome(lambda: reference(b, *args))
    assert got == want
    assert _state(a) == _state(b)
    return got


_OPS = [
    (_kernels.OP_PLACE_LAST, 1), (_kernels.OP_PLACE_LAST, 0), (_kernels.OP_MODE, 1),
    (_kernels.OP_REGISTERED, 0), (_kernels.OP_POWER, 2),
]


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.sampled_from(PRESENT), max_size=12), hst.sampled_from(_OPS),
       hst.sampled_from([None, 20.0, 30.0]))
def test_the_loop_is_one_call_a_server(idx, op_value, now):
    _both(_loop, _one_by_one, idx, *op_value, now)


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.sampled_from(PRESENT), max_size=6), hst.sampled_from([5, -1, N_SERVERS, 1 << 40]),
       hst.lists(hst.sampled_from(PRESENT), max_size=6), hst.booleans())
def test_a_bad_server_changes_nothing(before, bad, after, flag):
    idx = before + [bad] + after
    got = _both(_loop, _one_by_one, idx, _kernels.OP_PLACE_LAST, int(flag), 30.0)
    assert got[1] == (UnknownServer, f"servers[{len(before)}]" if len(idx) > 1 else "server", bad)
    untouched = _fleet()
    s = _fleet()
    with pytest.raises(UnknownServer):
        _loop(s, idx, _kernels.OP_PLACE_LAST, int(flag), 30.0)
    assert _state(s) == _state(untouched)


@pytest.mark.parametrize("now", [19.0, float("nan"), "x", -1e300])
def test_a_bad_time_changes_nothing(now):
    untouched, s = _fleet(), _fleet()
    with pytest.raises(UsherError) as e:
        _loop(s, PRESENT, _kernels.OP_PLACE_LAST, 1, now)
    assert e.value.field == "now"
    assert _state(s) == _state(untouched)
    if now == 19.0:
        assert type(e.value) is TimeWentBackwards


def test_the_clock_is_read_once():
    """``now`` None: one reading of the scheduler's clock for the whole list."""
    s = _fleet()
    readings = []

    def clock():
        readings.append(30.0 + len(readings))
        return readings[-1]

    s._clock = clock
    _loop(s, PRESENT, _kernels.OP_PLACE_LAST, 1, None)
    assert readings == [30.0]
    assert s._clockv[st.CK_NOW] == 30.0


def test_an_empty_list_moves_the_clock():
    s = _fleet()
    _loop(s, [], _kernels.OP_PLACE_LAST, 1, 33.0)
    assert s._clockv[st.CK_NOW] == 33.0
    with pytest.raises(TimeWentBackwards):
        _loop(s, [], _kernels.OP_PLACE_LAST, 1, 32.0)


@pytest.mark.parametrize("op,value", [(_kernels.OP_EVICT, 0), (_kernels.OP_POWER, 0), (-1, 0), (5, 1)])
def test_an_op_that_ends_sessions_is_refused(op, value):
    untouched, s = _fleet(), _fleet()
    with pytest.raises(InvalidArgument) as e:
        _loop(s, PRESENT, op, value, 30.0)
    assert (e.value.field, e.value.value) == ("op", op)
    assert _state(s) == _state(untouched)


def test_set_place_last_marks_every_server_it_names():
    s = _fleet()
    s.set_place_last([f"s{k}" for k in PRESENT], True, now=30.0)
    assert s.servers()["place_last"].tolist() == [True] * len(PRESENT)
    s.set_place_last(np.array(PRESENT[:3]), False, now=31.0)
    assert s.servers()["place_last"].tolist() == [False] * 3 + [True] * (len(PRESENT) - 3)
    assert s._clockv[st.CK_NOW] == 31.0


@pytest.mark.parametrize("sessions", [0, 1, None])
def test_power_off_returns_every_ended_session(sessions):
    """The ids of the sessions a power-off ends, whatever count the caller passes
    (the buffer is sized by the server's own count too)."""
    s = _fleet()
    i = int(np.argmax(s._t["server_i"][st.SV_SESSIONS, :N_SERVERS]))
    held = int(s._t["server_i"][st.SV_SESSIONS, i])
    assert held >= 2
    rows = s.sessions()
    want = sorted(int(x) for x in rows["id"][rows["server"] == f"s{i}"])
    n = held if sessions is None else sessions
    got = _locked(s, s._server_call, i, _kernels.OP_POWER, 0, 30.0, n)
    assert sorted(got) == want and all(type(x) is int for x in got)
    assert _locked(s, s._server_call, i, _kernels.OP_MODE, 1, 30.0, 0) == []


@pytest.mark.parametrize("op", [-1, 99])
def test_a_server_call_of_no_known_operation_is_refused(op):
    """The buffer of ended sessions is sized by the operation: one the kernel does
    not know is refused before the kernel runs, and nothing changes."""
    s = _fleet()
    before = _state(s)
    with pytest.raises(InvalidArgument) as info:
        _locked(s, s._server_call, 0, op, 0, 30.0, 0)
    assert info.value.field == "op" and _state(s) == before


# ----------------------------------------------------------------- telemetry_rows
# the replay's C entry for a run of telemetry lines (usher._engine.TELEMETRY_ROWS),
# called here through ctypes: ``telemetry_rows(s, servers, cpu, mem, disk_queue, custom,
# now)`` must be ``s.telemetry_many(servers, cpu, mem, disk_queue, custom, now)``

def _telemetry_rows():
    import ctypes

    from usher import _engine
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    fn = ctypes.PYFUNCTYPE(ctypes.c_int, *[ctypes.py_object] * 7)
    return fn(get(_engine.TELEMETRY_ROWS, b"usher._engine.telemetry_rows"))


TELEMETRY_ROWS = _telemetry_rows()
_NAMES = [f"s{k}" for k in range(N_SERVERS)] + ["ghost", "", None, 3]
_VALUES = [0.0, 12.5, 55.0, 99.0, 100.0, -1.0, 101.0, float("nan"), float("inf"), 5000.0]


@settings(max_examples=150, deadline=None)
@given(rows=hst.lists(hst.tuples(hst.sampled_from(_NAMES), hst.lists(hst.sampled_from(_VALUES),
                                                                     min_size=4, max_size=4)),
                      min_size=0, max_size=12),
       mask=hst.lists(hst.booleans(), min_size=4, max_size=4),
       good=hst.booleans(), now=hst.sampled_from([25.0, 20.0, 10.0, float("nan"), 1e300]))
def test_telemetry_rows_is_telemetry_many(rows, mask, good, now):
    """The same state after a good run, the same error (class, field, value) after
    a bad one, and the state unchanged by an error: one source of the rules."""
    if good:  # mostly-valid runs: known servers, values in every range
        rows = [(f"s{k % N_SERVERS}", [float(k % 90)] * 4) for k, _ in enumerate(rows) if k % N_SERVERS != 5]
    servers = [name for name, _ in rows]
    columns = [np.array([v[f] for _, v in rows], dtype=np.float64) if mask[f] else None for f in range(4)]
    entry, public = _fleet(), _fleet()
    before = _state(entry)
    got = _outcome(lambda: TELEMETRY_ROWS(entry, list(servers), *columns, now) or None)
    want = _outcome(lambda: public.telemetry_many(list(servers), cpu=columns[0], mem=columns[1],
                                                  disk_queue=columns[2], custom=columns[3], now=now))
    assert repr(got) == repr(want)  # a NaN value compares by its repr
    assert _state(entry) == _state(public)
    if got[1] is not None:
        assert _state(entry) == before


def test_telemetry_rows_applies_a_good_run():
    """A run of known servers is applied (the test above could pass on errors only)."""
    s = _fleet()
    servers = ["s0", "s1", "s2", "s3"]
    cpu = np.array([10.0, 20.0, 30.0, 40.0])
    assert TELEMETRY_ROWS(s, servers, cpu, None, None, None, 30.0) == 0
    assert s.server_field("cpu")[:4].tolist() == cpu.tolist()
    with pytest.raises(UnknownServer):
        TELEMETRY_ROWS(s, ["s0", "s5"], np.array([1.0, 2.0]), None, None, None, 31.0)
    assert s.server_field("cpu")[0] == 10.0
    with pytest.raises(TimeWentBackwards):
        TELEMETRY_ROWS(s, ["s0"], np.array([1.0]), None, None, None, 29.0)
    with pytest.raises(InvalidArgument):
        TELEMETRY_ROWS(s, ["s0", "s1"], np.array([1.0, 200.0]), None, None, None, 32.0)
    assert s.server_field("cpu")[:2].tolist() == [10.0, 20.0]
