"""The user ids' only index is the scheduler's key table (usher._engine.KeyTable over
``_user_names``): no dict beside it. Whatever adds, creates, forgets or copies users,
every id is found at its index and no other id is found — checked against a plain
dict after every step of random sequences of directory additions (one and many),
removals, launches by unseen ids (users a launch creates), logoffs, sweeps, copies
and pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import usher
from usher import Outcome

IDS = [f"u{k}" for k in range(24)] + ["a-rather-long-user-id-of-the-ward", "bénévole-7"]
PCS = [f"pc-{k}" for k in range(12)] + ["a-workstation-name-longer-than-a-slot"]


def _scheduler() -> usher.Scheduler:
    s = usher.Scheduler(seed=4)  # entitlement off: a launch by an unseen id creates the user
    s.add_pool("P")
    s.add_app("a", ["P"])
    for i in range(3):
        s.add_server(f"s{i}", "Z", "P", max_sessions=1000)
    return s


class UserKeys(RuleBasedStateMachine):
    """The scheduler's users against a dict: id -> (kind, live sessions)."""

    @initialize()
    def start(self):
        self.s = _scheduler()
        self.ref: dict[str, str] = {}  # id -> "directory" | "implicit"
        self.sessions: dict[int, str] = {}  # live session -> its user
        self.t = 0.0

    def _tick(self) -> float:
        self.t += 1.0
        return self.t

    def _live(self, uid: str) -> int:
        return sum(1 for u in self.sessions.values() if u == uid)

    @rule(uid=st.sampled_from(IDS))
    def add_user(self, uid):
        if uid in self.ref:
            with pytest.raises(usher.DuplicateName):
                self.s.add_user(uid, apps=["a"])
        else:
            self.s.add_user(uid, apps=["a"])
            self.ref[uid] = "directory"

    @rule(uids=st.lists(st.sampled_from(IDS), min_size=1, max_size=6, unique=True))
    def add_users(self, uids):
        if any(u in self.ref for u in uids):
            with pytest.raises(usher.DuplicateName):
                self.s.add_users(uids, apps=["a"])
        else:
            self.s.add_users(uids, apps=["a"])
            self.ref.update((u, "directory") for u in uids)

    @rule(uid=st.sampled_from(IDS))
    def remove_user(self, uid):
        if uid not in self.ref:
            with pytest.raises(usher.UnknownUser):
                self.s.remove_user(uid)
        elif self._live(uid):
            with pytest.raises(usher.InvalidState):
                self.s.remove_user(uid)
        else:
            self.s.remove_user(uid)
            del self.ref[uid]

    @rule(uid=st.sampled_from(IDS), fresh=st.booleans(), pc=st.none() | st.sampled_from(PCS))
    def launch(self, uid, fresh, pc):
        # an equal id that is another object, as a broker decodes it from a request
        d = self.s.launch(uid.encode().decode() if fresh else uid, "a", endpoint=pc, now=self._tick())
        assert d.outcome in (Outcome.PLACED, Outcome.SHARED), d
        self.ref.setdefault(uid, "implicit")
        if d.outcome == Outcome.PLACED:
            self.sessions[d.session_id] = uid
        assert self.s.sessions()[self.s.sessions()["id"] == d.session_id][0]["user"] == uid

    @rule(uids=st.lists(st.sampled_from(IDS), min_size=1, max_size=8), data=st.data())
    def launch_many(self, uids, data):
        pcs = data.draw(st.none() | st.lists(st.none() | st.sampled_from(PCS), min_size=len(uids),
                                             max_size=len(uids)), label="endpoints")
        b = self.s.launch_many([u.encode().decode() for u in uids], ["a"] * len(uids), endpoints=pcs,
                               now=self._tick())
        for uid, o, sid in zip(uids, b.outcome.tolist(), b.session.tolist()):
            self.ref.setdefault(uid, "implicit")
            if o == int(Outcome.PLACED):
                self.sessions[sid] = uid

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def logoff(self, data):
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        self.s.logoff(sid, now=self._tick())
        del self.sessions[sid]

    @rule()
    def sweep(self):
        with self.s._locked():
            self.s._sweep()
        for uid, kind in list(self.ref.items()):
            if kind == "implicit" and not self._live(uid):
                del self.ref[uid]

    @rule(how=st.sampled_from(["copy", "pickle"]))
    def replace(self, how):
        self.s = self.s.copy() if how == "copy" else pickle.loads(pickle.dumps(self.s))

    @invariant()
    def every_endpoint_found_at_its_index(self):
        s = self.s
        names = s._endpoint_names
        known = {e: i for i, e in enumerate(names) if e is not None}
        with s._locked():
            for pc in PCS:
                assert s._find_endpoint(pc.encode().decode()) == known.get(pc, -1), pc
        for row in s.sessions():
            assert row["endpoint"] is None or row["endpoint"] in known, row

    @invariant()
    def every_id_found_at_its_index(self):
        s = self.s
        assert sorted(s.user_ids) == sorted(self.ref)
        with s._locked():
            for uid in IDS:
                u = s._find_user(uid.encode().decode())
                if uid in self.ref:
                    assert u >= 0 and s._user_names[u] == uid, (uid, u)
                else:
                    assert u == -1, (uid, u)
        if self.ref:
            ids = sorted(self.ref)
            for column in (ids, tuple(ids), np.array(ids, dtype=object), np.array(ids)):
                assert [s._user_names[u] for u in s.user_indices(column).tolist()] == ids
            unknown = [i for i in IDS if i not in self.ref]
            if unknown:
                with pytest.raises(usher.UnknownUser) as e:
                    s.user_indices(ids + [unknown[0]])
                assert e.value.field == f"users[{len(ids)}]"


TestUserKeys = UserKeys.TestCase


def test_a_state_written_with_a_user_dict_restores():
    """A pickled scheduler state from when the user ids had a dict beside the key table
    (its ``_users`` entry) restores: the entry is dropped, the key table is rebuilt from
    the name list, and directory and implicit users are found as before."""
    s = _scheduler()
    s.add_users(["d1", "d2"], apps=["a"])
    d = s.launch("walk-in", "a", now=1.0)
    assert d.outcome == Outcome.PLACED
    with s._locked():
        state = s._state()
    state["_users"] = {u: i for i, u in enumerate(s._user_names) if u is not None}
    r = usher.Scheduler._from_state(state)
    assert "_users" not in r.__dict__
    assert sorted(r.user_ids) == ["d1", "d2", "walk-in"]
    assert r.launch("walk-in", "a", now=2.0).session_id == d.session_id  # shared into its session
    with pytest.raises(usher.DuplicateName):
        r.add_user("walk-in")
    assert r.user_config("d2")["apps"] == ["a"]


def test_many_one_off_users_leave_the_key_table_as_the_names():
    """Thousands of users created by launches and forgotten by sweeps (the table's
    insertions and backward-shift deletions, its growth and rebuilds): the table finds
    exactly the ids ``_user_names`` holds, each at its index."""
    s = _scheduler()
    s.add_users([f"dir{k}" for k in range(300)], apps=["a"])
    rng = np.random.default_rng(5)
    live: list[int] = []
    t = 0.0
    for k in range(12_000):
        t += 1.0
        d = s.launch(f"once{k}", "a", now=t)
        live.append(d.session_id)
        if len(live) > 150:
            s.logoff(live.pop(int(rng.integers(len(live)))), now=t)
    with s._locked():
        names = s._user_names
        kept = [u for u in names if u is not None]
        assert len(kept) < 5_000  # sweeps ran: the one-off users are forgotten
        for i, uid in enumerate(names):
            if uid is not None:
                assert s._find_user(uid.encode().decode()) == i
        for k in range(12_000):
            uid = f"once{k}"
            assert (s._find_user(uid) >= 0) == (uid in kept)


def test_a_forgotten_endpoint_leaves_the_key_table_and_its_index_is_reused():
    """An endpoint idle over ENDPOINT_IDLE_SWEEPS + 1 sweeps that each followed new
    endpoints is forgotten: the key table no longer finds it (the table is small here,
    so no rebuild hides a deletion it missed), and the next new endpoint takes its index
    under its own name."""
    from usher import _engine

    s = _scheduler()
    t = 0.0
    d = s.launch("regular", "a", endpoint="desk", now=t)
    s.logoff(d.session_id, now=t)
    with s._locked():
        desk = s._find_endpoint("desk")
    assert desk >= 0
    for k in range(_engine.ENDPOINT_IDLE_SWEEPS + 1):
        t += 1.0
        d = s.launch(f"walk-in-{k}", "a", endpoint=f"kiosk-{k}", now=t)  # a new endpoint each time
        with s._locked():
            assert s._find_endpoint("desk") == desk  # idle, not yet forgotten
            s._sweep()
        s.logoff(d.session_id, now=t)
    with s._locked():
        assert s._endpoint_names[desk] is None
        assert s._find_endpoint("desk") == -1
    d = s.launch("newcomer", "a", endpoint="new-desk", now=t + 1)
    with s._locked():
        assert s._find_endpoint("new-desk") == desk and s._find_endpoint("desk") == -1
    assert s.session(d.session_id)["endpoint"] == "new-desk"
