"""Engine mechanics: table growth, session ids, explanations, threads, views, CLI."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import usher
from usher import Outcome, Reason


def fleet(n_servers=6, max_sessions=4, zones=("Z1", "Z2"), **pool_kwargs):
    s = usher.Scheduler(seed=3)
    s.add_pool("P", **pool_kwargs)
    s.add_app("app", ["P"])
    for i in range(n_servers):
        s.add_server(f"s{i}", zones[i % len(zones)], "P", max_sessions=max_sessions)
    return s


def test_tables_grow_past_initial_capacity():
    # 80 servers (> 64), 300 users (> 256), 70 apps (> 64 entitlement bits), 3000 sessions (> 1024)
    s = usher.Scheduler(enforce_entitlement=True)
    s.add_pool("P", zone_preference=())
    for a in range(70):
        s.add_app(f"a{a}", ["P"])
    for i in range(80):
        s.add_server(f"s{i}", "Z", "P", max_sessions=50)
    for u in range(300):
        s.add_user(f"u{u}", apps=[f"a{a}" for a in range(70) if (a + u) % 7 == 0])
    placed = 0
    t = 0.0
    for k in range(3000):
        u, a = k % 300, (k * 13) % 70
        d = s.launch(f"u{u}", f"a{a}", endpoint=f"e{k}", now=t)
        t += 0.01
        entitled = (a + u) % 7 == 0
        if not entitled:
            assert d.reason is Reason.NOT_ENTITLED
        else:
            assert d.placed
            placed += d.outcome is Outcome.PLACED
    rows = s.servers()
    assert rows["sessions"].sum() == s.live_sessions == len(s.sessions())
    assert (rows["sessions"] <= rows["max_sessions"]).all()
    assert placed == s.live_sessions


def test_session_ids_of_ended_sessions_are_recognised():
    s = fleet()
    d = s.launch("u", "app", now=0)
    s.logoff(d.session, now=1)
    with pytest.raises(usher.SessionEnded) as e:
        s.logoff(d.session, now=2)
    assert e.value.field == "session" and e.value.value == d.session
    d2 = s.launch("u", "app", now=3)  # the slot is reused under a new generation
    assert d2.session != d.session
    with pytest.raises(usher.UnknownSession):
        s.logoff(d2.session + (5 << 32), now=4)
    with pytest.raises(usher.UnknownSession):
        s.logoff(123456, now=4)


def test_explanation_agrees_with_the_pick():
    s = fleet(n_servers=8, zone_preference=("user_location",), failover=True)
    s.set_power("s0", "off", now=0)
    s.set_mode("s2", "drain", now=0)
    for k in range(5):
        s.launch(f"w{k}", "app", location="Z1", now=1)
    d = s.launch("x", "app", location="Z1", now=2, explain=True)
    ex = d.explanation
    pool = ex.pools[0]
    assert pool["funnel"]["power"] == 1 and pool["funnel"]["mode"] == 1
    assert pool["funnel"]["servers"] == 8
    assert pool["top"][0]["server"] == d.server
    assert ex.zone == d.zone == "Z1" and str(ex.zone_choice) == "user_location"
    assert "pool P" in str(ex)
    assert d.to_dict()["explanation"]["server"] == d.server


def test_threads_keep_the_books():
    s = fleet(n_servers=40, max_sessions=100, zone_preference=())
    results = []

    def worker(k):
        out = []
        for j in range(400):
            out.append(s.launch(f"t{k}-{j}", "app", now=1.0))
        results.append(out)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sessions = [d.session for out in results for d in out]
    assert len(set(sessions)) == 1600 == s.live_sessions
    rows = s.servers()
    assert rows["sessions"].sum() == 1600
    assert rows["sessions"].max() - rows["sessions"].min() <= 1  # horizontal spread kept


def test_batch_equals_sequential_on_a_storm():
    def build():
        s = fleet(n_servers=12, max_sessions=5, zone_preference=("user_location", "user_home"))
        for u in range(40):
            s.add_user(f"u{u}", home_zone="Z2" if u % 3 else "Z1")
        return s

    users = [f"u{k % 40}" for k in range(80)]
    locs = [("Z1", "Z2", None)[k % 3] for k in range(80)]
    eps = [f"e{k % 7}" for k in range(80)]
    times = np.linspace(0, 200, 80)
    a, b = build(), build()
    batch = a.launch_many(users, ["app"] * 80, locations=locs, endpoints=eps, now=times)
    seq = [b.launch(u, "app", location=z, endpoint=e, now=t) for u, z, e, t in zip(users, locs, eps, times)]
    assert list(batch) == seq
    assert batch.counts() == {k: v for k, v in _counts(seq).items()}


def _batch_storm(clock=None, enforce=False):
    s = usher.Scheduler(seed=3, clock=clock, enforce_entitlement=enforce)
    s.add_pool("P", zone_preference=("user_location", "user_home"), max_sessions_per_user=2)
    s.add_pool("Q", zone_preference=())
    s.add_app("app", ["P"])
    s.add_app("other", ["P", "Q"], max_instances_per_user=1)
    for i in range(9):
        s.add_server(f"s{i}", ("Z1", "Z2", "Z3")[i % 3], "P" if i < 6 else "Q", max_sessions=4, now=0.0)
    for u in range(30):
        s.add_user(f"u{u}", home_zone=("Z1", "Z2")[u % 2], apps=("app", "other"))
    return s


def _general_path_calls(s):
    """Count the calls of the general path's kernel call on scheduler s."""
    calls = []
    kernel_call = s._launch_arrays

    def counted(*args):
        calls.append(len(args[0]))
        return kernel_call(*args)

    s._launch_arrays = counted
    return calls


def test_compiled_batch_takes_the_compiled_path_and_equals_the_general_one():
    """``launch_many`` with user indices or known ids, app indices, zone names or none,
    and one time takes the compiled path (``Engine._launch_compiled``); the same rows through the
    general path (an explicit column of external=False forces it) and one by one give
    the same decisions, the same sessions and the same servers — zone names no
    server uses, rejections and a full fleet included."""
    a, b, c = _batch_storm(), _batch_storm(), _batch_storm()
    general_a, general_b = _general_path_calls(a), _general_path_calls(b)
    rng = np.random.default_rng(5)
    t = 1.0
    seen = []
    for batch in range(6):
        n = int(rng.integers(1, 25))
        names = [f"u{k}" for k in rng.integers(0, 30, size=n)]
        apps = [("app", "other")[k] for k in rng.integers(0, 2, size=n)]
        locs = None if batch % 2 else [(None, "Z1", "Z2", "Z3", "nowhere")[k] for k in rng.integers(0, 5, size=n)]
        users_idx, apps_idx = a.user_indices(names), a.app_indices(apps)
        assert users_idx.dtype == np.int64 and apps_idx.dtype == np.int64
        # users by index, or by id (a list or a tuple of known ids)
        users_arg = (users_idx, names, tuple(names))[batch % 3]
        fast = a.launch_many(users_arg, apps_idx, locations=locs, now=t)
        general = b.launch_many(users_idx, apps_idx, locations=locs, now=[t] * n)
        one_by_one = [c.launch(u, ap, location=None if locs is None else locs[k], now=t)
                      for k, (u, ap) in enumerate(zip(names, apps))]
        assert fast.rows.tolist() == general.rows.tolist()
        assert list(fast) == one_by_one
        seen += list(fast)
        t += 7.0
    assert general_a == [] and len(general_b) == 6  # a never took the general path
    for x in (b, c):
        assert a.servers().tolist() == x.servers().tolist()
        assert a.sessions().tolist() == x.sessions().tolist()
    assert {"placed", "shared", "rejected:full"} <= set(_counts(seen))  # the fleet filled up


def test_compiled_batch_of_names_takes_the_compiled_path_and_equals_one_by_one():
    """``launch_many`` with users and apps as lists or tuples of names (as a broker
    holds them) and zone names or none takes the compiled path — the general path's
    kernel call never runs — and gives the decisions, sessions and servers of the
    same launches one by one, and the rows of the general path; the fleet fills up."""
    a, b, c = _batch_storm(), _batch_storm(), _batch_storm()
    general_a, general_b = _general_path_calls(a), _general_path_calls(b)
    rng = np.random.default_rng(11)
    t = 1.0
    seen = []
    for batch in range(8):
        n = int(rng.integers(1, 25))
        names = [f"u{k}" for k in rng.integers(0, 30, size=n)]
        apps = [("app", "other")[k] for k in rng.integers(0, 2, size=n)]
        locs = None if batch % 2 else [(None, "Z1", "Z2", "Z3", "nowhere")[k] for k in rng.integers(0, 5, size=n)]
        users_arg = (names, tuple(names))[batch % 2]
        apps_arg = (apps, tuple(apps))[(batch // 2) % 2]
        fast = a.launch_many(users_arg, apps_arg, locations=locs, now=t)
        general = b.launch_many(names, apps, locations=locs, now=[t] * n)
        one_by_one = [c.launch(u, ap, location=None if locs is None else locs[k], now=t)
                      for k, (u, ap) in enumerate(zip(names, apps))]
        assert fast.rows.tolist() == general.rows.tolist()
        assert list(fast) == one_by_one
        seen += list(fast)
        t += 7.0
    assert general_a == [] and len(general_b) == 8  # a never took the general path
    for x in (b, c):
        assert a.servers().tolist() == x.servers().tolist()
        assert a.sessions().tolist() == x.sessions().tolist()
    assert {"placed", "shared", "rejected:full"} <= set(_counts(seen))


@pytest.mark.parametrize(
    "change, error, field",
    [
        (dict(users=["u1", ["u2"]]), usher.InvalidArgument, "users[1]"),
        (dict(users=("u1", {})), usher.InvalidArgument, "users[1]"),
        (dict(locations=[None, ["Z1"]]), usher.InvalidArgument, "locations[1]"),
        (dict(locations=["Z1"]), usher.InvalidArgument, "locations"),
        (dict(locations="Z1"), usher.InvalidArgument, "locations"),
        (dict(users=np.array([0, 30], dtype=np.int64)), usher.InvalidArgument, "users[1]"),
        (dict(users=np.array([-1, 0], dtype=np.int64)), usher.InvalidArgument, "users[0]"),
        (dict(apps=np.array([0, 2], dtype=np.int64)), usher.UnknownApp, "apps[1]"),
        (dict(apps=np.array([0], dtype=np.int64)), usher.InvalidArgument, "apps"),
        (dict(now=float("nan")), usher.InvalidArgument, "now"),
        (dict(now=float("inf")), usher.InvalidArgument, "now"),
        (dict(now=True), usher.InvalidArgument, "now"),
        (dict(now=4.0), usher.TimeWentBackwards, "now"),
    ],
    ids=["user-id-unhashable", "user-id-unhashable-tuple", "location-unhashable", "locations-length", "locations-str", "user-past-end", "user-negative",
         "app-past-end", "lengths", "nan", "inf", "bool", "backwards"],
)
def test_compiled_batch_refused_by_the_general_path(change, error, field):
    """A batch of the compiled path's shape with a value to refuse: the compiled path
    declines it and the general path raises, naming the field and row; nothing is
    applied."""
    s = _batch_storm()
    s.launch("u0", "app", now=5.0)
    before = (s.servers().tolist(), s.sessions().tolist(), s.now)
    args = dict(users=np.array([1, 2], dtype=np.int64), apps=np.array([0, 1], dtype=np.int64), now=6.0,
                locations=["Z1", None])
    args.update(change)
    with pytest.raises(error) as e:
        s.launch_many(args["users"], args["apps"], locations=args["locations"], now=args["now"])
    assert e.value.field == field
    assert (s.servers().tolist(), s.sessions().tolist(), s.now) == before


def test_compiled_batch_of_other_shapes_takes_the_general_path():
    """int32 indices, a numpy time, a list of times, a strided index array, str
    subclasses as names, an empty batch: the general path decides them, with the same result as the compiled path
    on int64 arrays."""
    ref = _batch_storm()
    locs = ["Z2", None, "Z1"]
    want = ref.launch_many(np.array([1, 2, 3], dtype=np.int64), np.array([0, 1, 0], dtype=np.int64),
                           locations=locs, now=6.0)
    for users, apps, now, where in [
        (np.array([1, 2, 3], dtype=np.int32), np.array([0, 1, 0], dtype=np.int64), 6.0, locs),
        (np.array([1, 2, 3], dtype=np.int64), np.array([0, 1, 0], dtype=np.uint8), 6.0, locs),
        (np.array([1, 2, 3], dtype=np.int64), np.array([0, 1, 0], dtype=np.int64), np.float64(6.0), locs),
        (np.array([1, 2, 3], dtype=np.int64), np.array([0, 1, 0], dtype=np.int64), [6.0, 6.0, 6.0], locs),
        (np.array([1, 9, 2, 9, 3], dtype=np.int64)[::2], np.array([0, 1, 0], dtype=np.int64), 6, locs),
        (np.array([1, 2, 3], dtype=np.int64), np.array([0, 1, 0], dtype=np.int64), 6.0,
         [None if z is None else _Zone(z) for z in locs]),
    ]:
        s = _batch_storm()
        calls = _general_path_calls(s)
        got = s.launch_many(users, apps, locations=where, now=now)
        assert got.rows.tolist() == want.rows.tolist()
        assert calls == [3]
    s = _batch_storm()
    calls = _general_path_calls(s)
    assert len(s.launch_many(np.array([], dtype=np.int64), np.array([], dtype=np.int64), now=6.0)) == 0


class _Zone(str):
    """A str subclass: its hash and == may run Python code, so a batch naming one
    takes the general path."""


def test_compiled_batch_with_new_user_ids_creates_them_as_one_by_one():
    """A batch of user ids naming users not added yet (one twice) takes the compiled
    path, which creates them in row order — or refuses them as not entitled when
    entitlement is enforced — with the decisions, user indices and tables of the
    same launches one by one and of the general path."""
    for enforce in (False, True):
        a, b, c = (_batch_storm(enforce=enforce) for _ in range(3))
        calls, general = _general_path_calls(a), _general_path_calls(c)
        ids = ["u1", "newcomer", "u2", "second", "newcomer"]
        got = a.launch_many(ids, ["app"] * 5, now=6.0)
        want = [b.launch(u, "app", now=6.0) for u in ids]
        forced = c.launch_many(ids, ["app"] * 5, now=[6.0] * 5)
        assert calls == [] and general == [5]
        assert list(got) == want and got.rows.tolist() == forced.rows.tolist()
        assert ("newcomer" in a.user_ids) == (not enforce)
        assert (want[1].reason == Reason.NOT_ENTITLED) == enforce
        for x in (b, c):
            assert a.user_ids == x.user_ids
            assert a.sessions().tolist() == x.sessions().tolist()


def test_compiled_batch_of_object_arrays_equals_the_lists():
    """Users, apps and locations as 1-D object arrays take the compiled path and
    decide as the same lists; a bad name in one is refused naming its row, and
    nothing is applied."""
    a, b = _batch_storm(), _batch_storm()
    calls = _general_path_calls(a)
    ids, apps, locs = ["u1", "fresh", "u2"], ["app", "other", "app"], ["Z2", None, "nowhere"]
    got = a.launch_many(*(np.array(x, dtype=object) for x in (ids, apps)),
                        locations=np.array(locs, dtype=object), now=6.0)
    want = b.launch_many(ids, apps, locations=locs, now=6.0)
    assert calls == [] and got.rows.tolist() == want.rows.tolist()
    before = (a.servers().tolist(), a.sessions().tolist(), a.user_ids)
    for bad, error, field in [
        (dict(users=np.array(["u1", ""], dtype=object)), usher.InvalidArgument, "users[1]"),
        (dict(apps=np.array(["app", "nope"], dtype=object)), usher.UnknownApp, "apps[1]"),
        (dict(locations=np.array([None, 3], dtype=object)), usher.InvalidArgument, "locations[1]"),
        (dict(users=np.array(["new1", "new2"], dtype=object), apps=np.array(["app", 7], dtype=object)),
         usher.InvalidArgument, "apps[1]"),
    ]:
        args = dict(users=np.array(["u1", "u2"], dtype=object), apps=np.array(["app", "app"], dtype=object),
                    locations=None)
        args.update(bad)
        with pytest.raises(error) as e:
            a.launch_many(args["users"], args["apps"], locations=args["locations"], now=7.0)
        assert e.value.field == field
        assert (a.servers().tolist(), a.sessions().tolist(), a.user_ids) == before


def test_compiled_batch_reads_the_clock_once():
    """now=None: the scheduler's clock is read once for the batch, on either path."""
    reads = []

    def clock():
        reads.append(1)
        return 10.0 + len(reads)

    s = _batch_storm(clock)
    b = s.launch_many(np.array([1, 2], dtype=np.int64), np.array([0, 0], dtype=np.int64))
    assert len(reads) == 1 and s.now == 11.0 and len(b) == 2
    nan_clock = _batch_storm(lambda: float("nan"))
    with pytest.raises(usher.InvalidArgument):
        nan_clock.launch_many(np.array([1], dtype=np.int64), np.array([0], dtype=np.int64))


def _counts(decisions):
    out = {}
    for d in decisions:
        key = str(d.outcome) if d.outcome is not Outcome.REJECTED else f"rejected:{d.reason}"
        out[key] = out.get(key, 0) + 1
    return out


def test_failed_batch_applies_nothing():
    s = fleet()
    before = (s.servers(), s.sessions(), s.licences_in_use, s.now)
    with pytest.raises(usher.UnknownApp) as e:
        s.launch_many(["a", "b"], ["app", "nope"], now=[1.0, 2.0])
    assert e.value.field == "apps[1]"
    with pytest.raises(usher.InvalidArgument):
        s.launch_many(["a", "b"], ["app", "app"], now=[2.0, 1.0])
    with pytest.raises(usher.InvalidArgument):
        s.telemetry_many(["s0", "s1"], cpu=[10.0, float("nan")])
    after = (s.servers(), s.sessions(), s.licences_in_use, s.now)
    assert (before[0] == after[0]).all() and len(after[1]) == 0 and before[2:] == after[2:]


def test_views_are_read_only_and_consistent():
    s = fleet()
    d = s.launch("u", "app", now=0, endpoint="pc")
    v = s.server_field("sessions")
    with pytest.raises(ValueError):
        v[0] = 5
    info = s.session(d.session)
    assert info["user"] == "u" and info["server"] == d.server and info["apps"] == ("app",)
    assert info["state"] == "launching" and info["endpoint"] == "pc"
    assert s.server(d.server)["sessions"] == 1


def test_remove_and_re_add_server_relays_out_groups():
    s = fleet(n_servers=3, zone_preference=())
    d = s.launch("u", "app", now=0)
    with pytest.raises(usher.ServerBusy):
        s.remove_server(d.server)
    lost = s.remove_server(d.server, force=True, now=0.5)
    assert lost == [d.session] and s.live_sessions == 0 and s.licences_in_use == 0
    s.add_server(d.server, "Z9", "P", max_sessions=1, now=0.6)
    placed = {s.launch(f"v{k}", "app", now=1).server for k in range(5)}
    assert d.server in placed and len(s.servers()) == 3


def test_a_fleet_without_servers_rebuilds_its_keys():
    """Every server removed: the group table keeps one empty placeholder record (no
    tree), which a full rebuild (the pending timeout changed) skips; launches are
    then rejected, and a server added again takes them."""
    s = fleet(n_servers=2, zone_preference=())
    d = s.launch("u", "app", now=0)
    s.remove_server(d.server, force=True, now=1)
    s.remove_server(next(n for n in s.servers()["name"]), now=1)
    assert len(s.servers()) == 0
    s.settings(pending_timeout=5.0)  # the retime kernel: every key, every tree
    s.settings(pending_timeout=50.0)
    assert s.launch("v", "app", now=2).reason == Reason.NO_SERVER
    s.add_server("back", "Z1", "P", now=3)
    assert s.launch("v", "app", now=4).server == "back"


def test_launch_by_index_decides_as_launch_by_id():
    """The same requests, by user id on one scheduler and by user index on another:
    the same decisions (placements, reconnects, shares), session for session."""
    by_id, by_index = fleet(n_servers=4, max_sessions=3), fleet(n_servers=4, max_sessions=3)
    users = [f"u{k}" for k in range(9)]
    for s in (by_id, by_index):
        s.add_users(users)
    index = by_index.user_indices(users)
    t = 0.0
    for k in range(40):
        u = (k * 7) % len(users)
        loc = ("Z1", "Z2", None)[k % 3]
        a = by_id.launch(users[u], "app", location=loc, endpoint=f"e{k % 4}", now=t)
        b = by_index.launch_by_index(int(index[u]), "app", location=loc, endpoint=f"e{k % 4}", now=t)
        assert (a.outcome, a.reason, a.server, a.session, a.zone_choice) == \
            (b.outcome, b.reason, b.server, b.session, b.zone_choice), k
        if a.session is not None and k % 5 == 0:
            by_id.disconnect(a.session, now=t)
            by_index.disconnect(b.session, now=t)
        t += 1.0
    assert by_id.live_sessions == by_index.live_sessions > 0


def test_the_likely_pick_hint_names_the_next_pick():
    """After a placement the kernels name its group's new best server in the header
    (``H_LIKELY_PICK``), whose last session's line the next launch prefetches: in a
    one-group fleet that is the server the next launch takes, by one call or in a batch."""
    from usher.core import state as cs

    s = fleet(n_servers=5, max_sessions=4, zones=("Z1",))
    assert s._header[cs.H_LIKELY_PICK] == -1  # nothing placed yet
    for k in range(12):
        hint = int(s._header[cs.H_LIKELY_PICK])
        d = s.launch(f"u{k}", "app", now=k)
        assert d.outcome is Outcome.PLACED
        if k:
            assert d.server_index == hint, k
    s.add_users([f"v{k}" for k in range(5)])
    batch = s.launch_many(np.asarray(s.user_indices([f"v{k}" for k in range(4)]), dtype=np.int64),
                          np.zeros(4, dtype=np.int64), now=12)
    hint = int(s._header[cs.H_LIKELY_PICK])
    assert hint >= 0 and hint != list(batch)[-1].server_index
    assert s.launch("v4", "app", now=13).server_index == hint


def test_a_wrong_likely_pick_hint_changes_no_decision():
    """The hint is only a prefetch: with a wrong one before every call (another server,
    a server since removed, none) the decisions are those of an untouched scheduler."""
    from usher.core import state as cs

    a, b = fleet(n_servers=6, max_sessions=3), fleet(n_servers=6, max_sessions=3)
    for s in (a, b):
        s.remove_server("s5", now=0)
    users = [f"u{k}" for k in range(8)]
    t = 1.0
    for k in range(30):
        b._header[cs.H_LIKELY_PICK] = (5, k % 6, -1)[k % 3]
        da = a.launch(users[k % 8], "app", location=("Z1", "Z2", None)[k % 3], now=t)
        db = b.launch(users[k % 8], "app", location=("Z1", "Z2", None)[k % 3], now=t)
        assert (da.outcome, da.reason, da.server, da.session) == \
            (db.outcome, db.reason, db.server, db.session)
        if da.session is not None and k % 4 == 0:
            a.logoff(da.session, now=t)
            b.logoff(db.session, now=t)
        t += 1.0
    assert a.servers().tolist() == b.servers().tolist()


def test_cli_version_and_storm():
    out = subprocess.run([sys.executable, "-m", "usher.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and usher.__version__ in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "usher.cli", "storm", "--users", "500", "--servers", "140", "--minutes", "5"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "placed" in out.stdout and "engine time" in out.stdout


def test_copy_is_independent_and_decides_alike():
    s = fleet(n_servers=6, max_sessions=3, zone_preference=("user_location",))
    for k in range(5):
        s.launch(f"u{k}", "app", location="Z1", now=k)
    c = s.copy()
    a = [s.launch(f"v{k}", "app", location=("Z1", "Z2")[k % 2], now=10 + k) for k in range(8)]
    b = [c.launch(f"v{k}", "app", location=("Z1", "Z2")[k % 2], now=10 + k) for k in range(8)]
    assert a == b
    c.set_power("s1", "off", now=30)
    c.logoff(b[0].session, now=30)
    assert s.server("s1")["power"] == "on" and s.live_sessions == 13 and c.live_sessions < 13
    assert (s.servers()["sessions"] != c.servers()["sessions"]).any()


def test_tree_rows_start_on_cache_lines():
    """The tree table starts on a 64-byte boundary (each field of a block, the
    eight children's keys or tiebreaks, then fills one cache line: the vector
    compare of a level reads two lines, docs/ARCHITECTURE.md), in a copy too,
    which keeps the same nodes."""
    s = fleet(n_servers=6, max_sessions=3, zone_preference=("user_location",))
    s.launch("u0", "app", location="Z1", now=1)
    c = s.copy()
    for sched in (s, c):
        tree = sched._t["tree"]
        assert tree.shape[1] == 32 and tree.ctypes.data % 64 == 0
    assert (c._t["tree"] == s._t["tree"]).all()
    s.add_server("late", "Z1", "P", max_sessions=3)  # a new layout
    s.launch("u1", "app", location="Z1", now=2)
    assert s._t["tree"].ctypes.data % 64 == 0


def test_gil_kept_only_without_other_threads():
    """A launch decides alike with and without another Python thread in the
    interpreter (its kernel keeps the GIL either way; a batch of NOGIL_ROWS or
    more releases it only when another thread exists)."""
    from usher import _engine

    before = _engine._other_threads()
    go, started = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (started.set(), go.wait()))
    worker.start()
    started.wait()
    try:
        assert _engine._other_threads()
        a = fleet()
        da = [a.launch(f"u{k}", "app", now=k) for k in range(12)]
    finally:
        go.set()
        worker.join()
    assert _engine._other_threads() == before
    b = fleet()
    db = [b.launch(f"u{k}", "app", now=k) for k in range(12)]
    assert da == db


def _directory_fleet():
    s = usher.Scheduler(enforce_entitlement=True, seed=3)
    s.add_pool("records", zone_preference=["user_home"], failover=True)
    s.add_pool("imaging", zone_preference=["user_home"], failover=False)
    s.add_app("pr", pools=["records"])
    s.add_app("img", pools=["imaging"])
    for i in range(12):
        s.add_server(f"r{i}", zone=f"Z{i % 3}", pool="records", max_sessions=4)
        s.add_server(f"m{i}", zone=f"Z{i % 2}", pool="imaging", max_sessions=3)
    return s


def test_add_users_equals_add_user_one_by_one():
    rng = np.random.default_rng(5)
    ids = [f"u{k}" for k in range(300)]
    zones = [None if k % 7 == 0 else f"Z{rng.integers(0, 4)}" for k in range(300)]
    apps = [["pr", "img"][: rng.integers(0, 3)] for _ in range(300)]
    apps[4] = ["img", "later"]  # an app added after the users
    one, bulk = _directory_fleet(), _directory_fleet()
    for u, z, a in zip(ids, zones, apps):
        one.add_user(u, home_zone=z, apps=a)
    bulk.add_users(ids, home_zones=zones, apps=apps)
    for s in (one, bulk):
        s.add_app("later", pools=["imaging"])
    order = rng.permutation(300)
    for k, t in zip(order, np.arange(300) * 0.5):
        for app in ("pr", "img", "later"):
            a, b = one.launch(ids[k], app, now=t), bulk.launch(ids[k], app, now=t)
            assert (a.outcome, a.reason, a.server, a.zone) == (b.outcome, b.reason, b.server, b.zone)
    assert (one.servers() == bulk.servers()).all()
    # one app list for every user
    s = _directory_fleet()
    s.add_users(["a", "b"], apps=["pr"])
    assert s.launch("a", "pr", now=0).outcome == Outcome.PLACED
    assert s.launch("b", "img", now=0).reason == Reason.NOT_ENTITLED


@pytest.mark.parametrize("kwargs, field", [
    (dict(ids=["x", "x"]), "ids[1]"),
    (dict(ids=["x", "known"]), "ids[1]"),
    (dict(ids=["x", None]), "ids[1]"),
    (dict(ids=["x", "y"], home_zones=["Z1"]), "home_zones"),
    (dict(ids=["x", "y"], home_zones=["Z1", ""]), "home_zones[1]"),
    (dict(ids=["x", "y"], apps=[["pr"], [""]]), "apps[1]"),
    (dict(ids=["x", "y"], apps=[["pr"]]), "apps"),
])
def test_add_users_bad_row_names_it_and_adds_nobody(kwargs, field):
    s = _directory_fleet()
    s.add_user("known", apps=["pr"])
    with pytest.raises(usher.UsherError) as e:
        s.add_users(**kwargs)
    assert e.value.field == field
    assert s.launch("x", "pr", now=0).reason == Reason.NOT_ENTITLED  # x was not added
    s.add_users(["x", "y"], apps=["pr"])  # and the ids are still free


@pytest.mark.parametrize("n_changed", [5, 200, "mixed"])
def test_telemetry_batch_equals_one_by_one(n_changed):
    """Batch telemetry (per group: a few paths replayed, or the group's tree
    rebuilt; "mixed": one group of each in the same batch) leaves the same state
    and the same next decisions as the same telemetry one by one."""
    def fleet():
        s = usher.Scheduler(seed=11)
        s.add_pool("cpu", load_rules=["sessions", "cpu", "memory"], cpu_full=80.0)
        s.add_pool("plain")  # sessions only: telemetry moves nothing here
        s.add_pool("vert", load_balancing="vertical", load_rules=["sessions", "cpu"])
        s.add_app("a", pools=["cpu", "plain", "vert"])
        s.add_app("v", pools=["vert"])
        for i in range(300):
            s.add_server(f"s{i}", zone="Z", pool=("cpu", "plain", "vert")[i % 3], max_sessions=30)
        return s

    rng = np.random.default_rng(7 if n_changed == "mixed" else n_changed)
    batch, single = fleet(), fleet()
    names = [f"s{i}" for i in range(300)]
    for t in range(1, 6):
        if n_changed == "mixed":  # most of the cpu pool's group (rebuilt), 4 of vert (replayed)
            rows = np.concatenate([rng.choice(np.arange(0, 300, 3), size=80, replace=False),
                                   rng.choice(np.arange(2, 300, 3), size=4, replace=False)])
        else:
            rows = rng.choice(300, size=n_changed, replace=True)  # repeats allowed: the last wins
        cpu = rng.uniform(0, 100, size=len(rows))
        mem = rng.uniform(0, 100, size=len(rows))
        batch.telemetry_many([names[k] for k in rows], cpu=cpu, mem=mem, now=float(t))
        for k, c, m in zip(rows, cpu, mem):
            single.telemetry(names[k], cpu=float(c), mem=float(m), now=float(t))
        assert (batch.servers() == single.servers()).all()
        for j in range(20):
            app = "v" if j % 4 == 0 else "a"
            a = batch.launch(f"u{t}-{j}", app, now=float(t))
            b = single.launch(f"u{t}-{j}", app, now=float(t))
            assert (a.outcome, a.server, a.load_index) == (b.outcome, b.server, b.load_index)


def test_launch_finds_users_as_the_user_dict_does():
    """launch looks users and endpoints up in its own tables (usher._engine.KeyTable): they
    must name the same user and endpoint as a dict lookup would — equal ids that are other
    objects, long or non-ASCII ids, numpy's str — while users and endpoints
    keep being added (the tables grow and start over several times) and after a copy."""
    s = usher.Scheduler(enforce_entitlement=True, seed=1)
    s.add_pool("P")
    s.add_app("a", ["P"])
    for i in range(40):
        s.add_server(f"s{i}", "Z", "P", max_sessions=100)
    made = []  # (registered id, an equal id that is another object)
    t = 0.0
    for k in range(3000):
        kind = k % 4
        if kind == 0:
            uid, other = f"user-{k}", "".join(["user-", str(k)])
        elif kind == 1:  # longer than a key-table slot holds
            uid, other = f"a-rather-long-user-id-{k}", "".join(["a-rather-long-user-id-", str(k)])
        elif kind == 2:  # not ASCII
            uid, other = f"bénévole-{k}", "".join(["bénévole-", str(k)])
        else:  # a str subclass (numpy's)
            uid, other = f"np-{k}", np.str_(f"np-{k}")
        s.add_user(uid, apps=["a"] if k % 3 else [])
        made.append((uid, other))
        if k % 7 == 0:  # launches interleaved with the additions
            for j in np.random.default_rng(k).integers(0, len(made), size=5):
                uid_j, other_j = made[j]
                t += 1.0
                pc = "".join(["pc-", str((k * 7 + j) % 2500)])  # new endpoints, and known ones again
                d = s.launch(other_j, "a", endpoint=pc, now=t)
                if j % 3 == 0:
                    assert d.reason == Reason.NOT_ENTITLED, (uid_j, d)
                else:
                    assert d.outcome in (Outcome.PLACED, Outcome.SHARED), (uid_j, d)
                    row = s.sessions()[s.sessions()["id"] == d.session][0]
                    assert (row["user"], row["endpoint"]) == (uid_j, pc), (row, uid_j, pc)
                    s.logoff(d.session, now=t)
    for unknown in ("user-1x", "a-rather-long-user-id--1", "bénévole--1", np.str_("np--1")):
        assert s.launch(unknown, "a", now=t).reason == Reason.NOT_ENTITLED
    c = s.copy()
    for k in (1, 2, 2999):
        uid, other = made[k]
        for x in (s, c):
            d = x.launch(other, "a", now=t + 1)
            assert x.sessions()[x.sessions()["id"] == d.session][0]["user"] == uid
    with pytest.raises(usher.InvalidArgument):
        s.launch(["unhashable"], "a", now=t + 2)
    # without entitlement, an unknown user is added by the launch, then found again
    o = usher.Scheduler(seed=1)
    o.add_pool("P")
    o.add_app("a", ["P"])
    o.add_server("s", "Z", "P", max_sessions=5000)
    for k in range(2500):
        d = o.launch(f"walk-in-{k % 1300}", "a", now=float(k))
        assert d.outcome == (Outcome.PLACED if k < 1300 else Outcome.SHARED), (k, d)
    assert len(o.sessions()) == 1300


def test_short_ids_that_share_a_slot_and_its_hash_bits_are_told_apart():
    """A user id of at most 15 ASCII characters keeps its characters in its key-table slot,
    and a lookup with an equal id that is another object (as a broker decodes it from a
    request) compares them there. Two different ids of the same length whose hashes share
    the slot's 32 bits (found among 300,000 candidates) must still name different users:
    the characters decide, not the length or the hash. Ids of 15 and 16 characters, a
    non-ASCII id and a str subclass (kept out of the slot) are found as the dict finds them."""
    by_bits = {}
    pair = None
    for k in range(300_000):
        uid = f"k{k:012d}"
        other = by_bits.setdefault(hash(uid) & 0xFFFFFFFF, uid)
        if other != uid:
            pair = (other, uid)
            break
    assert pair is not None  # 300,000 hashes of 32 bits hold a pair ~10 times in 11

    class Tag(str):
        pass

    s = usher.Scheduler(enforce_entitlement=True, seed=2)
    s.add_pool("P")
    s.add_app("a", ["P"])
    s.add_server("s", "Z", "P", max_sessions=100)
    known = [pair[0], "x" * 15, "y" * 16, "ürsula-ward-7", Tag("tagged-user")]
    s.add_users(known, apps=["a"])
    t = 0.0
    for uid in known:
        t += 1.0
        fresh = uid.encode().decode()  # equal, another object, an exact str
        assert fresh is not uid and fresh == uid
        d = s.launch(fresh, "a", now=t)
        assert d.outcome is Outcome.PLACED, (uid, d)
        assert s.sessions()[s.sessions()["id"] == d.session][0]["user"] == uid
        s.logoff(d.session, now=t)
    for unknown in (pair[1], "x" * 14 + "y", "y" * 15, "tagged-use"):
        assert s.launch(unknown.encode().decode(), "a", now=t + 1).reason == Reason.NOT_ENTITLED, unknown


def test_launch_finds_users_in_a_large_key_table():
    """A key table of 2 MiB or more (here 60,000 users: 262,144 slots of 32 bytes) is
    allocated apart (2 MiB-aligned, huge pages asked for, zeroed): every user is still
    found, as the user dict would find them, and an unknown one is not."""
    n = 60_000
    s = usher.Scheduler(enforce_entitlement=True, seed=3)
    s.add_pool("P")
    s.add_app("a", ["P"])
    s.add_server("s", "Z", "P", max_sessions=n)
    ids = [f"u{k:06d}" for k in range(n)]
    s.add_users(ids, apps=[["a"] if k % 5 else [] for k in range(n)])
    rng = np.random.default_rng(3)
    t = 0.0
    for k in rng.integers(0, n, size=400).tolist():
        t += 1.0
        d = s.launch("".join(["u", f"{k:06d}"]), "a", now=t)  # an equal id, another object
        if k % 5 == 0:
            assert d.reason == Reason.NOT_ENTITLED, (k, d)
        else:
            assert d.outcome in (Outcome.PLACED, Outcome.SHARED), (k, d)
            assert s.sessions()[s.sessions()["id"] == d.session][0]["user"] == ids[k]
    assert s.launch("u-none", "a", now=t + 1).reason == Reason.NOT_ENTITLED


def test_kernels_compile_with_a_high_inline_threshold_then_restore_it(monkeypatch):
    """LLVM's inline threshold is process-wide: the kernels' compile raises it and puts
    numba's -O3 value back afterwards, also when the compile fails."""
    from usher.core import kernels

    calls = []
    monkeypatch.setattr(kernels.llvm, "set_option", lambda name, opt: calls.append(opt))
    with kernels._inline_threshold(kernels.INLINE_THRESHOLD):
        assert calls == [f"-inline-threshold={kernels.INLINE_THRESHOLD}"]
    assert calls[-1] == "-inline-threshold=250"
    calls.clear()
    with pytest.raises(RuntimeError):
        with kernels._inline_threshold(1000):
            raise RuntimeError("compile failed")
    assert calls == ["-inline-threshold=1000", "-inline-threshold=250"]


def _index_ir(fn):
    """The optimised LLVM IR of ``fn(array, i)`` compiled now for (int64[:], int64),
    without bounds checks whatever NUMBA_BOUNDSCHECK says (CI runs the suite once
    with them on)."""
    import numba

    forced = numba.config.BOUNDSCHECK  # NUMBA_BOUNDSCHECK overrides the decorator's flag
    numba.config.BOUNDSCHECK = None
    try:
        compiled = numba.njit(boundscheck=False)(fn)
        compiled(np.arange(4, dtype=np.int64), 1)
    finally:
        numba.config.BOUNDSCHECK = forced
    return next(iter(compiled.inspect_llvm().values()))


def _reader(module):
    """A fresh ``read(a, i) -> a[i]`` whose ``__module__`` is ``module`` (numba mangles the
    module into the compiled function's name)."""
    namespace = {"__name__": module}
    exec("def read(a, i):\n    return a[i]\n", namespace)
    return namespace["read"]


def _wraps(ir):
    return "icmp slt" in ir or "select" in ir


def test_kernels_compile_without_negative_index_wraparound_then_restore_it():
    """Inside the kernels' compile an int64 index of a function of the engine package is
    used as given (no ``i < 0`` compare and select, as Cython's wraparound=False); a
    function of any other module compiled meanwhile keeps numba's indexing; outside it
    numba's own indexing is back, also after a failed compile."""
    from numba.np import arrayobj
    from usher.core import kernels

    original = arrayobj.fix_integer_index
    with kernels._no_negative_indices():
        plain = _index_ir(_reader("usher.core.probe"))
        other = _index_ir(_reader("broker.app"))
    assert not _wraps(plain)
    assert _wraps(other)
    assert _wraps(_index_ir(_reader("usher.core.probe")))  # numba's wraparound, put back
    assert arrayobj.fix_integer_index is original
    with pytest.raises(RuntimeError):
        with kernels._no_negative_indices():
            raise RuntimeError("compile failed")
    assert arrayobj.fix_integer_index is original
    assert _wraps(_index_ir(_reader("usher.core.probe")))


def test_kernel_first_leaf_is_the_layout_formula():
    """The kernels' first leaf (a multiplication by the inverse of 7) is the layout's
    ``(cap + 6) // 7`` for every power of eight a tree can have."""
    import numba
    from usher.core import state as st
    from usher.core.tree import first_leaf

    compiled = numba.njit(lambda cap: first_leaf(cap))
    for level in range(21):
        cap = 8**level
        assert compiled(cap) == st.tree_first_leaf(cap) == (cap - 1) // 7 + 1




def test_block_best_is_the_leftmost_smallest_entry():
    """``tree._block_best`` (the vector compare of one tree level) against a plain
    min over the eight (key, tiebreak) pairs, the lane's entry replaced: the smallest
    key, then the smallest tiebreak, then the leftmost lane; with ties on keys, on
    both (empty entries), INF keys, negative tiebreaks and every lane replaced."""
    import numba
    from usher.core import state as st
    from usher.core.tree import _block_best

    @numba.njit
    def best(block, lane, key, tb):
        return _block_best(block.ctypes.data, lane, key, tb)

    rng = np.random.default_rng(3)
    inf = st.INF_KEY
    for trial in range(3000):
        block = np.full(st.N_TREE_COLUMNS, -1, dtype=np.int64)
        small = trial % 3 == 0  # few distinct values: many ties
        keys = rng.integers(0, 3 if small else 1 << 40, size=8)
        tbs = rng.integers(-3 if small else -(1 << 60), 3 if small else 1 << 60, size=8)
        empty = rng.random(8) < 0.2
        keys[empty], tbs[empty] = inf, inf
        keys[rng.random(8) < 0.1] = inf  # not a candidate, with a real tiebreak
        block[st.TREE_KEY:st.TREE_KEY + 8] = keys
        block[st.TREE_TB:st.TREE_TB + 8] = tbs
        lane = int(rng.integers(0, 8))
        key, tb = (inf, inf) if rng.random() < 0.1 else (int(rng.integers(0, 3)), int(rng.integers(-3, 3)))
        pairs = list(zip(keys.tolist(), tbs.tolist()))
        pairs[lane] = (key, tb)
        want = min(range(8), key=lambda k: pairs[k])  # min keeps the first of equals
        assert best(block, lane, key, tb) == (want, *pairs[want]), (trial, pairs, lane)
        assert block[st.TREE_KEY + lane] == keys[lane]  # memory is read, not written
