"""Session rules of docs/SEMANTICS.md: reconnection, sharing, reuse conditions,
state transitions and their errors, licences, and server operations that end
or keep sessions. Run against every backend via the ``backend`` fixture.
"""

from __future__ import annotations

import pytest

import usher
from usher import Outcome, Reason


def make(backend, n=2, pool_kw=None, app_kw=None, server_kw=None, **settings):
    """Pool ``p``; apps ``a`` and ``b`` on it; servers s0..s{n-1} in zone z1."""
    s = backend(**settings)
    s.add_pool("p", **(pool_kw or {}))
    s.add_app("a", ["p"], **(app_kw or {}))
    s.add_app("b", ["p"])
    for i in range(n):
        s.add_server(f"s{i}", "z1", "p", now=0.0, **(server_kw or {}))
    return s


def state(s, sid) -> str:
    return str(s.session(sid)["state"])


def apps(s, sid) -> set:
    return set(s.session(sid)["apps"])


def sessions_on(s, name) -> int:
    return int(s.server(name)["sessions"])


def live_ids(s) -> set:
    return {int(i) for i in s.sessions()["id"]}


def other(name):
    return "s1" if name == "s0" else "s0"


def active_session(s, user="u", app="a", endpoint="e1", t=1.0):
    d = s.launch(user, app, endpoint=endpoint, now=t)
    assert d.outcome == Outcome.PLACED, d.reason
    s.logon_complete(d.session, now=t + 0.1)
    return d


def disconnected_session(s, user="u", app="a", endpoint="e1", t=1.0):
    d = active_session(s, user, app, endpoint, t)
    s.disconnect(d.session, now=t + 0.2)
    return d


# ------------------------------------------------------------ reconnection modes
@pytest.mark.parametrize("mode", ["always", "disconnected_only", "same_endpoint"])
def test_reconnect_disconnected_same_endpoint_all_modes(backend, mode):
    s = make(backend, pool_kw=dict(session_reconnection=mode))
    d = disconnected_session(s)
    r = s.launch("u", "a", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.reason is None
    assert r.session == d.session and r.server == d.server and r.zone == "z1"
    ses = s.session(d.session)
    assert str(ses["state"]) == "active"
    assert ses["endpoint"] == "e1"
    assert ses["t_state"] == 5.0 and ses["t_launch"] == 1.0
    assert len(s.sessions()) == 1 and s.licences_in_use == 1


@pytest.mark.parametrize("mode,reconnects", [("always", True), ("disconnected_only", True), ("same_endpoint", False)])
def test_reconnect_disconnected_other_endpoint(backend, mode, reconnects):
    s = make(backend, pool_kw=dict(session_reconnection=mode))
    d = disconnected_session(s, endpoint="e1")
    r = s.launch("u", "a", endpoint="e2", now=5.0)
    if reconnects:
        assert r.outcome == Outcome.RECONNECTED and r.session == d.session
        assert s.session(d.session)["endpoint"] == "e2"
        assert state(s, d.session) == "active"
    else:
        # not reconnected, not shared (disconnected): a new session
        assert r.outcome == Outcome.PLACED and r.session != d.session
        assert state(s, d.session) == "disconnected"
        assert s.session(d.session)["endpoint"] == "e1"
        assert len(s.sessions()) == 2


def test_same_endpoint_none_equals_none(backend):
    s = make(backend, pool_kw=dict(session_reconnection="same_endpoint"))
    d = disconnected_session(s, endpoint=None)
    r = s.launch("u", "a", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session
    assert s.session(d.session)["endpoint"] is None


def test_same_endpoint_none_differs_from_named(backend):
    s = make(backend, pool_kw=dict(session_reconnection="same_endpoint"))
    d = disconnected_session(s, endpoint=None)
    r = s.launch("u", "a", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.PLACED and r.session != d.session


def test_always_roams_active_session_from_other_endpoint(backend):
    s = make(backend, pool_kw=dict(session_reconnection="always"))
    d = active_session(s, endpoint="e1")
    r = s.launch("u", "b", endpoint="e2", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session
    ses = s.session(d.session)
    assert ses["endpoint"] == "e2" and str(ses["state"]) == "active" and ses["t_state"] == 5.0
    assert set(ses["apps"]) == {"a", "b"}  # the app joins
    assert sessions_on(s, d.server) == 1


def test_always_same_endpoint_active_is_shared(backend):
    s = make(backend, pool_kw=dict(session_reconnection="always"))
    d = active_session(s, endpoint="e1")
    r = s.launch("u", "b", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.SHARED and r.session == d.session
    assert s.session(d.session)["t_state"] == pytest.approx(1.1)


@pytest.mark.parametrize("mode", ["disconnected_only", "same_endpoint"])
def test_active_session_does_not_roam_outside_always(backend, mode):
    s = make(backend, pool_kw=dict(session_reconnection=mode))
    d = active_session(s, endpoint="e1")
    r = s.launch("u", "b", endpoint="e2", now=5.0)
    # not roamed: step 3 shares the active session; the endpoint stays
    assert r.outcome == Outcome.SHARED and r.session == d.session
    ses = s.session(d.session)
    assert ses["endpoint"] == "e1" and ses["t_state"] == pytest.approx(1.1)
    assert set(ses["apps"]) == {"a", "b"}


def test_reconnect_reports_server_zone_and_load_index(backend):
    s = backend()
    s.add_pool("p", load_rules=("sessions", "cpu"))
    s.add_app("a", ["p"])
    s.add_server("s0", "zq", "p", max_sessions=4, now=0.0)
    d = disconnected_session(s)
    s.telemetry("s0", cpu=45.0, now=3.0)
    # sessions floor(10000/4) = 2500, cpu 5000 -> 5000 + floor(2500/20) = 5125
    r = s.launch("u", "a", endpoint="e1", now=4.0)
    assert r.outcome == Outcome.RECONNECTED
    assert (r.server, r.zone, r.session, r.load_index) == ("s0", "zq", d.session, 5125)


def test_reconnect_ignores_limits(backend):
    # steps 4 and 5 come after reconnect: cap 0, instance and session limits reached
    s = make(backend, n=1, licences=1, pool_kw=dict(max_sessions_per_user=1),
             app_kw=dict(max_instances_per_user=1, max_instances_total=1))
    d = disconnected_session(s)
    s.set_licences(0)
    r = s.launch("u", "a", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session


def test_external_denied_before_reconnect(backend):
    s = make(backend)
    d = disconnected_session(s)
    r = s.launch("u", "a", endpoint="e1", external=True, now=5.0)
    assert r.outcome == Outcome.REJECTED and r.reason == Reason.EXTERNAL_DENIED
    assert state(s, d.session) == "disconnected"


def test_reconnect_joins_new_app(backend):
    s = make(backend)
    d = disconnected_session(s)
    r = s.launch("u", "b", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session
    assert apps(s, d.session) == {"a", "b"}


def test_reconnect_prefers_disconnected_over_roaming(backend):
    # (a) before (b): the newer disconnected session wins over the older active one
    s = backend()
    s.add_pool("p")
    s.add_pool("q")
    s.add_app("a", ["p"])
    s.add_app("b", ["q"])
    s.add_app("c", ["p", "q"])
    s.add_server("x", "z1", "p", now=0.0)
    s.add_server("y", "z1", "q", now=0.0)
    older = active_session(s, app="a", endpoint="e1", t=1.0)
    newer = disconnected_session(s, app="b", endpoint="e1", t=2.0)
    r = s.launch("u", "c", endpoint="e9", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == newer.session and r.server == "y"
    assert s.session(older.session)["endpoint"] == "e1"


def test_reconnect_oldest_session_first(backend):
    # two disconnected sessions: the oldest wins, not the first pool of the app
    s = backend()
    s.add_pool("p")
    s.add_pool("q")
    s.add_app("a", ["p"])
    s.add_app("b", ["q"])
    s.add_app("c", ["q", "p"])
    s.add_server("x", "z1", "p", now=0.0)
    s.add_server("y", "z1", "q", now=0.0)
    first = disconnected_session(s, app="a", t=1.0)
    second = disconnected_session(s, app="b", t=2.0)
    r = s.launch("u", "c", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == first.session and r.server == "x"
    assert state(s, second.session) == "disconnected"


def test_reconnect_only_in_allowed_pools(backend):
    # the session's pool must be one of the app's (allowed) pools
    s = backend()
    s.add_pool("p")
    s.add_pool("q")
    s.add_app("a", ["p"])
    s.add_app("b", ["q"])
    s.add_server("x", "z1", "p", now=0.0)
    s.add_server("y", "z1", "q", now=0.0)
    d = disconnected_session(s, app="a")
    r = s.launch("u", "b", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.PLACED and r.server == "y"
    assert state(s, d.session) == "disconnected"


def test_reconnect_external_needs_external_pool(backend):
    s = backend()
    s.add_pool("p")
    s.add_pool("x", external_access=True)
    s.add_app("a", ["p", "x"])
    s.add_server("in0", "z1", "p", now=0.0)
    s.add_server("ex0", "z1", "x", now=0.0)
    d = disconnected_session(s, app="a")
    assert d.server == "in0"
    r = s.launch("u", "a", endpoint="e1", external=True, now=5.0)
    assert r.outcome == Outcome.PLACED and r.server == "ex0"


# ------------------------------------------------------------ sharing
def test_share_launching_session(backend):
    s = make(backend, licences=5)
    d = s.launch("u", "a", endpoint="e1", now=1.0)
    li_before = int(s.server(d.server)["load_index"])
    r = s.launch("u", "b", endpoint="e2", now=2.0)
    assert r.outcome == Outcome.SHARED and r.reason is None
    assert r.session == d.session and r.server == d.server and r.zone == "z1"
    assert r.load_index == li_before == 40
    ses = s.session(d.session)
    assert str(ses["state"]) == "launching"  # nothing else changes
    assert ses["endpoint"] == "e1" and ses["t_state"] == 1.0
    assert set(ses["apps"]) == {"a", "b"}
    assert sessions_on(s, d.server) == 1 and sessions_on(s, other(d.server)) == 0
    assert s.licences_in_use == 1
    assert len(s.sessions()) == 1


def test_share_same_app_again(backend):
    s = make(backend, app_kw=dict(max_instances_total=1, max_instances_per_user=1))
    d = active_session(s)
    r = s.launch("u", "a", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.SHARED and r.session == d.session
    assert apps(s, d.session) == {"a"}


def test_share_counts_instances(backend):
    # b joins u1's session: b's instance count grows, so u2 meets the app limit
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_app("b", ["p"], max_instances_total=1)
    s.add_server("s0", "z1", "p", now=0.0)
    d = active_session(s, user="u1", app="a")
    r = s.launch("u1", "b", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.SHARED
    r2 = s.launch("u2", "b", now=6.0)
    assert r2.outcome == Outcome.REJECTED and r2.reason == Reason.APP_LIMIT
    assert s.close_app(d.session, "b", now=7.0) is False
    r3 = s.launch("u2", "b", now=8.0)
    assert r3.outcome == Outcome.PLACED


def test_share_refused_when_instance_limit_reached(backend):
    # the session is not reusable for b while b is at its limit
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_app("b", ["p"], max_instances_total=1)
    s.add_server("s0", "z1", "p", now=0.0)
    s.launch("u2", "b", now=0.5)
    d = active_session(s, user="u1", app="a")
    r = s.launch("u1", "b", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.REJECTED and r.reason == Reason.APP_LIMIT
    assert apps(s, d.session) == {"a"}


def test_share_in_disconnected_only_mode_with_launching(backend):
    s = make(backend, pool_kw=dict(session_reconnection="disconnected_only"))
    d = s.launch("u", "a", endpoint="e1", now=1.0)
    r = s.launch("u", "b", endpoint="e2", now=2.0)
    assert r.outcome == Outcome.SHARED and r.session == d.session


# ------------------------------------------------------------ reuse conditions
@pytest.mark.parametrize("op,value", [("set_registered", False), ("set_power", "shutting_down"), ("set_power", "booting")])
def test_reuse_needs_server_on_and_registered(backend, op, value):
    s = make(backend)
    d = disconnected_session(s)
    getattr(s, op)(d.server, value, now=3.0)
    r = s.launch("u", "a", endpoint="e1", now=4.0)
    assert r.outcome == Outcome.PLACED and r.server == other(d.server)
    assert state(s, d.session) == "disconnected"
    # back to normal: the old session is reusable again (oldest first)
    getattr(s, op)(d.server, True if op == "set_registered" else "on", now=5.0)
    s.disconnect(r.session, now=5.5)
    r2 = s.launch("u", "a", endpoint="e1", now=6.0)
    assert r2.outcome == Outcome.RECONNECTED and r2.session == d.session


def test_reuse_needs_server_on_for_share(backend):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    s.set_registered(d.server, False, now=2.0)
    r = s.launch("u", "b", now=3.0)
    assert r.outcome == Outcome.PLACED and r.server == other(d.server)


def test_reuse_in_drain(backend):
    s = make(backend)
    d = disconnected_session(s)
    s.set_mode(d.server, "drain", now=3.0)
    r = s.launch("u", "a", endpoint="e1", now=4.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session
    r2 = s.launch("u", "b", endpoint="e1", now=5.0)
    assert r2.outcome == Outcome.SHARED and r2.session == d.session


@pytest.mark.parametrize("rim", [True, False])
def test_reuse_in_maintenance_only_if_allowed(backend, rim):
    s = make(backend, pool_kw=dict(reconnect_in_maintenance=rim))
    d = disconnected_session(s)
    s.set_mode(d.server, "maintenance", now=3.0)
    r = s.launch("u", "a", endpoint="e1", now=4.0)
    if rim:
        assert r.outcome == Outcome.RECONNECTED and r.session == d.session
    else:
        assert r.outcome == Outcome.PLACED and r.server == other(d.server)
        assert state(s, d.session) == "disconnected"


def test_reuse_needs_tag_match(backend):
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"], tag_restriction="plain")
    s.add_app("g", ["p"], tag_restriction="gpu")
    s.add_server("plain0", "z1", "p", tags=("plain",), now=0.0)
    s.add_server("gpu0", "z1", "p", tags=("gpu",), now=0.0)
    d = active_session(s, app="a")
    assert d.server == "plain0"
    r = s.launch("u", "g", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.PLACED and r.server == "gpu0" and r.session != d.session
    assert apps(s, d.session) == {"a"}


def test_reconnect_even_if_server_full(backend):
    s = make(backend, n=1, server_kw=dict(max_sessions=1))
    d = disconnected_session(s)
    r = s.launch("u", "b", endpoint="e1", now=5.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session


# ------------------------------------------------------------ state transitions
def test_logon_complete_transitions(backend):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    assert state(s, d.session) == "launching"
    s.logon_complete(d.session, now=2.0)
    assert state(s, d.session) == "active"
    assert s.session(d.session)["t_state"] == 2.0
    with pytest.raises(usher.InvalidState):
        s.logon_complete(d.session, now=3.0)
    s.disconnect(d.session, now=4.0)
    with pytest.raises(usher.InvalidState):
        s.logon_complete(d.session, now=5.0)
    assert state(s, d.session) == "disconnected"


def test_disconnect_transitions(backend):
    s = make(backend)
    d1 = s.launch("u1", "a", now=1.0)
    s.disconnect(d1.session, now=2.0)  # launching -> disconnected
    assert state(s, d1.session) == "disconnected"
    with pytest.raises(usher.InvalidState) as e:
        s.disconnect(d1.session, now=3.0)
    assert not isinstance(e.value, usher.SessionEnded)
    d2 = active_session(s, user="u2", t=4.0)
    s.disconnect(d2.session, now=5.0)
    assert state(s, d2.session) == "disconnected"
    assert s.session(d2.session)["t_state"] == 5.0


def test_disconnected_launching_session_no_longer_pending(backend):
    # launching -> disconnected: it is no longer a pending logon
    s = make(backend, n=1, pool_kw=dict(logon_tolerance=1, tolerance_is_hard=True))
    d = s.launch("u1", "a", now=1.0)
    assert s.launch("u2", "a", now=2.0).reason == Reason.LOGON_TOLERANCE
    s.disconnect(d.session, now=3.0)
    assert s.launch("u2", "a", now=4.0).outcome == Outcome.PLACED


@pytest.mark.parametrize("to", ["launching", "active", "disconnected"])
def test_logoff_from_any_live_state(backend, to):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    if to != "launching":
        s.logon_complete(d.session, now=2.0)
    if to == "disconnected":
        s.disconnect(d.session, now=3.0)
    s.logoff(d.session, now=4.0)
    assert sessions_on(s, d.server) == 0
    assert int(s.server(d.server)["load_index"]) == 0
    assert len(s.sessions()) == 0
    with pytest.raises(usher.SessionEnded):
        s.session(d.session)


def test_operations_on_ended_session(backend):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    s.logoff(d.session, now=2.0)
    for op, args in [("logon_complete", ()), ("disconnect", ()), ("logoff", ()),
                     ("close_app", ("a",)), ("launch_failed", ())]:
        with pytest.raises(usher.SessionEnded) as e:
            getattr(s, op)(d.session, *args, now=3.0)
        assert isinstance(e.value, usher.InvalidState)
        assert e.value.field == "session" and e.value.value == d.session


def test_unknown_session(backend):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    bogus = d.session + 12345
    for op, args in [("logon_complete", ()), ("disconnect", ()), ("logoff", ()),
                     ("close_app", ("a",)), ("launch_failed", ())]:
        with pytest.raises(usher.UnknownSession) as e:
            getattr(s, op)(bogus, *args, now=2.0)
        assert e.value.field == "session" and e.value.value == bogus
    with pytest.raises(usher.UnknownSession):
        s.session(bogus)
    assert state(s, d.session) == "launching"


def test_session_ids_not_reused(backend):
    s = make(backend)
    d1 = s.launch("u1", "a", now=1.0)
    s.logoff(d1.session, now=2.0)
    d2 = s.launch("u2", "a", now=3.0)
    assert d2.session != d1.session
    with pytest.raises(usher.SessionEnded):
        s.logoff(d1.session, now=4.0)
    assert state(s, d2.session) == "launching"


def test_close_app(backend):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    s.launch("u", "b", now=2.0)  # shared
    assert apps(s, d.session) == {"a", "b"}
    assert s.close_app(d.session, "b", now=3.0) is False
    assert apps(s, d.session) == {"a"}
    with pytest.raises(usher.InvalidArgument):  # field/value: see test_errors.py
        s.close_app(d.session, "b", now=4.0)
    assert apps(s, d.session) == {"a"}
    assert s.close_app(d.session, "a", now=5.0) is True
    with pytest.raises(usher.SessionEnded):
        s.session(d.session)
    assert sessions_on(s, d.server) == 0
    assert s.licences_in_use == 0


def test_close_app_releases_instance(backend):
    s = backend()
    s.add_pool("p")
    s.add_app("a", ["p"])
    s.add_app("b", ["p"], max_instances_per_user=1, max_instances_total=1)
    s.add_server("s0", "z1", "p", now=0.0)
    d = s.launch("u", "a", now=1.0)
    assert s.launch("u", "b", now=2.0).outcome == Outcome.SHARED
    assert s.launch("v", "b", now=3.0).reason == Reason.APP_LIMIT
    s.close_app(d.session, "b", now=4.0)
    assert s.launch("v", "b", now=5.0).outcome == Outcome.PLACED


def test_launch_failed(backend):
    s = make(backend, sinbin_seconds=60.0)
    d = s.launch("u", "a", now=1.0)
    s.launch_failed(d.session, now=2.0)
    with pytest.raises(usher.SessionEnded):
        s.session(d.session)
    assert sessions_on(s, d.server) == 0
    assert s.licences_in_use == 0
    # the server is sin-binned: the next launch avoids it although both are empty
    d2 = active_session(s, user="v", t=3.0)
    assert d2.server == other(d.server)
    # launch_failed needs a launching session
    with pytest.raises(usher.InvalidState) as e:
        s.launch_failed(d2.session, now=4.0)
    assert not isinstance(e.value, usher.SessionEnded)
    s.disconnect(d2.session, now=5.0)
    with pytest.raises(usher.InvalidState):
        s.launch_failed(d2.session, now=6.0)
    assert state(s, d2.session) == "disconnected"


def test_launch_failed_ends_shared_session_with_all_apps(backend):
    s = make(backend)
    d = s.launch("u", "a", now=1.0)
    s.launch("u", "b", now=2.0)
    s.launch_failed(d.session, now=3.0)
    assert len(s.sessions()) == 0
    assert s.licences_in_use == 0


# ------------------------------------------------------------ licences
def test_licences_released_with_last_session(backend):
    s = backend(licences=2)
    s.add_pool("p")
    s.add_pool("q")
    s.add_app("a", ["p"])
    s.add_app("b", ["q"])
    s.add_server("x", "z1", "p", now=0.0)
    s.add_server("y", "z1", "q", now=0.0)
    d1 = s.launch("u", "a", now=1.0)
    d2 = s.launch("u", "b", now=2.0)
    assert d1.outcome == d2.outcome == Outcome.PLACED and d1.session != d2.session
    assert s.licences_in_use == 1
    s.launch("v", "a", now=3.0)
    assert s.licences_in_use == 2
    assert s.launch("w", "a", now=4.0).reason == Reason.LICENCE_EXHAUSTED
    s.logoff(d1.session, now=5.0)
    assert s.licences_in_use == 2
    assert s.launch("w", "a", now=6.0).reason == Reason.LICENCE_EXHAUSTED
    s.logoff(d2.session, now=7.0)
    assert s.licences_in_use == 1
    assert s.launch("w", "a", now=8.0).outcome == Outcome.PLACED
    assert s.licences_in_use == 2


def test_disconnected_session_holds_licence(backend):
    s = make(backend, licences=1)
    disconnected_session(s)
    assert s.licences_in_use == 1
    assert s.launch("v", "a", now=5.0).reason == Reason.LICENCE_EXHAUSTED


def test_lowering_licence_cap_ends_nobody(backend):
    s = make(backend, licences=3)
    for i in range(3):
        s.launch(f"u{i}", "a", now=1.0 + i)
    s.set_licences(1)
    assert s.licence_cap == 1
    assert s.licences_in_use == 3
    assert len(s.sessions()) == 3
    assert s.launch("new", "a", now=5.0).reason == Reason.LICENCE_EXHAUSTED
    # an existing holder still gets a new session
    s.add_pool("q")
    s.add_app("c", ["q"])
    s.add_server("t0", "z1", "q", now=6.0)
    assert s.launch("u0", "c", now=7.0).outcome == Outcome.PLACED
    s.set_licences(None)
    assert s.licence_cap is None
    assert s.launch("new", "a", now=8.0).outcome == Outcome.PLACED


# ------------------------------------------------------------ server operations
def test_set_power_off_loses_sessions(backend):
    s = make(backend, licences=10, pool_kw=dict(logon_tolerance=100))
    ds = [s.launch(f"u{i}", "a", now=1.0 + i) for i in range(4)]
    on_s0 = {d.session for d in ds if d.server == "s0"}
    assert len(on_s0) == 2
    lost = s.set_power("s0", "off", now=10.0)
    assert isinstance(lost, list)
    assert sorted(lost) == sorted(on_s0)
    assert live_ids(s) == {d.session for d in ds} - on_s0
    assert sessions_on(s, "s0") == 0
    assert int(s.server("s0")["load_index"]) == 0
    assert s.licences_in_use == 2
    for sid in on_s0:
        with pytest.raises(usher.SessionEnded):
            s.session(sid)
    assert s.set_power("s0", "off", now=11.0) == []
    s.set_power("s0", "on", now=12.0)
    assert sessions_on(s, "s0") == 0


@pytest.mark.parametrize("power", ["booting", "shutting_down", "on"])
def test_set_power_other_states_keep_sessions(backend, power):
    s = make(backend, n=1)
    d = s.launch("u", "a", now=1.0)
    assert s.set_power("s0", power, now=2.0) == []
    assert state(s, d.session) == "launching"
    assert sessions_on(s, "s0") == 1


def test_set_power_off_frees_licence_for_other_user(backend):
    s = make(backend, licences=1)
    d = s.launch("u", "a", now=1.0)
    s.set_power(d.server, "off", now=2.0)
    assert s.licences_in_use == 0
    r = s.launch("v", "a", now=3.0)
    assert r.outcome == Outcome.PLACED and r.server == other(d.server)


def test_set_registered_false_keeps_sessions_blocks_new_and_reconnect(backend):
    s = make(backend, n=1)
    d = disconnected_session(s)
    s.set_registered("s0", False, now=3.0)
    assert state(s, d.session) == "disconnected"
    assert sessions_on(s, "s0") == 1
    assert s.licences_in_use == 1
    r = s.launch("u", "a", endpoint="e1", now=4.0)
    assert r.outcome == Outcome.REJECTED and r.reason == Reason.NO_SERVER
    r = s.launch("v", "a", now=5.0)
    assert r.outcome == Outcome.REJECTED and r.reason == Reason.NO_SERVER
    # sessions on it still take operations
    s.set_registered("s0", True, now=6.0)
    r = s.launch("u", "a", endpoint="e1", now=7.0)
    assert r.outcome == Outcome.RECONNECTED and r.session == d.session


def test_set_mode_keeps_sessions(backend):
    s = make(backend, n=1)
    d = s.launch("u", "a", now=1.0)
    s.set_mode("s0", "maintenance", now=2.0)
    assert state(s, d.session) == "launching"
    s.logon_complete(d.session, now=3.0)
    assert state(s, d.session) == "active"
    assert s.launch("v", "a", now=4.0).reason == Reason.NO_SERVER
    s.set_mode("s0", "enabled", now=5.0)
    assert s.launch("v", "a", now=6.0).outcome == Outcome.PLACED


def test_remove_server_busy_then_force(backend):
    s = make(backend, pool_kw=dict(logon_tolerance=100))
    ds = [s.launch(f"u{i}", "a", now=1.0 + i) for i in range(4)]
    on_s0 = sorted(d.session for d in ds if d.server == "s0")
    with pytest.raises(usher.ServerBusy) as e:
        s.remove_server("s0", now=10.0)
    assert isinstance(e.value, usher.InvalidState)
    assert e.value.field == "server" and e.value.value == "s0"
    assert sessions_on(s, "s0") == 2 and len(s.sessions()) == 4
    ended = s.remove_server("s0", force=True, now=11.0)
    assert sorted(ended) == on_s0
    assert len(s.sessions()) == 2
    assert s.licences_in_use == 2
    with pytest.raises(usher.UnknownServer):
        s.server("s0")
    assert list(s.servers()["name"]) == ["s1"]
    for sid in on_s0:
        with pytest.raises(usher.SessionEnded):
            s.session(sid)


def test_remove_idle_server(backend):
    s = make(backend)
    assert s.remove_server("s1", now=1.0) == []
    assert list(s.servers()["name"]) == ["s0"]
    for i in range(3):
        assert s.launch(f"u{i}", "a", now=2.0 + i).server == "s0"
    # the name can be added again (a new index)
    s.add_server("s1", "z2", "p", now=10.0)
    assert s.server("s1")["zone"] == "z2"
    assert s.launch("w", "a", now=11.0).server == "s1"


def test_remove_server_after_sessions_ended(backend):
    s = make(backend, n=1)
    d = s.launch("u", "a", now=1.0)
    with pytest.raises(usher.ServerBusy):
        s.remove_server("s0", now=2.0)
    s.logoff(d.session, now=3.0)
    assert s.remove_server("s0", now=4.0) == []
    assert s.launch("u", "a", now=5.0).reason == Reason.NO_SERVER
