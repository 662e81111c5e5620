"""Hostile input: every public method, called with values drawn from a broad
strategy of bad values (wrong types, non-finite and out-of-range numbers, ints
beyond int64, unhashable objects, arrays of the wrong shape, dtype or length),
raises an ``usher.UsherError`` and leaves the state exactly as it was.

The calls run in a child process (``python -c``), so a call that crashes the
interpreter fails the test instead of killing the test run. The child draws
examples with hypothesis and reports the first failure on stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import usher

# ------------------------------------------------------------ bad values
_HUGE = [2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]
_NONFINITE = [float("nan"), float("inf"), float("-inf")]

#: scalar values (each slot draws those it refuses, see VALID)
_BAD_SCALARS = [
    None, True, False, 1, -1, 0, 1.5, -2.5, "", "x", b"s0", ["s0"], {"a": 1}, {1, 2}, ("s0",), object(),
    np.array([1, 2]), np.zeros((2, 2)), np.float64("nan"), np.int64(-5), np.bool_(True), complex(1, 1),
    "95", "false", 1e300, -1e300, 2.0**70,
] + _HUGE + _NONFINITE

#: batch values (each slot draws those it refuses)
_BAD_ARRAYS = [
    np.zeros((2, 2), dtype=np.int64), np.zeros(2, dtype=np.float64), np.zeros(3, dtype=np.int64),
    np.array(["a", "b"]), np.array([1, 2], dtype=object), np.zeros((0, 2)), np.array([-1, 5]),
    np.array([2**63, 0], dtype=np.uint64), ["a", None], ["a", 1], "ab", 5, [[1], [2]], [1.0, 2.0],
    [True, False], ["95", "1"], np.ones(2, dtype=bool), [float("nan"), 1.0], np.zeros(4, dtype=np.int64)[::2],
    [], ["u1", "u1"], ["s0", "nope"], [30.0, 20.0], [20.0, float("inf")], np.zeros(2, dtype=np.int8),
    np.zeros(2, dtype=np.int64), ["a", "a"], [None, None], [10**400, 1],
    [2**63, 1],
]


def _is_int(v, lo, hi):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and lo <= v <= hi


def _is_real(v, lo, hi):
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and lo <= v <= hi)


def _is_id(v):
    return isinstance(v, str) and v != ""


def _is_names(v):
    return v is None or _is_id(v) or (isinstance(v, (list, tuple)) and all(_is_id(x) for x in v))


def _is_rows(v, ok, n=2):
    if isinstance(v, (str, bytes, dict)) or (isinstance(v, np.ndarray) and v.ndim != 1):
        return False
    return isinstance(v, (list, tuple, np.ndarray)) and len(v) == n and all(ok(x) for x in v)


def _zero_indices(v):
    return isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.ndim == 1 and len(v) == 2 and (v == 0).all()


#: what each kind of slot accepts: a slot draws only the values its kind refuses
VALID = {
    "id": _is_id,
    "opt_id": lambda v: v is None or _is_id(v),
    "flag": lambda v: v is True or v is False or isinstance(v, np.bool_),
    "opt_flag": lambda v: v is None or v is True or v is False or isinstance(v, np.bool_),
    "opt_time": lambda v: v is None or _is_real(v, 10.0, 1e15),  # the clock is at 10
    "server": lambda v: (isinstance(v, str) and v in ("s0", "s1", "s2")) or _is_int(v, 0, 2),
    "user_index": lambda v: _is_int(v, 0, 0),
    "session": lambda v: False,  # the good one is "$", the session launched
    "pct": lambda v: v is None or _is_real(v, 0, 100),
    "dq": lambda v: v is None or _is_real(v, 0, 1e300),
    "custom": lambda v: v is None or _is_real(v, 0, 10000),
    "enum": lambda v: v is None or _is_int(v, 0, 5),
    "names": _is_names,
    "enum_list": lambda v: _is_names(v) or (isinstance(v, (list, tuple, set, frozenset)) and all(
        _is_id(x) or _is_int(x, 0, 5) for x in v)),
    "count": lambda v: v is None or _is_int(v, 0, 2**31 - 1),
    "pos_count": lambda v: _is_int(v, 1, 2**31 - 1),
    "weight": lambda v: _is_int(v, 1, 10000),
    "seconds": lambda v: v is None or _is_real(v, 0, 1e15),
    "pos_real": lambda v: _is_real(v, 1e-300, 1e300),
    "seed": lambda v: v is None or _is_int(v, 0, 2**31 - 1),
    "user_rows": lambda v: _is_rows(v, _is_id) or _zero_indices(v),
    "app_rows": lambda v: _is_rows(v, lambda x: x == "a") or _zero_indices(v),
    "opt_rows": lambda v: v is None or _is_rows(v, lambda x: x is None or _is_id(x)),
    "flag_rows": lambda v: v is None or _is_rows(v, lambda x: isinstance(x, (bool, np.bool_))),
    "batch_time": lambda v: v is None or _is_real(v, 10.0, 1e15) or (
        _is_rows(v, lambda x: _is_real(x, 10.0, 1e15)) and v[1] >= v[0]),
    "server_rows": lambda v: _is_rows(v, lambda x: x in ("s0", "s1", "s2") if isinstance(x, str) else _is_int(x, 0, 2),
                                      len(v)) or isinstance(v, (set, frozenset)) and all(x in (1, 2) for x in v),
    "num_rows": lambda v: v is None or _is_rows(v, lambda x: _is_real(x, 0, 100)) or isinstance(v, set),
    "dq_rows": lambda v: v is None or _is_rows(v, lambda x: _is_real(x, 0, 1e300)) or isinstance(v, set),
    "opt_text": lambda v: v is None or isinstance(v, str),
    "new_ids": lambda v: (isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim == 1)) and len(
        set(v)) == len(v) and all(_is_id(x) and x != "u1" for x in v),
    "zone_rows": lambda v: v is None or _is_rows(v, lambda x: x is None or _is_id(x)),
    "app_lists": lambda v: _is_names(v) or _is_rows(v, _is_names),
    "known_users": lambda v: isinstance(v, (list, tuple)) and all(x == "u1" for x in v),
    "known_apps": lambda v: isinstance(v, (list, tuple)) and all(x == "a" for x in v),
    # one server, or any collection of them (order does not matter to a flag)
    "servers": lambda v: VALID["server"](v) or (
        (isinstance(v, (list, tuple, set, frozenset)) or (isinstance(v, np.ndarray) and v.ndim == 1))
        and all(VALID["server"](x) for x in v)),
}
_ARRAY_KINDS = {"user_rows", "app_rows", "opt_rows", "flag_rows", "batch_time", "server_rows", "num_rows", "dq_rows",
                "new_ids", "zone_rows", "app_lists", "known_users", "known_apps"}

#: every public method: (kind, good value) of each slot; a call fills the slots
#: before the drawn one with their good values
_T = ("opt_time", 20.0)
CALLS = {
    "launch": [("id", "u1"), ("id", "a"), ("opt_id", None), ("opt_id", None), ("flag", False), _T,
               ("flag", False)],
    "launch_by_index": [("user_index", 0), ("id", "a"), ("opt_id", None), ("opt_id", None), ("flag", False), _T],
    "launch_many": [("user_rows", ["u1", "u2"]), ("app_rows", ["a", "a"]), ("opt_rows", None),
                    ("opt_rows", None), ("flag_rows", None), ("batch_time", 20.0)],
    "logon_complete": [("session", "$"), _T],
    "disconnect": [("session", "$"), _T],
    "logoff": [("session", "$"), _T],
    "launch_failed": [("session", "$"), _T],
    "close_app": [("session", "$"), ("id", "a"), _T],
    "telemetry": [("server", "s0"), ("pct", None), ("pct", None), ("dq", None), ("custom", None), _T],
    "telemetry_many": [("server_rows", ["s0", "s1"]), ("num_rows", None), ("num_rows", None),
                       ("dq_rows", None), ("num_rows", None), _T],
    "set_power": [("server", "s0"), ("enum", "on"), _T],
    "set_registered": [("server", "s0"), ("flag", True), _T],
    "set_mode": [("server", "s0"), ("enum", "enabled"), _T],
    "remove_server": [("server", "s2"), ("flag", False), _T],
    "set_place_last": [("servers", ["s0", "s1"]), ("flag", True), _T],
    "set_image": [("server", "s0"), ("opt_text", "img-2"), _T],
    "add_server": [("id", "n"), ("id", "Znew"), ("id", "p"), ("names", ("Tnew",)), ("pos_count", 10),
                   ("weight", 100), ("enum", "on"), ("flag", True), ("enum", "enabled"), ("opt_text", None), _T],
    "add_pool": [("id", "n"), ("enum", "horizontal"), ("enum_list", ("app_home",)), ("flag", True),
                 ("enum", "always"), ("flag", True), ("flag", False), ("count", 2), ("flag", False),
                 ("count", None), ("enum_list", ("sessions",)), ("pos_real", 90.0), ("pos_real", 90.0),
                 ("pos_real", 8.0)],
    "add_app": [("id", "n"), ("names", ["p"]), ("opt_id", "Znew"), ("names", "Tnew"), ("count", None),
                ("count", None)],
    "add_user": [("id", "n"), ("opt_id", "Znew"), ("app_lists", ())],
    "add_users": [("new_ids", ["n1", "n2"]), ("zone_rows", None), ("app_lists", None)],
    "remove_user": [("id", "u9")],
    "set_licences": [("count", 5)],
    "settings": [("opt_flag", None), ("seed", None), ("seconds", None), ("seconds", None)],
    "user_indices": [("known_users", ["u1"])],
    "app_indices": [("known_apps", ["a"])],
    "user_config": [("id", "u1")],
    "pool_config": [("id", "p")],
    "app_config": [("id", "a")],
    "server": [("server", "s0")],
    "session": [("session", "$")],
}


def bad_values(method: str, slot: int) -> list:
    """The drawn values that ``slot`` of ``method`` refuses."""
    kind = CALLS[method][slot][0]
    pool = _BAD_ARRAYS + _BAD_SCALARS if kind in _ARRAY_KINDS else _BAD_SCALARS
    out = []
    for v in pool:
        try:
            ok = bool(VALID[kind](v))
        except Exception:  # noqa: BLE001 - a value the predicate cannot read is a bad one
            ok = False
        if not ok:
            out.append(v)
    return out


def _populated():
    s = usher.Scheduler(licences=10)
    s.add_pool("p")
    s.add_pool("q", external_access=True)
    s.add_app("a", ["p"])
    s.add_user("u1", home_zone="z1", apps=("a",))
    for name, zone, pool in (("s0", "z1", "p"), ("s1", "z1", "p"), ("s2", "z2", "q")):
        s.add_server(name, zone, pool, now=0.0)
    sid = s.launch("u1", "a", endpoint="e1", now=10.0).session
    return s, sid


def full_snapshot(s):
    """Everything a caller can read: servers, sessions, counters, names, clock."""
    return (s.servers().tolist(), s.sessions().tolist(), s.licences_in_use, s.licence_cap, s.live_sessions,
            s.now, s.pool_names, s.app_names, s.zone_names, s.user_ids, s.server_names(),
            sorted(s._tags), sorted(e for e in s._endpoint_names if e is not None), s.enforce_entitlement, s.seed, s.sinbin_seconds,
            s.pending_timeout)


def run_call(s, sid, method, slot, value):
    """Call ``method`` with ``value`` in ``slot`` and good values elsewhere;
    None when the contract held (an UsherError, the state unchanged), else
    a description of the breach."""
    args = [sid if good == "$" else good for _kind, good in CALLS[method]]
    args[slot] = value
    before = full_snapshot(s)
    try:
        getattr(s, method)(*args)
    except usher.UsherError:
        after = full_snapshot(s)
        return None if after == before else f"{method}{tuple(args)!r}: state changed on error"
    except BaseException as exc:  # noqa: BLE001 - the breach being looked for
        return f"{method}{tuple(args)!r}: {type(exc).__name__}: {exc}"
    return f"{method}{tuple(args)!r}: accepted"


def _run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})


_PRELUDE = f"import sys\nsys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\nimport test_hostile as h\n"


def test_every_method_refuses_bad_values_and_keeps_its_state():
    """Hypothesis draws a method, a slot and a bad value for it, in a child process."""
    examples = 4000 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 300
    code = _PRELUDE + textwrap.dedent(f"""
        from hypothesis import HealthCheck, given, settings, strategies as st
        breaches = []

        @settings(max_examples={examples}, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data):
            method = data.draw(st.sampled_from(sorted(h.CALLS)))
            slot = data.draw(st.integers(0, len(h.CALLS[method]) - 1))
            value = data.draw(st.sampled_from(h.bad_values(method, slot)))
            s, sid = h._populated()
            breach = h.run_call(s, sid, method, slot, value)
            if breach:
                breaches.append(breach)
                raise AssertionError(breach)

        try:
            check()
        except AssertionError:
            pass
        print("BREACH " + breaches[-1] if breaches else "OK")
    """)
    proc = _run_child(code)
    assert proc.returncode == 0, f"the child died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-3000:]


@pytest.mark.parametrize("method", sorted(CALLS))
def test_each_slot_refuses_each_bad_value(method):
    """The whole grid of one method (every slot, every value it refuses), in a child."""
    code = _PRELUDE + textwrap.dedent(f"""
        found = []
        for slot in range(len(h.CALLS[{method!r}])):
            for value in h.bad_values({method!r}, slot):
                s, sid = h._populated()
                breach = h.run_call(s, sid, {method!r}, slot, value)
                if breach:
                    found.append(breach)
        print("\\n".join("BREACH " + b for b in found) or "OK")
    """)
    proc = _run_child(code)
    assert proc.returncode == 0, f"the child died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-6000:]


def test_the_child_reports_a_crash():
    """The harness fails a test when the child dies (it cannot pass by accident)."""
    proc = _run_child("import os; os.abort()")
    assert proc.returncode != 0


@given(st.sampled_from(["add_app", "add_server"]))
@settings(max_examples=4)
def test_a_refused_configuration_interns_no_zone_or_tag(method):
    s, _ = _populated()
    zones, tags = s.zone_names, sorted(s._tags)
    with pytest.raises(usher.InvalidArgument):
        if method == "add_app":
            s.add_app("n", ["p"], home_zone="Znew", tag_restriction="Tnew", max_instances_total=2**63)
        else:
            s.add_server("n", "Znew", "p", tags=("Tnew",), max_sessions=10**400)
    assert s.zone_names == zones and sorted(s._tags) == tags


def test_the_crashing_batch_of_the_report_is_refused():
    s, _ = _populated()
    with pytest.raises(usher.InvalidArgument):
        s.launch_many(np.zeros((2, 2), dtype=np.int64), np.zeros(2, dtype=np.int64), now=20.0)


@pytest.mark.parametrize("user", [None, 1, True, 1.0, b"u", ("u",)], ids=repr)
def test_ids_are_strings(user):
    s, _ = _populated()
    users = s.user_ids
    with pytest.raises(usher.InvalidArgument):
        s.launch(user, "a", now=20.0)
    with pytest.raises(usher.InvalidArgument):
        s.launch_many([user, "u1"], ["a", "a"], now=20.0)
    assert s.user_ids == users


def test_flags_are_bools_and_numbers_are_numbers():
    s, _ = _populated()
    for bad in ("false", 0, 1, None, "yes"):
        with pytest.raises(usher.InvalidArgument):
            s.launch("u9", "a", external=bad, now=20.0)
    with pytest.raises(usher.InvalidArgument):
        s.launch_many(["u8", "u9"], ["a", "a"], external=["false", "true"], now=20.0)
    with pytest.raises(usher.InvalidArgument):
        s.telemetry_many(["s0"], cpu=["95"], now=20.0)
    with pytest.raises(usher.InvalidArgument):
        s.launch_many(np.zeros(2, dtype=np.float64), np.zeros(2, dtype=np.int64), now=20.0)
    assert "u9" not in s.user_ids and "u8" not in s.user_ids


def test_times_beyond_the_range_are_refused_and_realistic_times_still_work():
    s, _ = _populated()
    for bad in (2**63, 1e16, -1e16, 10**400):
        with pytest.raises(usher.InvalidArgument):
            s.launch("u1", "a", now=bad)
    assert s.launch("u9", "a", now=20.0).placed
