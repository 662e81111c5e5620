"""Bad input to every API call: the right ``usher.UsherError`` subclass, whose
``.field`` and ``.value`` name the bad argument, and a state exactly as it was
(servers(), sessions(), licences, clock). Run against every backend.

A field may be named with an index for array arguments (``apps[1]`` for the
second row of ``apps``); the base name must match.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import usher
from usher import Outcome

NAN = float("nan")
INF = float("inf")


class Any:
    """Expected ``.value`` for array arguments: the bad element or the whole
    argument (or a description of it) are all acceptable."""

    def __init__(self, *options):
        self.options = options


class Whatever:
    """Expected ``.value`` where several spellings are defensible."""


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def value_ok(actual, expected) -> bool:
    if isinstance(expected, Whatever):
        return True
    if isinstance(expected, Any):
        return any(value_ok(actual, o) for o in expected.options)
    if isinstance(actual, np.ndarray) or isinstance(expected, (list, tuple)):
        try:
            a = list(np.asarray(actual, dtype=object).reshape(-1)) if not isinstance(actual, str) else [actual]
            e = list(expected) if isinstance(expected, (list, tuple)) else [expected]
            return len(a) == len(e) and all(same(x, y) for x, y in zip(a, e))
        except Exception:
            return False
    if isinstance(actual, (np.floating, np.integer)):
        actual = actual.item()
    return same(actual, expected)


def field_ok(actual, expected) -> bool:
    return actual == expected or (isinstance(actual, str) and actual.startswith(expected + "["))


# ------------------------------------------------------------ a populated scheduler
T0 = 10.0  # the clock after setup


def populated(backend):
    """pools p, q (external); apps a (p), b (p, q), c (q); servers s0, s1 in
    p (z1) and s2 in q (z2); sessions: u1 launching (a), u2 active (a, b),
    u3 disconnected (a); one ended session; telemetry on s0; clock at T0."""
    s = backend(licences=10)
    s.add_pool("p")
    s.add_pool("q", external_access=True, load_rules=("sessions", "cpu"))
    s.add_app("a", ["p"])
    s.add_app("b", ["p", "q"], tag_restriction="t")
    s.add_app("c", ["q"], max_instances_total=5)
    s.add_user("u1", home_zone="z1", apps=("a", "b"))
    s.add_server("s0", "z1", "p", tags=("t",), now=0.0)
    s.add_server("s1", "z1", "p", tags=("t",), now=0.0)
    s.add_server("s2", "z2", "q", tags=("t",), now=0.0)
    s.telemetry("s0", cpu=12.5, mem=40.0, disk_queue=1.0, custom=7.0, now=1.0)
    s.telemetry("s2", cpu=30.0, now=1.0)
    ids = {}
    ids["launching"] = s.launch("u1", "a", endpoint="e1", now=2.0).session
    d = s.launch("u2", "a", endpoint="e2", now=3.0)
    s.logon_complete(d.session, now=4.0)
    assert s.launch("u2", "b", endpoint="e2", now=4.5).outcome == Outcome.SHARED
    ids["active"] = d.session
    d = s.launch("u3", "a", endpoint="e3", now=5.0)
    s.logon_complete(d.session, now=6.0)
    s.disconnect(d.session, now=7.0)
    ids["disconnected"] = d.session
    d = s.launch("u4", "c", now=8.0)
    s.logoff(d.session, now=9.0)
    ids["ended"] = d.session
    s.launch("u5", "c", now=T0)
    ids["unknown"] = max(ids.values()) + 987654
    return s, ids


def snapshot(s):
    return (
        s.servers().tolist(),
        s.sessions().tolist(),
        s.licences_in_use,
        s.licence_cap,
        s.now,
    )


def check_error(s, call, exc, field, value):
    before = snapshot(s)
    with pytest.raises(exc) as info:
        call()
    err = info.value
    assert isinstance(err, usher.UsherError)
    assert field_ok(err.field, field), (err.field, field)
    assert value_ok(err.value, value), (err.value, value)
    after = snapshot(s)
    assert after == before
    return err


# ------------------------------------------------------------ the cases
# (id, call(s, ids), exception, field, value)
CASES = [
    # add_pool
    ("pool-dup", lambda s, i: s.add_pool("p"), usher.DuplicateName, "name", "p"),
    ("pool-lb", lambda s, i: s.add_pool("n", load_balancing="round_robin"), usher.InvalidArgument,
     "load_balancing", "round_robin"),
    ("pool-zpref", lambda s, i: s.add_pool("n", zone_preference=("user_home", "moon")), usher.InvalidArgument,
     "zone_preference", Any("moon", ("user_home", "moon"))),
    ("pool-reconnection", lambda s, i: s.add_pool("n", session_reconnection="never"), usher.InvalidArgument,
     "session_reconnection", "never"),
    ("pool-tolerance-neg", lambda s, i: s.add_pool("n", logon_tolerance=-1), usher.InvalidArgument,
     "logon_tolerance", -1),
    ("pool-max-per-user-neg", lambda s, i: s.add_pool("n", max_sessions_per_user=-1), usher.InvalidArgument,
     "max_sessions_per_user", -1),
    ("pool-rules-empty", lambda s, i: s.add_pool("n", load_rules=()), usher.InvalidArgument,
     "load_rules", Whatever()),
    ("pool-rules-bad", lambda s, i: s.add_pool("n", load_rules=("sessions", "gpu")), usher.InvalidArgument,
     "load_rules", Any("gpu", ("sessions", "gpu"))),
    ("pool-cpu-full-nan", lambda s, i: s.add_pool("n", cpu_full=NAN), usher.InvalidArgument, "cpu_full", NAN),
    ("pool-mem-full-nan", lambda s, i: s.add_pool("n", memory_full=NAN), usher.InvalidArgument,
     "memory_full", NAN),
    ("pool-dq-full-neg", lambda s, i: s.add_pool("n", disk_queue_full=-8.0), usher.InvalidArgument,
     "disk_queue_full", -8.0),
    # add_app
    ("app-dup", lambda s, i: s.add_app("a", ["p"]), usher.DuplicateName, "name", "a"),
    ("app-no-pools", lambda s, i: s.add_app("n", []), usher.InvalidArgument, "pools", Whatever()),
    ("app-unknown-pool", lambda s, i: s.add_app("n", ["p", "nope"]), usher.UnknownPool, "pools",
     Any("nope", ["p", "nope"])),
    ("app-max-total-neg", lambda s, i: s.add_app("n", ["p"], max_instances_total=-1), usher.InvalidArgument,
     "max_instances_total", -1),
    ("app-max-user-neg", lambda s, i: s.add_app("n", ["p"], max_instances_per_user=-2), usher.InvalidArgument,
     "max_instances_per_user", -2),
    # add_user
    ("user-dup", lambda s, i: s.add_user("u1"), usher.DuplicateName, "id", "u1"),
    ("user-dup-implicit", lambda s, i: s.add_user("u2"), usher.DuplicateName, "id", "u2"),
    # add_server
    ("server-dup", lambda s, i: s.add_server("s0", "z1", "p", now=T0), usher.DuplicateName, "name", "s0"),
    ("server-unknown-pool", lambda s, i: s.add_server("n", "z1", "nope", now=T0), usher.UnknownPool,
     "pool", "nope"),
    ("server-weight-0", lambda s, i: s.add_server("n", "z1", "p", weight=0, now=T0), usher.InvalidArgument,
     "weight", 0),
    ("server-weight-10001", lambda s, i: s.add_server("n", "z1", "p", weight=10001, now=T0),
     usher.InvalidArgument, "weight", 10001),
    ("server-weight-neg", lambda s, i: s.add_server("n", "z1", "p", weight=-100, now=T0),
     usher.InvalidArgument, "weight", -100),
    ("server-max-sessions-0", lambda s, i: s.add_server("n", "z1", "p", max_sessions=0, now=T0),
     usher.InvalidArgument, "max_sessions", 0),
    ("server-max-sessions-neg", lambda s, i: s.add_server("n", "z1", "p", max_sessions=-3, now=T0),
     usher.InvalidArgument, "max_sessions", -3),
    ("server-power", lambda s, i: s.add_server("n", "z1", "p", power="sideways", now=T0),
     usher.InvalidArgument, "power", "sideways"),
    ("server-mode", lambda s, i: s.add_server("n", "z1", "p", mode="bogus", now=T0),
     usher.InvalidArgument, "mode", "bogus"),
    ("server-time", lambda s, i: s.add_server("n", "z1", "p", now=T0 - 1), usher.TimeWentBackwards,
     "now", T0 - 1),
    # launch
    ("launch-unknown-app", lambda s, i: s.launch("u1", "nope", now=T0), usher.UnknownApp, "app", "nope"),
    ("launch-app-unhashable", lambda s, i: s.launch("u1", ["a"], now=T0), usher.InvalidArgument, "app", ["a"]),
    ("launch-user-unhashable", lambda s, i: s.launch(["u1"], "a", now=T0), usher.InvalidArgument, "user", ["u1"]),
    ("launch-location-unhashable", lambda s, i: s.launch("zz", "a", location={"z": 1}, now=T0),
     usher.InvalidArgument, "location", {"z": 1}),
    ("launch-endpoint-unhashable-new-user", lambda s, i: s.launch("zz", "a", endpoint=["pc"], now=T0),
     usher.InvalidArgument, "endpoint", ["pc"]),
    ("launch-many-user-unhashable", lambda s, i: s.launch_many(["zz", ["x"]], ["a", "a"], now=T0),
     usher.InvalidArgument, "users[1]", ["x"]),
    ("launch-many-endpoint-unhashable", lambda s, i: s.launch_many(["zz", "zy"], ["a", "a"], endpoints=["pc", ["x"]],
                                                                   now=T0), usher.InvalidArgument, "endpoints[1]", ["x"]),
    ("launch-many-location-unhashable", lambda s, i: s.launch_many(["zz", "zy"], ["a", "a"], locations=[None, ["z"]],
                                                                   now=T0), usher.InvalidArgument, "locations[1]", ["z"]),
    ("launch-unknown-app-new-user", lambda s, i: s.launch("zz", "nope", now=T0), usher.UnknownApp,
     "app", "nope"),
    ("launch-time", lambda s, i: s.launch("u1", "a", now=T0 - 0.5), usher.TimeWentBackwards, "now", T0 - 0.5),
    ("launch-time-new-user", lambda s, i: s.launch("zz", "a", now=1.0), usher.TimeWentBackwards, "now", 1.0),
    ("launch-now-nan", lambda s, i: s.launch("u1", "a", now=NAN), usher.InvalidArgument, "now", NAN),
    # launch_many
    ("many-unknown-app", lambda s, i: s.launch_many(["x1", "x2", "x3"], ["a", "nope", "a"], now=T0),
     usher.UnknownApp, "apps", Any("nope", ["a", "nope", "a"])),
    ("many-app-unhashable", lambda s, i: s.launch_many(["x1", "x2"], ["a", ["a"]], now=T0),
     usher.InvalidArgument, "apps[1]", ["a"]),
    ("many-app-none", lambda s, i: s.launch_many(["x1", "x2"], ["a", None], now=T0),
     usher.UnknownApp, "apps[1]", None),
    ("many-time", lambda s, i: s.launch_many(["x1", "x2"], ["a", "a"], now=T0 - 1), usher.TimeWentBackwards,
     "now", Whatever()),
    ("many-lengths", lambda s, i: s.launch_many(["x1", "x2"], ["a"], now=T0), usher.InvalidArgument,
     "apps", Whatever()),
    ("many-locations-length", lambda s, i: s.launch_many(["x1", "x2"], ["a", "a"], locations=["z1"], now=T0),
     usher.InvalidArgument, "locations", Whatever()),
    # session operations
    ("logon-unknown", lambda s, i: s.logon_complete(i["unknown"], now=T0), usher.UnknownSession,
     "session", "@unknown"),
    ("logon-active", lambda s, i: s.logon_complete(i["active"], now=T0), usher.InvalidState,
     "session", "@active"),
    ("logon-disconnected", lambda s, i: s.logon_complete(i["disconnected"], now=T0), usher.InvalidState,
     "session", "@disconnected"),
    ("logon-ended", lambda s, i: s.logon_complete(i["ended"], now=T0), usher.SessionEnded,
     "session", "@ended"),
    ("logon-time", lambda s, i: s.logon_complete(i["launching"], now=T0 - 1), usher.TimeWentBackwards,
     "now", T0 - 1),
    ("disconnect-disconnected", lambda s, i: s.disconnect(i["disconnected"], now=T0), usher.InvalidState,
     "session", "@disconnected"),
    ("disconnect-unknown", lambda s, i: s.disconnect(i["unknown"], now=T0), usher.UnknownSession,
     "session", "@unknown"),
    ("disconnect-ended", lambda s, i: s.disconnect(i["ended"], now=T0), usher.SessionEnded,
     "session", "@ended"),
    ("logoff-unknown", lambda s, i: s.logoff(i["unknown"], now=T0), usher.UnknownSession, "session", "@unknown"),
    ("logoff-ended", lambda s, i: s.logoff(i["ended"], now=T0), usher.SessionEnded, "session", "@ended"),
    ("logoff-time", lambda s, i: s.logoff(i["active"], now=T0 - 3), usher.TimeWentBackwards, "now", T0 - 3),
    ("close-app-not-in", lambda s, i: s.close_app(i["launching"], "b", now=T0), usher.InvalidArgument,
     "app", "b"),
    ("close-app-unknown-session", lambda s, i: s.close_app(i["unknown"], "a", now=T0), usher.UnknownSession,
     "session", "@unknown"),
    ("close-app-ended", lambda s, i: s.close_app(i["ended"], "c", now=T0), usher.SessionEnded,
     "session", "@ended"),
    ("close-app-time", lambda s, i: s.close_app(i["active"], "b", now=T0 - 1), usher.TimeWentBackwards,
     "now", T0 - 1),
    ("failed-active", lambda s, i: s.launch_failed(i["active"], now=T0), usher.InvalidState,
     "session", "@active"),
    ("failed-disconnected", lambda s, i: s.launch_failed(i["disconnected"], now=T0), usher.InvalidState,
     "session", "@disconnected"),
    ("failed-unknown", lambda s, i: s.launch_failed(i["unknown"], now=T0), usher.UnknownSession,
     "session", "@unknown"),
    ("failed-ended", lambda s, i: s.launch_failed(i["ended"], now=T0), usher.SessionEnded, "session", "@ended"),
    ("failed-time", lambda s, i: s.launch_failed(i["launching"], now=T0 - 1), usher.TimeWentBackwards,
     "now", T0 - 1),
    # telemetry
    ("tel-unknown-server", lambda s, i: s.telemetry("nope", cpu=1.0, now=T0), usher.UnknownServer,
     "server", "nope"),
    ("tel-cpu-nan", lambda s, i: s.telemetry("s0", cpu=NAN, now=T0), usher.InvalidArgument, "cpu", NAN),
    ("tel-cpu-neg", lambda s, i: s.telemetry("s0", cpu=-1.0, now=T0), usher.InvalidArgument, "cpu", -1.0),
    ("tel-cpu-high", lambda s, i: s.telemetry("s0", cpu=100.1, now=T0), usher.InvalidArgument, "cpu", 100.1),
    ("tel-cpu-inf", lambda s, i: s.telemetry("s0", cpu=INF, now=T0), usher.InvalidArgument, "cpu", INF),
    ("tel-mem-nan", lambda s, i: s.telemetry("s0", mem=NAN, now=T0), usher.InvalidArgument, "mem", NAN),
    ("tel-mem-high", lambda s, i: s.telemetry("s0", mem=101.0, now=T0), usher.InvalidArgument, "mem", 101.0),
    ("tel-mem-neg", lambda s, i: s.telemetry("s0", mem=-0.5, now=T0), usher.InvalidArgument, "mem", -0.5),
    ("tel-dq-neg", lambda s, i: s.telemetry("s0", disk_queue=-0.1, now=T0), usher.InvalidArgument,
     "disk_queue", -0.1),
    ("tel-dq-inf", lambda s, i: s.telemetry("s0", disk_queue=INF, now=T0), usher.InvalidArgument,
     "disk_queue", INF),
    ("tel-dq-nan", lambda s, i: s.telemetry("s0", disk_queue=NAN, now=T0), usher.InvalidArgument,
     "disk_queue", NAN),
    ("tel-custom-high", lambda s, i: s.telemetry("s0", custom=10000.5, now=T0), usher.InvalidArgument,
     "custom", 10000.5),
    ("tel-custom-neg", lambda s, i: s.telemetry("s0", custom=-1.0, now=T0), usher.InvalidArgument,
     "custom", -1.0),
    ("tel-custom-nan", lambda s, i: s.telemetry("s0", custom=NAN, now=T0), usher.InvalidArgument,
     "custom", NAN),
    ("tel-good-and-bad", lambda s, i: s.telemetry("s0", cpu=80.0, mem=NAN, now=T0), usher.InvalidArgument,
     "mem", NAN),
    ("tel-good-and-bad-last", lambda s, i: s.telemetry("s2", cpu=80.0, mem=50.0, disk_queue=2.0,
                                                       custom=-5.0, now=T0),
     usher.InvalidArgument, "custom", -5.0),
    ("tel-time", lambda s, i: s.telemetry("s0", cpu=5.0, now=T0 - 1), usher.TimeWentBackwards, "now", T0 - 1),
    # telemetry_many
    ("telmany-nan-row", lambda s, i: s.telemetry_many(["s0", "s1", "s2"], cpu=[10.0, 20.0, NAN], now=T0),
     usher.InvalidArgument, "cpu", Any(NAN, Whatever())),
    ("telmany-neg-row", lambda s, i: s.telemetry_many(["s0", "s1"], cpu=[10.0, 20.0], mem=[5.0, -1.0], now=T0),
     usher.InvalidArgument, "mem", Whatever()),
    ("telmany-high-custom", lambda s, i: s.telemetry_many(["s2", "s0"], custom=[20000.0, 1.0], now=T0),
     usher.InvalidArgument, "custom", Whatever()),
    ("telmany-unknown-server", lambda s, i: s.telemetry_many(["s0", "nope"], cpu=[1.0, 2.0], now=T0),
     usher.UnknownServer, "servers", Any("nope", ["s0", "nope"])),
    ("telmany-length", lambda s, i: s.telemetry_many(["s0", "s1"], cpu=[1.0, 2.0, 3.0], now=T0),
     usher.InvalidArgument, "cpu", Whatever()),
    ("telmany-time", lambda s, i: s.telemetry_many(["s0", "s1"], cpu=[1.0, 2.0], now=T0 - 1),
     usher.TimeWentBackwards, "now", T0 - 1),
    # server operations
    ("power-unknown", lambda s, i: s.set_power("nope", "off", now=T0), usher.UnknownServer, "server", "nope"),
    ("power-bad", lambda s, i: s.set_power("s0", "sideways", now=T0), usher.InvalidArgument, "state", "sideways"),
    ("power-time", lambda s, i: s.set_power("s0", "off", now=T0 - 1), usher.TimeWentBackwards, "now", T0 - 1),
    ("registered-unknown", lambda s, i: s.set_registered("nope", False, now=T0), usher.UnknownServer,
     "server", "nope"),
    ("registered-time", lambda s, i: s.set_registered("s0", False, now=T0 - 1), usher.TimeWentBackwards,
     "now", T0 - 1),
    ("mode-unknown", lambda s, i: s.set_mode("nope", "drain", now=T0), usher.UnknownServer, "server", "nope"),
    ("mode-bad", lambda s, i: s.set_mode("s0", "holiday", now=T0), usher.InvalidArgument, "mode", "holiday"),
    ("mode-time", lambda s, i: s.set_mode("s0", "drain", now=T0 - 1), usher.TimeWentBackwards, "now", T0 - 1),
    ("remove-unknown", lambda s, i: s.remove_server("nope", now=T0), usher.UnknownServer, "server", "nope"),
    ("remove-busy", lambda s, i: s.remove_server("s0", now=T0), usher.ServerBusy, "server", "s0"),
    ("remove-time", lambda s, i: s.remove_server("s0", force=True, now=T0 - 1), usher.TimeWentBackwards,
     "now", T0 - 1),
    # settings and licences
    ("licences-neg", lambda s, i: s.set_licences(-1), usher.InvalidArgument, "cap", -1),
    ("sinbin-neg", lambda s, i: s.settings(sinbin_seconds=-1.0), usher.InvalidArgument, "sinbin_seconds", -1.0),
    ("sinbin-nan", lambda s, i: s.settings(sinbin_seconds=NAN), usher.InvalidArgument, "sinbin_seconds", NAN),
    ("pending-neg", lambda s, i: s.settings(pending_timeout=-5.0), usher.InvalidArgument,
     "pending_timeout", -5.0),
    ("pending-nan", lambda s, i: s.settings(pending_timeout=NAN), usher.InvalidArgument,
     "pending_timeout", NAN),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(backend, case):
    _, call, exc, field, value = case
    s, ids = populated(backend)
    if isinstance(value, str) and value.startswith("@"):
        value = ids[value[1:]]
    check_error(s, lambda: call(s, ids), exc, field, value)
    # the scheduler still works at the current time after the error
    d = s.launch("after", "a", now=T0)
    assert d.outcome == Outcome.PLACED


@pytest.mark.parametrize("value", [True, "0", 1.0, None, -1, 5, 10**30], ids=repr)
def test_launch_by_index_refuses_what_is_not_a_user_index(value):
    """``launch_by_index`` (engine only: the reference model names users by id) takes
    the index of an existing user and nothing else; a bad one changes nothing."""
    s, _ = populated(usher.Scheduler)  # five users: u1, u2, u3 are indices 0, 1, 2
    check_error(s, lambda: s.launch_by_index(value, "a", now=T0), usher.InvalidArgument, "user_index", value)
    check_error(s, lambda: s.launch_by_index(0, "nope", now=T0), usher.UnknownApp, "app", "nope")
    check_error(s, lambda: s.launch_by_index(0, "a", now=T0 - 1), usher.TimeWentBackwards, "now", T0 - 1)
    assert s.launch_by_index(np.int64(2), "a", now=T0).outcome == Outcome.RECONNECTED  # u3's session


def test_error_hierarchy():
    assert issubclass(usher.TimeWentBackwards, usher.InvalidArgument)
    assert issubclass(usher.SessionEnded, usher.InvalidState)
    assert issubclass(usher.ServerBusy, usher.InvalidState)
    for cls in (usher.UnknownServer, usher.UnknownPool, usher.UnknownApp, usher.UnknownUser,
                usher.UnknownSession):
        assert issubclass(cls, usher.UnknownName) and issubclass(cls, usher.UsherError)
    for cls in (usher.InvalidArgument, usher.DuplicateName, usher.InvalidState):
        assert issubclass(cls, usher.UsherError)


# ------------------------------------------------------------ nothing half-added
def test_failed_add_pool_adds_nothing(backend):
    s = backend()
    with pytest.raises(usher.InvalidArgument):
        s.add_pool("p", load_rules=("sessions", "bogus"))
    s.add_pool("p")  # no DuplicateName: nothing was added
    with pytest.raises(usher.UnknownPool):
        s.add_app("a", ["p", "ghost"])
    s.add_app("a", ["p"])
    with pytest.raises(usher.InvalidArgument):
        s.add_server("s0", "z1", "p", weight=0, now=0.0)
    with pytest.raises(usher.InvalidArgument):
        s.add_server("s0", "z1", "p", mode="bogus", now=0.0)
    assert len(s.servers()) == 0
    s.add_server("s0", "z1", "p", now=0.0)
    assert list(s.servers()["name"]) == ["s0"]
    assert s.launch("u", "a", now=1.0).server == "s0"


def test_failed_add_server_consumes_no_index(backend):
    # indices follow successful adds only. With seed 3 the initial tiebreaks
    # order the indices 2 < 0 < 1: if the failed add had used index 1, "second"
    # (index 2) would be taken first; with index 1 "first" (index 0) is.
    s = backend(seed=3)
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_server("first", "z1", "p", now=0.0)
    with pytest.raises(usher.InvalidArgument):
        s.add_server("second", "z1", "p", max_sessions=0, now=0.0)
    s.add_server("second", "z1", "p", now=0.0)
    assert s.launch("u", "a", now=1.0).server == "first"
    assert list(s.servers()["name"]) == ["first", "second"]


def test_failed_launch_creates_no_user(backend):
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_server("s0", "z1", "p", now=5.0)
    with pytest.raises(usher.UnknownApp):
        s.launch("newbie", "nope", now=6.0)
    with pytest.raises(usher.TimeWentBackwards):
        s.launch("newbie2", "a", now=1.0)
    # neither user exists: adding them is no duplicate
    s.add_user("newbie")
    s.add_user("newbie2")


def test_unhashable_ids_add_no_user(backend):
    """A launch or batch refused for an id that cannot be a key adds none of its users."""
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_server("s0", "z1", "p", now=5.0)
    with pytest.raises(usher.InvalidArgument):
        s.launch("walk-in", "a", endpoint=["pc"], now=6.0)
    with pytest.raises(usher.InvalidArgument):
        s.launch_many(["w1", "w2", ["w3"]], ["a", "a", "a"], now=6.0)
    with pytest.raises(usher.InvalidArgument):
        s.launch_many(["w4", "w5"], ["a", "a"], endpoints=["pc", ["pc"]], now=6.0)
    for u in ("walk-in", "w1", "w2", "w4", "w5"):  # none exists: adding it is no duplicate
        s.add_user(u)
    assert len(s.sessions()) == 0


def test_telemetry_many_bad_row_applies_nothing(backend):
    s, _ = populated(backend)
    before = {r["name"]: (r["cpu"], r["mem"], r["load_index"]) for r in s.servers()}
    with pytest.raises(usher.InvalidArgument):
        s.telemetry_many(["s0", "s1", "s2"], cpu=[50.0, 60.0, 70.0], mem=[1.0, 2.0, 300.0], now=T0)
    after = {r["name"]: (r["cpu"], r["mem"], r["load_index"]) for r in s.servers()}
    assert after == before
    assert s.server("s2")["cpu"] == 30.0
    # a good batch applies every row
    s.telemetry_many(["s0", "s1", "s2"], cpu=[50.0, 60.0, 45.0], now=T0 + 1)
    assert [s.server(n)["cpu"] for n in ("s0", "s1", "s2")] == [50.0, 60.0, 45.0]
    assert s.server("s0")["mem"] == 40.0  # None leaves it unchanged
    # s2's pool has the cpu rule: cpu 45 -> 5000; sessions 1/250 -> 40; 5000 + floor(40/20) = 5002
    assert int(s.server("s2")["load_index"]) == 5002


def test_launch_many_bad_row_applies_nothing(backend):
    s, _ = populated(backend)
    before = snapshot(s)
    with pytest.raises(usher.UnknownApp):
        s.launch_many(["n1", "n2", "n3"], ["a", "a", "ghost"], now=T0 + 1)
    assert snapshot(s) == before
    # the users of the failed batch were not created
    s.add_user("n1")
    b = s.launch_many(["n1", "n2"], ["a", "a"], now=T0 + 1)
    assert len(b) == 2 and all(d.outcome == Outcome.PLACED for d in b)


def test_time_error_leaves_clock(backend):
    s, _ = populated(backend)
    with pytest.raises(usher.TimeWentBackwards) as e:
        s.set_mode("s0", "drain", now=3.0)
    assert e.value.field == "now"
    assert s.now == T0
    # a later error at a future time does not move the clock either
    with pytest.raises(usher.UnknownServer):
        s.set_mode("nope", "drain", now=T0 + 100)
    with pytest.raises(usher.UnknownApp):
        s.launch("u1", "nope", now=T0 + 100)
    assert s.now == T0
    s.set_mode("s0", "drain", now=T0 + 1)
    assert s.now == T0 + 1
    with pytest.raises(usher.TimeWentBackwards):
        s.set_mode("s0", "enabled", now=T0)


ENUM_POOL_ARGS = [
    ("load_balancing", usher.LoadBalancing.VERTICAL),
    ("zone_preference", (usher.ZonePreference.USER_LOCATION, "user_home")),
    ("session_reconnection", usher.Reconnection.SAME_ENDPOINT),
    ("load_rules", (usher.LoadRule.SESSIONS, "cpu")),
]


@pytest.mark.parametrize("arg", ENUM_POOL_ARGS, ids=[a[0] for a in ENUM_POOL_ARGS])
def test_enum_members_accepted_by_add_pool(backend, arg):
    s = backend()
    s.add_pool("p", **{arg[0]: arg[1]})
    s.add_app("a", ["p"])
    s.add_server("s0", "z1", "p", now=0.0)
    assert s.launch("u", "a", now=1.0).server == "s0"


def test_enum_members_accepted_by_server_calls(backend):
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_server("s0", "z1", "p", power=usher.Power.ON, mode=usher.Mode.ENABLED, now=0.0)
    s.set_mode("s0", usher.Mode.DRAIN, now=1.0)
    assert str(s.server("s0")["mode"]) == "drain"
    s.set_mode("s0", "enabled", now=2.0)
    s.set_power("s0", usher.Power.BOOTING, now=3.0)
    assert str(s.server("s0")["power"]) == "booting"
