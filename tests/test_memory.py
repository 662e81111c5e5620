"""Long runs keep memory flat: users a launch created and endpoint names are
forgotten once no live session needs them (``Scheduler._sweep``), and
``remove_user`` forgets a directory user, so a broker that sees millions of
one-off users and client PCs over weeks holds only what its live sessions need.

RSS is read from /proc (Linux); 10**6 launches and logoffs by default, 10**7
in the thorough profile.
"""

from __future__ import annotations

import os
import sys

import pytest

import usher
from usher import _engine

N = 10**7 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 10**6
LIVE = 500  # sessions kept open at any time


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _scheduler():
    s = usher.Scheduler()
    s.add_pool("p", logon_tolerance=10**6)
    s.add_app("a", ["p"])
    for i in range(8):
        s.add_server(f"s{i}", "z", "p", max_sessions=10**5)
    return s


def _churn(s, lo, hi, ring):
    """Launches hi - lo one-off users from one-off endpoints, each logged off
    LIVE launches later."""
    launch, logoff = s.launch, s.logoff
    for k in range(lo, hi):
        d = launch(f"walk-in-{k}", "a", endpoint=f"pc-{k}", now=float(k))
        old = ring[k % LIVE]
        if old is not None:
            logoff(old, now=float(k))
        ring[k % LIVE] = d.session_id


def _endpoints(s):
    """The endpoints the scheduler knows, by name: their indices (the key table's,
    checked against the name list; nothing marked as looked up)."""
    out = {e: i for i, e in enumerate(s._endpoint_names) if e is not None}
    with s._locked():
        assert all(s._find_endpoint(e) == i for e, i in out.items())
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")
def test_rss_stays_flat_over_one_off_users_and_endpoints():
    s = _scheduler()
    ring = [None] * LIVE
    warm = N // 5
    _churn(s, 0, warm, ring)
    before = _rss_mib()
    _churn(s, warm, N, ring)
    after = _rss_mib()
    assert after - before < 6.0, (before, after)
    # what is kept is bounded by the live sessions (plus one sweep's worth)
    assert len(s.user_ids) <= 2 * max(usher.scheduler.SWEEP_FLOOR, LIVE) + LIVE
    # endpoints: those live sessions name, and those looked up over the last
    # ENDPOINT_IDLE_SWEEPS + 1 sweep intervals (each at most a sweep's additions)
    interval = max(usher.scheduler.SWEEP_FLOOR, 2 * LIVE)
    assert len(_endpoints(s)) <= (_engine.ENDPOINT_IDLE_SWEEPS + 1) * interval + LIVE
    assert s.live_sessions == LIVE


def test_forgotten_users_and_endpoints_are_those_no_session_needs():
    s = _scheduler()
    sessions = {}
    for k in range(3 * usher.scheduler.SWEEP_FLOOR):
        d = s.launch(f"u{k}", "a", endpoint=f"pc{k}", now=float(k))
        sessions[k] = d.session_id
        if k % 3:
            s.logoff(d.session_id, now=float(k))
    kept = set(s.user_ids)
    rows = s.sessions()
    # every live session's user and endpoint are known, by the names it was launched with
    for row in rows:
        assert row["user"] in kept and row["endpoint"] in _endpoints(s)
        assert row["endpoint"] == "pc" + row["user"][1:]
    # users without a live session went (all but those since the last sweep)
    idle = [u for u in kept if int(u[1:]) % 3]
    assert len(idle) <= usher.scheduler.SWEEP_FLOOR
    # a forgotten user comes back as a new user, and reconnects still find theirs
    d = s.launch("u1", "a", now=1e6)
    assert d.outcome == usher.Outcome.PLACED
    live = next(int(u[1:]) for u in kept if int(u[1:]) % 3 == 0)
    assert s.launch(f"u{live}", "a", now=1e6).outcome == usher.Outcome.SHARED


def test_remove_user_forgets_a_directory_user_without_sessions():
    s = _scheduler()
    s.add_users(["d1", "d2"], apps=["a"])
    d = s.launch("d1", "a", now=1.0)
    with pytest.raises(usher.InvalidState):
        s.remove_user("d1")
    s.remove_user("d2")
    assert "d2" not in s.user_ids
    with pytest.raises(usher.UnknownUser):
        s.remove_user("d2")
    with pytest.raises(usher.UnknownUser):
        s.user_config("d2")
    s.logoff(d.session, now=2.0)
    s.remove_user("d1")
    assert s.user_ids == []
    # an index freed is not a user any more, and is given to the next user
    with pytest.raises(usher.InvalidArgument):
        s.launch_by_index(0, "a", now=3.0)
    s.add_user("d3")
    assert s.user_indices(["d3"])[0] in (0, 1)
    assert s.launch("d3", "a", now=4.0).placed


def test_an_endpoint_used_again_keeps_its_index_and_an_idle_one_goes():
    """An endpoint no live session names is kept while it is looked up at least once
    every ENDPOINT_IDLE_SWEEPS sweeps (a desk its user comes back to), with its index;
    one left idle over more sweeps is forgotten; decisions do not change (a
    reconnection to the same endpoint still finds its session)."""
    s = _scheduler()
    s.add_pool("same", session_reconnection="same_endpoint")
    s.add_app("b", ["same"])
    s.add_server("t0", "z", "same", max_sessions=10**5)
    d = s.launch("regular", "a", endpoint="desk", now=0.0)
    s.logoff(d.session_id, now=0.0)
    index = _endpoints(s)["desk"]
    ring = [None] * LIVE
    idle_sweeps = _engine.ENDPOINT_IDLE_SWEEPS
    step = usher.scheduler.SWEEP_FLOOR  # each launch adds a user and an endpoint: two sweeps
    k = 0
    for _ in range(3 * idle_sweeps):
        _churn(s, k, k + step, ring)
        k += step
        d = s.launch("regular", "a", endpoint="desk", now=float(k))  # used at every sweep
        assert _endpoints(s)["desk"] == index
        s.logoff(d.session_id, now=float(k))
    # left idle: forgotten after ENDPOINT_IDLE_SWEEPS + 1 sweeps
    _churn(s, k, k + step * (idle_sweeps + 1), ring)
    k += step * (idle_sweeps + 1)
    assert "desk" not in _endpoints(s)
    with s._locked():
        assert s._find_endpoint("desk") == -1  # gone from the key table too
    # a disconnected session on a same-endpoint pool reconnects from its endpoint only
    d = s.launch("roamer", "b", endpoint="pc-r", now=float(k))
    s.disconnect(d.session_id, now=float(k))
    _churn(s, k, k + step, ring)
    k += step
    assert s.launch("roamer", "b", endpoint="pc-other", now=float(k)).outcome != usher.Outcome.RECONNECTED
    assert s.launch("roamer", "b", endpoint="pc-r", now=float(k)).outcome == usher.Outcome.RECONNECTED
