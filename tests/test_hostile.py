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


def bad_scalars():
    """Values no argument accepts where a name, a flag, a count or a time is due."""
    return st.sampled_from(
        [None, True, False, 1, -1, 0, 1.5, -2.5, "", "x", b"s0", ["s0"], {"a": 1}, {1, 2},
         ("s0",), object(), np.array([1, 2]), np.zeros((2, 2)), np.float64("nan"),
         np.int64(-5), np.bool_(True), complex(1, 1), "95", "false", 1e300, -1e300]
        + _HUGE + _NONFINITE
    )


def bad_arrays():
    """Values no batch argument accepts."""
    return st.sampled_from(
        [np.zeros((2, 2), dtype=np.int64), np.zeros(2, dtype=np.float64), np.zeros(3, dtype=np.int64),
         np.array(["a", "b"]), np.array([1, 2], dtype=object), np.zeros((0, 2)), np.array([-1, 5]),
         np.array([2**63], dtype=np.uint64), ["a", None], ["a", 1], "ab", 5, None, [[1], [2]],
         [1.0, 2.0], [True, False], ["95", "1"], np.ones(2, dtype=bool), [float("nan"), 1.0],
         np.zeros(2, dtype=np.int64)[::2], np.zeros(4, dtype=np.int64)[::2], {"a": 1}]
    )


# every public method with the slots that take a drawn value ("?" in the arguments),
# good values elsewhere; the drawn value goes into one slot per call
CALLS = {
    "launch": [("?", "a"), ("u1", "?"), ("u1", "a", "?"), ("u1", "a", None, "?"),
               ("u1", "a", None, None, "?"), ("u1", "a", None, None, False, "?"),
               ("u1", "a", None, None, False, 20.0, "?")],
    "launch_by_index": [("?", "a"), (0, "?"), (0, "a", "?"), (0, "a", None, None, False, "?")],
    "launch_many": [("@", ["a", "a"]), (["u1", "u2"], "@"), ("@", np.zeros(2, dtype=np.int64)),
                    (np.zeros((2, 2), dtype=np.int64), np.zeros(2, dtype=np.int64)),
                    (["u1", "u2"], ["a", "a"], "@"), (["u1", "u2"], ["a", "a"], None, "@"),
                    (["u1", "u2"], ["a", "a"], None, None, "@"),
                    (["u1", "u2"], ["a", "a"], None, None, None, "?"),
                    (["u1", "u2"], ["a", "a"], None, None, None, "@")],
    "logon_complete": [("?",), ("$", "?")],
    "disconnect": [("?",), ("$", "?")],
    "logoff": [("?",), ("$", "?")],
    "launch_failed": [("?",), ("$", "?")],
    "close_app": [("?", "a"), ("$", "?"), ("$", "a", "?")],
    "telemetry": [("?",), ("s0", "?"), ("s0", None, "?"), ("s0", None, None, "?"),
                  ("s0", None, None, None, "?"), ("s0", 1.0, None, None, None, "?")],
    "telemetry_many": [("@",), (["s0", "s1"], "@"), (["s0", "s1"], None, "@"),
                       (["s0", "s1"], [1.0, 2.0], None, None, None, "?")],
    "set_power": [("?", "on"), ("s0", "?"), ("s0", "on", "?")],
    "set_registered": [("?", True), ("s0", "?"), ("s0", True, "?")],
    "set_mode": [("?", "enabled"), ("s0", "?"), ("s0", "enabled", "?")],
    "remove_server": [("?",), ("s2", "?"), ("s2", False, "?")],
    "add_server": [("?", "z1", "p"), ("n", "?", "p"), ("n", "z1", "?"), ("n", "Znew", "p", "?"),
                   ("n", "z1", "p", ("Tnew",), "?"), ("n", "z1", "p", ("Tnew",), 10, "?"),
                   ("n", "z1", "p", (), 10, 100, "?"), ("n", "z1", "p", (), 10, 100, "on", "?"),
                   ("n", "z1", "p", (), 10, 100, "on", True, "?"),
                   ("n", "z1", "p", (), 10, 100, "on", True, "enabled", "?"),
                   ("n", "Znew", "p", ("Tnew",), 10, 100, "on", True, "enabled", None, "?")],
    "add_pool": [("?",)] + [("n",) + ("d",) * k + ("?",) for k in range(13)],
    "add_app": [("?", ["p"]), ("n", "?"), ("n", ["p"], "?"), ("n", ["p"], "Znew", "?"),
                ("n", ["p"], "Znew", "Tnew", "?"), ("n", ["p"], "Znew", "Tnew", None, "?")],
    "add_user": [("?",), ("n", "?"), ("n", "Znew", "?")],
    "add_users": [("@",), (["n1", "n2"], "@"), (["n1", "n2"], None, "@")],
    "remove_user": [("?",)],
    "set_licences": [("?",)],
    "settings": [("?",), (None, "?"), (None, None, "?"), (None, None, None, "?")],
    "user_indices": [("@",)],
    "app_indices": [("@",)],
    "user_config": [("?",)],
    "pool_config": [("?",)],
    "app_config": [("?",)],
    "server": [("?",)],
    "session": [("?",)],
}

#: a drawn value that some slot accepts is not an error; these are the
#: (method, slot, value) combinations the contract allows, by a predicate
_POOL_DEFAULTS = ("horizontal", ("app_home",), True, "always", True, False, 2, False, None,
                  ("sessions",), 90.0, 90.0, 8.0)


def _accepted(method, args, value) -> bool:
    """True when ``value`` in this slot is valid input (so no error is due)."""
    slot = args.index("?") if "?" in args else args.index("@")
    if value is None and method in ("launch", "launch_by_index") and slot >= 2:
        return slot != 4 and slot != 6  # location, endpoint, now: None is fine
    if value is None and slot >= 1 and method in ("telemetry", "settings", "launch_many", "telemetry_many",
                                                  "add_users", "add_app", "add_user", "close_app",
                                                  "logon_complete", "disconnect", "logoff", "launch_failed",
                                                  "set_power", "set_registered", "set_mode", "remove_server"):
        return not (method == "close_app" and slot == 1) and not (method == "add_app" and slot == 1)
    return False


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
            sorted(s._tags), sorted(s._endpoints), s.enforce_entitlement, s.seed, s.sinbin_seconds,
            s.pending_timeout)


def run_call(s, sid, method, args, value):
    """Call ``method`` with ``value`` in the slot of ``args``; returns None when
    the contract held (an UsherError and the state unchanged, or a valid value
    accepted), else a description of the breach."""
    if method == "add_pool":
        filled = tuple(_POOL_DEFAULTS[k - 1] if a == "d" else a for k, a in enumerate(args))
    else:
        filled = args
    filled = tuple(value if a in ("?", "@") else sid if a == "$" else a for a in filled)
    before = full_snapshot(s)
    try:
        getattr(s, method)(*filled)
    except usher.UsherError:
        after = full_snapshot(s)
        return None if after == before else f"{method}{filled!r}: state changed on error"
    except BaseException as exc:  # noqa: BLE001 - the breach being looked for
        return f"{method}{filled!r}: {type(exc).__name__}: {exc}"
    if _accepted(method, args, value):
        return None
    return f"{method}{filled!r}: accepted"


def _child(profile_examples: int) -> str:
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from hypothesis import given, settings, HealthCheck, strategies as st
        import test_hostile as h

        breaches = []

        @settings(max_examples={profile_examples}, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data):
            method = data.draw(st.sampled_from(sorted(h.CALLS)))
            args = data.draw(st.sampled_from(h.CALLS[method]))
            value = data.draw(h.bad_arrays() if "@" in args else h.bad_scalars())
            s, sid = h._populated()
            breach = h.run_call(s, sid, method, args, value)
            if breach:
                breaches.append(breach)
                raise AssertionError(breach)

        try:
            check()
        except AssertionError:
            pass
        print("BREACH " + breaches[-1] if breaches else "OK")
    """)


def _run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})


def test_every_method_refuses_bad_values_and_keeps_its_state():
    examples = 3000 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 400
    proc = _run_child(_child(examples))
    assert proc.returncode == 0, f"the child died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-3000:]


@pytest.mark.parametrize("method", sorted(CALLS))
def test_each_slot_of_each_method_refuses_each_bad_value(method):
    """The whole grid for one method (every slot, every bad value), in a child."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import test_hostile as h
        from hypothesis import strategies as st
        scalars = h._BAD_SCALARS
        arrays = h._BAD_ARRAYS
        for args in h.CALLS[{method!r}]:
            for value in (arrays if "@" in args else scalars):
                s, sid = h._populated()
                breach = h.run_call(s, sid, {method!r}, args, value)
                if breach:
                    print("BREACH " + breach)
                    raise SystemExit(0)
        print("OK")
    """)
    proc = _run_child(code)
    assert proc.returncode == 0, f"the child died (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK"), proc.stdout[-3000:]


_BAD_SCALARS = bad_scalars().wrapped_strategy.elements if hasattr(bad_scalars(), "wrapped_strategy") else None
_BAD_ARRAYS = None


def _elements(strategy):
    return list(strategy.wrapped_strategy.elements if hasattr(strategy, "wrapped_strategy") else strategy.elements)


_BAD_SCALARS = _elements(bad_scalars())
_BAD_ARRAYS = _elements(bad_arrays())


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
