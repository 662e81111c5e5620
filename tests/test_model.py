"""Model-based test: ``usher.Scheduler`` and the reference scheduler
(tests/reference.py) driven side by side by a Hypothesis state machine.

Design: tiny domains (3-6 servers, 2 zones, a horizontal and a vertical pool,
2-3 apps, 4 named users plus one that appears on first launch, max_sessions
1-3, a licence cap below the user count) so that ties, full servers, tolerance
limits, licence exhaustion and slow servers (a pool's slow rule with a low
factor and one or two samples) happen within a few steps. A shared logical clock
``now`` only moves forward, sometimes past ``sinbin_seconds`` and
``pending_timeout``. Every call goes through :meth:`SchedulerMachine.both`: the
engine and the reference must both return equal results or both raise the same
exception class (bidict's ``assert_calls_match``), and a call that raises must
leave both states untouched. Decisions are compared on outcome, reason, server,
zone, load index (and the zone choice of placements); engine session ids are
mapped to the reference's own ids. The invariants run after every step.
``LargeFleetMachine`` runs the same rules on 12-30 servers.

Two things the machine deliberately avoids, each pinned by a plain test at the
end of this file instead (so that one known divergence does not hide others):
raising ``pending_timeout`` while old launching sessions exist, and reading
the views right after lowering it; and ``sinbin_seconds = 0``.

Run longer with ``USHER_TEST_PROFILE=thorough``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import usher
from reference import ReferenceScheduler
from usher import Outcome

ZONES = ("z1", "z2")
LOCATIONS = (None, "z1", "z2", "z3")  # z3: a zone no server is in
ENDPOINTS = (None, "e1", "e2")
USERS = ("u0", "u1", "u2", "u3", "u4")  # u4 is never added: created by its first launch
APP_NAMES = ("a0", "a1", "a2")
LATE_APP = "late"  # added during the run; users may be entitled to it from the start
SINBIN = 30.0
PENDING = 50.0
BOGUS_IDS = (987_654_321, 10**9)  # (engine, reference): a session id neither ever issued
NAN = float("nan")
INF = float("inf")

ZONE_PREFERENCES = [
    ("app_home", "user_home", "user_location"),
    ("user_location",),
    ("user_home", "user_location"),
    ("user_location", "app_home"),
    (),
]
LOAD_RULES = [
    ("sessions",),
    ("sessions", "cpu"),
    ("cpu", "memory"),
    ("sessions", "cpu", "memory"),
    ("sessions", "disk_queue", "custom"),
]
# telemetry values, a few of them invalid (NaN, out of range)
CPU_VALUES = [0.0, 0.3, 5.1, 6.3, 30.0, 45.0, 89.9, 90.0, 100.0, NAN, -1.0, 100.5]
DQ_VALUES = [0.0, 2.0, 8.0, 16.0, -0.1, INF]
CUSTOM_VALUES = [0.0, 200.5, 9999.9, 10000.0, 10000.5, -1.0]


def pool_strategy(load_balancing, external):
    return st.fixed_dictionaries(
        dict(
            load_balancing=st.just(load_balancing),
            zone_preference=st.sampled_from(ZONE_PREFERENCES),
            failover=st.booleans(),
            session_reconnection=st.sampled_from(["always", "disconnected_only", "same_endpoint"]),
            reconnect_in_maintenance=st.booleans(),
            external_access=st.just(external),
            logon_tolerance=st.integers(0, 2),
            tolerance_is_hard=st.booleans(),
            max_sessions_per_user=st.sampled_from([None, None, 1, 2]),
            load_rules=st.sampled_from(LOAD_RULES),
            cpu_full=st.sampled_from([90.0, 30.0]),
            memory_full=st.sampled_from([90.0, 50.0]),
            disk_queue_full=st.sampled_from([8.0, 3.0]),
            slow_logon_factor=st.sampled_from([None, 1.5, 1.5, 3.0]),
            slow_min_samples=st.integers(1, 2),
        )
    )


def app_strategy():
    return st.fixed_dictionaries(
        dict(
            pools=st.sampled_from([["H"], ["V"], ["H", "V"], ["V", "H"]]),
            home_zone=st.sampled_from([None, "z1", "z2"]),
            tag_restriction=st.sampled_from([None, None, None, "gpu", ("gpu", "ssd")]),
            max_instances_total=st.sampled_from([None, None, 1, 3]),
            max_instances_per_user=st.sampled_from([None, None, 1, 2]),
        )
    )


def server_strategy():
    return st.fixed_dictionaries(
        dict(
            zone=st.sampled_from(ZONES),
            pool=st.sampled_from(["H", "V"]),
            tags=st.sampled_from([(), ("gpu",), ("gpu", "ssd"), ("gpu", "ssd"), ("ssd",)]),
            max_sessions=st.integers(1, 3),
            weight=st.sampled_from([1, 50, 100, 100, 300]),
            power=st.sampled_from(["on"] * 9 + ["off", "booting"]),
            registered=st.sampled_from([True] * 9 + [False]),
            mode=st.sampled_from(["enabled"] * 8 + ["drain", "maintenance"]),
        )
    )


def snapshot(s):
    """Everything a failed call must leave as it was."""
    return (s.servers().tolist(), s.sessions().tolist(), s.licences_in_use, s.licence_cap, s.now)


def key(d):
    return (d.outcome, d.reason, d.server, d.zone, d.load_index)


SERVER_FIELDS = ("index", "zone", "pool", "max_sessions", "weight", "power", "registered", "mode",
                 "sessions", "pending", "load_index", "cpu", "mem", "disk_queue", "custom", "sinbinned",
                 "picks", "slow", "logons", "logon_ewma")


class SchedulerMachine(RuleBasedStateMachine):
    """Engine and reference, step by step."""

    #: how many servers the fleet starts with, and the names server rules draw
    #: from (one more than the largest fleet: unknown until added)
    N_SERVERS = (3, 6)
    SERVER_NAMES = tuple(f"s{i}" for i in range(7))

    def __init__(self):
        super().__init__()
        self.now = 0.0
        self.e = None
        self.r = None
        self.e2r = {}  # engine session id -> reference session id
        self.r2e = {}
        self.ids = []  # every session ever placed: (engine id, reference id)
        self.launch_ok = {}  # engine session id -> hard-constraint violations at launch ([] = none)
        self.licence_bound = None

    def clock(self):
        return self.now

    # ------------------------------------------------------------ helpers
    def both(self, call_e, call_r=None):
        """Call both schedulers; both return (results compared by the caller)
        or both raise the same class, and a raising call changes nothing."""
        call_r = call_r or call_e
        before = (snapshot(self.e), snapshot(self.r))
        out = []
        for s, call in ((self.e, call_e), (self.r, call_r)):
            try:
                out.append((call(s), None))
            except usher.UsherError as exc:
                out.append((None, exc))
        (res_e, exc_e), (res_r, exc_r) = out
        assert type(exc_e) is type(exc_r), (
            f"engine {'raised ' + repr(exc_e) if exc_e else 'returned ' + repr(res_e)}, "
            f"reference {'raised ' + repr(exc_r) if exc_r else 'returned ' + repr(res_r)}"
        )
        if exc_e is not None:
            assert snapshot(self.e) == before[0], f"engine state changed by a failed call ({exc_e!r})"
            assert snapshot(self.r) == before[1], f"reference state changed by a failed call ({exc_r!r})"
            return False, None, None
        return True, res_e, res_r

    def tick(self, data):
        """``now`` for the next call: the shared clock, or now and then None,
        which makes both schedulers read their ``clock`` (the same value)."""
        return data.draw(st.sampled_from([self.now] * 9 + [None]), label="now")

    def draw_session(self, data):
        """(engine id, reference id): mostly live sessions, sometimes ended or unknown."""
        live = [(e, r) for e, r in self.ids if r in self.live_ref_ids()]
        choices = []
        if live:
            choices.append(st.sampled_from(live))
        if self.ids:
            choices.append(st.sampled_from(self.ids))
        choices.append(st.just(BOGUS_IDS))
        if live:
            choices.append(st.sampled_from(live))
        return data.draw(st.one_of(*choices), label="session")

    def draw_server(self, data):
        return data.draw(st.sampled_from(self.SERVER_NAMES), label="server")

    def live_ref_ids(self):
        return {int(i) for i in self.r.sessions()["id"]}

    def record_session(self, e_id, r_id):
        if e_id in self.e2r:
            assert self.e2r[e_id] == r_id, ("engine id mapped to two reference ids", e_id, r_id)
        else:
            assert r_id not in self.r2e, ("reference id mapped to two engine ids", e_id, r_id)
            self.e2r[e_id] = r_id
            self.r2e[r_id] = e_id
            self.ids.append((e_id, r_id))

    def compare_decision(self, de, dr, where=""):
        assert key(de) == key(dr), f"{where}engine {de!r} != reference {dr!r}"
        event(f"launch: {de.outcome}" + (f" {de.reason}" if de.reason is not None else ""))
        if de.outcome == Outcome.REJECTED:
            assert de.session is None and dr.session is None
            return
        if de.outcome == Outcome.PLACED:
            assert de.zone_choice == dr.zone_choice, (where, de.zone_choice, dr.zone_choice)
            assert de.session not in self.e2r, f"{where}placed into an existing session id {de.session}"
            self.record_session(de.session, dr.session)
        else:
            assert self.e2r.get(de.session) == dr.session, (
                f"{where}{de.outcome} into engine session {de.session} "
                f"(reference {self.e2r.get(de.session)}), reference {dr.session}")

    def hard_violations(self, rows, sessions, now, d, user, app, location, external, holders_before,
                        had_sessions):
        """What a placement broke of the hard rules, judged from the engine's
        server and session rows just before the launch and the test's own
        configuration. (The rows' ``pending`` is as of the previous operation,
        so pending logons are counted here at the launch's time.)"""
        bad = []
        row = rows.get(d.server)
        if row is None:
            return ["unknown server"]
        pending = sum(1 for x in sessions if x["server"] == d.server and x["state"] == "launching"
                      and x["t_launch"] + self.e.pending_timeout > now)
        acfg = self.apps_cfg[app]
        pcfg = self.pools_cfg[row["pool"]]
        if row["power"] != "on" or not row["registered"] or row["mode"] != "enabled":
            bad.append("not available")
        if row["sessions"] >= row["max_sessions"]:
            bad.append("full (max_sessions)")
        if row["load_index"] >= 10000:
            bad.append("load index 10000")
        restriction = acfg["tag_restriction"]
        restriction = set() if restriction is None else {restriction} if isinstance(restriction, str) \
            else set(restriction)
        if not restriction <= set(row["tags"]):
            bad.append("tags")
        if row["pool"] not in acfg["pools"] or (external and not pcfg["external_access"]):
            bad.append("pool not allowed")
        zones = []
        for pref in pcfg["zone_preference"]:
            z = {"user_location": location, "user_home": self.user_home.get(user),
                 "app_home": acfg["home_zone"]}[pref]
            if z is not None and z not in zones:
                zones.append(z)
        if zones and not pcfg["failover"] and row["zone"] not in zones:
            bad.append("zone out of reach")
        if pcfg["tolerance_is_hard"] and pending >= pcfg["logon_tolerance"]:
            bad.append("hard logon tolerance")
        cap = self.e.licence_cap
        if not had_sessions and cap is not None and holders_before >= cap:
            bad.append("licence")
        if self.e.enforce_entitlement and app not in self.user_apps.get(user, ()):
            bad.append("not entitled")
        return bad

    def engine_launch(self, s, user, app, location, endpoint, external, now):
        """One engine launch, recording the hard-constraint check of a placement."""
        rows = {r["name"]: r for r in s.servers()}
        sessions = s.sessions()
        holders = s.licences_in_use
        had = any(r["user"] == user for r in sessions)
        d = s.launch(user, app, location=location, endpoint=endpoint, external=external, now=now)
        if d.outcome == Outcome.PLACED:
            self.launch_ok[d.session] = self.hard_violations(
                rows, sessions, self.now if now is None else now, d, user, app, location, external,
                holders, had)
        if user not in self.user_home:
            self.user_home[user] = None
        return d

    # ------------------------------------------------------------ set-up
    @initialize(data=st.data())
    def setup(self, data):
        draw = data.draw
        kw = dict(
            enforce_entitlement=draw(st.booleans(), label="enforce"),
            seed=draw(st.integers(0, 3), label="seed"),
            licences=draw(st.sampled_from([None, 2, 3]), label="licences"),
            sinbin_seconds=SINBIN,
            pending_timeout=PENDING,
            clock=self.clock,
        )
        self.e = usher.Scheduler(**kw)
        self.r = ReferenceScheduler(**kw)
        self.licence_bound = kw["licences"]
        self.pools_cfg = {
            "H": draw(pool_strategy("horizontal", False), label="pool H"),
            "V": draw(pool_strategy("vertical", True), label="pool V"),
        }
        for name, cfg in self.pools_cfg.items():
            assert self.both(lambda s: s.add_pool(name, **cfg))[0]
        n_apps = draw(st.integers(2, 3), label="n_apps")
        self.apps_cfg = {}
        for name in APP_NAMES[:n_apps]:
            cfg = draw(app_strategy(), label=name)
            self.apps_cfg[name] = cfg
            assert self.both(lambda s: s.add_app(name, **cfg))[0]
        self.late_cfg = draw(app_strategy(), label="late app")
        self.user_home = {}
        self.user_apps = {}
        for u in USERS[:4]:
            home = draw(st.sampled_from([None, "z1", "z2"]), label=f"{u} home")
            apps = [a for a in list(self.apps_cfg) + [LATE_APP]
                    if draw(st.sampled_from([True, True, True, False]), label=f"{u} entitled to {a}")]
            self.user_home[u] = home
            self.user_apps[u] = set(apps)
            assert self.both(lambda s: s.add_user(u, home_zone=home, apps=apps))[0]
        n_servers = draw(st.integers(*self.N_SERVERS), label="n_servers")
        for i in range(n_servers):
            cfg = draw(server_strategy(), label=f"s{i}")
            ok, ie, ir = self.both(lambda s: s.add_server(f"s{i}", now=0.0, **cfg))
            assert ok and ie == ir == i

    # ------------------------------------------------------------ time
    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 5.0, SINBIN + 1.0, PENDING + 1.0, PENDING, SINBIN]))
    def advance(self, dt):
        self.now += dt

    # ------------------------------------------------------------ launches
    @rule(data=st.data(), user=st.sampled_from(USERS), location=st.sampled_from(LOCATIONS),
          endpoint=st.sampled_from(ENDPOINTS), external=st.sampled_from([False, False, True]))
    def launch(self, data, user, location, endpoint, external):
        app = data.draw(st.sampled_from(list(self.apps_cfg)), label="app")
        now = self.tick(data)
        ok, de, dr = self.both(
            lambda s: self.engine_launch(s, user, app, location, endpoint, external, now),
            lambda s: s.launch(user, app, location=location, endpoint=endpoint, external=external, now=now),
        )
        assert ok
        self.compare_decision(de, dr)

    @precondition(lambda self: self.e is not None and self.e.live_sessions > 0)
    @rule(data=st.data(), endpoint=st.sampled_from(ENDPOINTS), external=st.sampled_from([False, False, True]))
    def relaunch(self, data, endpoint, external):
        """A user with a live session launches again: reconnect, roam or share."""
        row = data.draw(st.sampled_from(list(self.e.sessions())), label="session row")
        app = data.draw(st.sampled_from(sorted(row["apps"]) + list(self.apps_cfg)), label="app")
        user = row["user"]
        now = self.tick(data)
        ok, de, dr = self.both(
            lambda s: self.engine_launch(s, user, app, None, endpoint, external, now),
            lambda s: s.launch(user, app, endpoint=endpoint, external=external, now=now),
        )
        assert ok
        self.compare_decision(de, dr)

    @rule(data=st.data(), n=st.integers(1, 4))
    def launch_many(self, data, n):
        rows = [
            (data.draw(st.sampled_from(USERS)), data.draw(st.sampled_from(list(self.apps_cfg))),
             data.draw(st.sampled_from(LOCATIONS)), data.draw(st.sampled_from(ENDPOINTS)),
             data.draw(st.sampled_from([False, False, True])))
            for _ in range(n)
        ]
        users, apps, locs, eps, ext = (list(c) for c in zip(*rows))
        now = self.now
        # one time (the compiled path; external as a list or a bool array) or a time per
        # row (the general path)
        when = data.draw(st.sampled_from(["one", "one-array", "per-row"]), label="times")
        ext_arg = np.array(ext) if when == "one-array" else ext
        now_arg = [now] * n if when == "per-row" else now
        # the same launches one by one, on a copy of the engine
        one_by_one = self.e.copy()
        singles = [self.engine_launch(one_by_one, u, a, loc, ep, x, now) for u, a, loc, ep, x in rows]
        ok, be, br = self.both(
            lambda s: s.launch_many(users, apps, locations=locs, endpoints=eps, external=ext_arg, now=now_arg))
        assert ok
        assert len(be) == len(br) == n
        assert be.outcome.tolist() == br.outcome.tolist() and be.reason.tolist() == br.reason.tolist()
        for i, d in enumerate(singles):
            b = be[i]
            assert (b.outcome, b.reason, b.server, b.session, b.zone, b.load_index) == (
                d.outcome, d.reason, d.server, d.session, d.zone, d.load_index), (
                f"launch_many row {i}: batch {b!r}, one by one {d!r}")
            assert int(be.outcome[i]) == int(b.outcome)
            assert int(be.load_index[i]) == (-1 if b.load_index is None else b.load_index)
            self.compare_decision(b, br[i], where=f"launch_many row {i}: ")
        assert one_by_one.servers().tolist() == self.e.servers().tolist()
        assert one_by_one.sessions().tolist() == self.e.sessions().tolist()

    @precondition(lambda self: self.e is not None and bool(set(USERS) & set(self.e.user_ids)))
    @rule(data=st.data(), n=st.integers(1, 4))
    def launch_many_compiled(self, data, n):
        """``launch_many`` on user indices or known ids (a list or a tuple), app
        indices or names (a list or a tuple), zone names or none, endpoint names
        (None entries among them) or none, and one time: the engine's compiled batch
        path, against the reference's launch_many on the names and against the same
        launches one by one."""
        known = [u for u in USERS if u in set(self.e.user_ids)]
        users = [data.draw(st.sampled_from(known)) for _ in range(n)]
        apps = [data.draw(st.sampled_from(list(self.apps_cfg))) for _ in range(n)]
        locs = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(LOCATIONS), min_size=n, max_size=n)),
                         label="locations")
        eps = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(ENDPOINTS), min_size=n, max_size=n)),
                        label="endpoints")
        now = self.now
        one_by_one = self.e.copy()
        singles = [self.engine_launch(one_by_one, u, a, None if locs is None else locs[k],
                                      None if eps is None else eps[k], False, now)
                   for k, (u, a) in enumerate(zip(users, apps))]
        users_idx, apps_idx = self.e.user_indices(users), self.e.app_indices(apps)
        users_arg = data.draw(st.sampled_from([users_idx, users, tuple(users)]), label="users as")
        apps_arg = data.draw(st.sampled_from([apps_idx, apps, tuple(apps)]), label="apps as")
        ok, be, br = self.both(lambda s: s.launch_many(users_arg, apps_arg, locations=locs, endpoints=eps, now=now),
                               lambda s: s.launch_many(users, apps, locations=locs, endpoints=eps, now=now))
        assert ok
        for i, d in enumerate(singles):
            b = be[i]
            assert (b.outcome, b.reason, b.server, b.session, b.zone, b.load_index) == (
                d.outcome, d.reason, d.server, d.session, d.zone, d.load_index), (
                f"launch_many_compiled row {i}: batch {b!r}, one by one {d!r}")
            self.compare_decision(b, br[i], where=f"launch_many_compiled row {i}: ")
        assert one_by_one.servers().tolist() == self.e.servers().tolist()
        assert one_by_one.sessions().tolist() == self.e.sessions().tolist()

    # ------------------------------------------------------------ session operations
    @rule(data=st.data(), op=st.sampled_from(["logon_complete", "logon_complete", "disconnect", "disconnect",
                                              "logoff", "launch_failed"]))
    def session_op(self, data, op):
        e_id, r_id = self.draw_session(data)
        now = self.tick(data)
        ok, re, rr = self.both(lambda s: getattr(s, op)(e_id, now=now),
                               lambda s: getattr(s, op)(r_id, now=now))
        assert re == rr

    @precondition(lambda self: self.e is not None and self.e.live_sessions > 0)
    @rule(data=st.data(), dt=st.sampled_from([1.0, 4.0, 12.0, 40.0]), end=st.booleans())
    def timed_logon(self, data, dt, end):
        """A launching session completes its logon ``dt`` later (then perhaps logs
        off): logons of different lengths, so servers of a pool with the slow rule
        become slow and recover."""
        launching = [int(r["id"]) for r in self.e.sessions() if r["state"] == "launching" and int(r["id"]) in self.e2r]
        if not launching:
            return
        e_id = data.draw(st.sampled_from(launching), label="launching session")
        r_id = self.e2r[e_id]
        self.now += dt
        ok, _, _ = self.both(lambda s: s.logon_complete(e_id, now=self.now),
                             lambda s: s.logon_complete(r_id, now=self.now))
        assert ok
        if end:
            assert self.both(lambda s: s.logoff(e_id, now=self.now), lambda s: s.logoff(r_id, now=self.now))[0]

    @rule(data=st.data())
    def close_app(self, data):
        e_id, r_id = self.draw_session(data)
        app = data.draw(st.sampled_from(list(self.apps_cfg) + ["ghost"]), label="app")
        now = self.tick(data)
        ok, re, rr = self.both(lambda s: s.close_app(e_id, app, now=now),
                               lambda s: s.close_app(r_id, app, now=now))
        assert re == rr

    # ------------------------------------------------------------ servers
    @rule(data=st.data())
    def telemetry(self, data):
        server = self.draw_server(data)
        values = dict(
            cpu=data.draw(st.none() | st.sampled_from(CPU_VALUES), label="cpu"),
            mem=data.draw(st.none() | st.sampled_from(CPU_VALUES), label="mem"),
            disk_queue=data.draw(st.none() | st.sampled_from(DQ_VALUES), label="dq"),
            custom=data.draw(st.none() | st.sampled_from(CUSTOM_VALUES), label="custom"),
        )
        now = self.tick(data)
        self.both(lambda s: s.telemetry(server, now=now, **values))

    @rule(data=st.data(), n=st.integers(1, 3))
    def telemetry_many(self, data, n):
        servers = data.draw(st.lists(st.sampled_from(self.SERVER_NAMES[:-1]), min_size=n, max_size=n),
                            label="servers")
        cpu = data.draw(st.none() | st.lists(st.sampled_from(CPU_VALUES), min_size=n, max_size=n), label="cpu")
        mem = data.draw(st.none() | st.lists(st.sampled_from(CPU_VALUES), min_size=n, max_size=n), label="mem")
        self.both(lambda s: s.telemetry_many(servers, cpu=cpu, mem=mem, now=self.now))

    @rule(data=st.data(),
          state=st.sampled_from(["on", "on", "off", "booting", "shutting_down"]))
    def set_power(self, data, state):
        server = self.draw_server(data)
        now = self.tick(data)
        ok, le, lr = self.both(lambda s: s.set_power(server, state, now=now))
        if ok:
            assert isinstance(le, list)
            assert {self.e2r[i] for i in le} == set(lr), (le, lr)

    @rule(data=st.data(), registered=st.booleans())
    def set_registered(self, data, registered):
        server = self.draw_server(data)
        now = self.tick(data)
        self.both(lambda s: s.set_registered(server, registered, now=now))

    @rule(data=st.data(),
          mode=st.sampled_from(["enabled", "enabled", "drain", "maintenance"]))
    def set_mode(self, data, mode):
        server = self.draw_server(data)
        now = self.tick(data)
        self.both(lambda s: s.set_mode(server, mode, now=now))

    @rule(data=st.data(), flag=st.booleans(), n=st.integers(1, 3))
    def set_place_last(self, data, flag, n):
        servers = [self.draw_server(data) for _ in range(n)]
        now = self.tick(data)
        self.both(lambda s: s.set_place_last(servers if n > 1 else servers[0], flag, now=now))

    @rule(data=st.data(), image=st.sampled_from(["img1", "img2", None]))
    def set_image(self, data, image):
        server = self.draw_server(data)
        now = self.tick(data)
        self.both(lambda s: s.set_image(server, image, now=now))

    @rule(data=st.data(), force=st.booleans())
    def remove_server(self, data, force):
        server = self.draw_server(data)
        now = self.tick(data)
        ok, le, lr = self.both(lambda s: s.remove_server(server, force=force, now=now))
        if ok:
            assert {self.e2r[i] for i in le} == set(lr), (le, lr)

    @rule(data=st.data())
    def add_server(self, data):
        server = self.draw_server(data)
        cfg = data.draw(server_strategy(), label="server config")
        ok, ie, ir = self.both(lambda s: s.add_server(server, now=self.now, **cfg))
        if ok:
            assert ie == ir

    # ------------------------------------------------------------ configuration during the run
    @rule(cap=st.sampled_from([None, 0, 1, 2, 3, 4]))
    def set_licences(self, cap):
        assert self.both(lambda s: s.set_licences(cap))[0]
        held = self.e.licences_in_use
        self.licence_bound = None if cap is None else max(cap, held)

    @rule(seed=st.none() | st.integers(0, 3), enforce=st.none() | st.booleans(),
          sinbin=st.none() | st.sampled_from([SINBIN, 10.0, 0.5]))
    def change_settings(self, seed, enforce, sinbin):
        assert self.both(lambda s: s.settings(seed=seed, enforce_entitlement=enforce, sinbin_seconds=sinbin))[0]

    @rule(timeout=st.sampled_from([PENDING, 25.0, 10.0]))
    def change_pending_timeout(self, timeout):
        # Never raised here, and followed by an operation at the current time:
        # test_pending_timeout_change_* cover those two cases on their own.
        timeout = min(timeout, self.e.pending_timeout)
        assert self.both(lambda s: s.settings(pending_timeout=timeout))[0]
        assert self.both(lambda s: s.telemetry_many([], now=self.now))[0]

    @rule(user=st.sampled_from(USERS + ("u5",)), home=st.sampled_from([None, "z1", "z2"]))
    def add_user(self, user, home):
        ok, _, _ = self.both(lambda s: s.add_user(user, home_zone=home, apps=[LATE_APP, "a0"]))
        if ok:
            self.user_home[user] = home
            self.user_apps[user] = {LATE_APP, "a0"}

    @precondition(lambda self: LATE_APP not in self.apps_cfg)
    @rule()
    def add_late_app(self):
        assert self.both(lambda s: s.add_app(LATE_APP, **self.late_cfg))[0]
        self.apps_cfg[LATE_APP] = self.late_cfg

    # ------------------------------------------------------------ bad input (one fault per call)
    @rule(data=st.data(), which=st.integers(0, 13))
    def invalid_call(self, data, which):
        e_id, r_id = self.draw_session(data)
        now = self.now
        server = data.draw(st.sampled_from(self.SERVER_NAMES[:3]), label="server")
        calls = [
            lambda s, i: s.launch("u0", "ghost", now=now),
            lambda s, i: s.launch_many(["u0", "u1"], ["a0", "ghost"], now=now),
            lambda s, i: s.launch_many(["u0", "u1"], ["a0"], now=now),
            lambda s, i: s.add_pool("H"),
            lambda s, i: s.add_pool("W", load_rules=()),
            lambda s, i: s.add_app("a0", ["H"]),
            lambda s, i: s.add_app("W", ["H", "nope"]),
            lambda s, i: s.add_server("s9", "z1", "nope", now=now),
            lambda s, i: s.add_server("s9", "z1", "H", max_sessions=0, now=now),
            lambda s, i: s.set_mode(server, "holiday", now=now),
            lambda s, i: s.set_power("nope", "off", now=now),
            lambda s, i: s.set_licences(-1),
            lambda s, i: s.settings(pending_timeout=NAN),
            lambda s, i: s.telemetry_many(["s0", "s1"], cpu=[1.0, 2.0, 3.0], now=now),
        ]
        call = calls[which]
        ok, _, _ = self.both(lambda s: call(s, e_id), lambda s: call(s, r_id))
        assert not ok, f"bad call {which} did not raise"

    @precondition(lambda self: self.e is not None and (self.e.now or 0.0) >= 1.0)
    @rule(data=st.data(), op=st.integers(0, 6))
    def time_went_backwards(self, data, op):
        e_id, r_id = self.draw_session(data)
        # earlier than the last operation (self.now may have moved on since)
        past = self.e.now - data.draw(st.sampled_from([0.5, 1.0]), label="back")
        calls = [
            lambda s, i: s.launch("u0", "a0", now=past),
            lambda s, i: s.launch_many(["u1"], ["a0"], now=past),
            lambda s, i: s.logoff(i, now=past),
            lambda s, i: s.set_mode("s0", "drain", now=past),
            lambda s, i: s.telemetry("s1", cpu=5.0, now=past),
            lambda s, i: s.add_server("s9", "z1", "H", now=past),
            lambda s, i: s.set_power("s2", "on", now=past),
        ]
        call = calls[op]
        ok, _, _ = self.both(lambda s: call(s, e_id), lambda s: call(s, r_id))
        assert not ok

    # ------------------------------------------------------------ invariants
    @invariant()
    def servers_match(self):
        if self.e is None:
            return
        se, sr = self.e.servers(), self.r.servers()
        assert list(se["name"]) == list(sr["name"])
        if se["slow"].any():
            event("a server is slow")
        for re_, rr in zip(se, sr):
            for f in SERVER_FIELDS:
                assert re_[f] == rr[f], f"server {re_['name']}: {f} engine {re_[f]!r} reference {rr[f]!r}"
            assert set(re_["tags"]) == set(rr["tags"])
            assert re_["sessions"] <= re_["max_sessions"], f"server {re_['name']} over max_sessions"

    @invariant()
    def sessions_match(self):
        if self.e is None:
            return
        se, sr = self.e.sessions(), self.r.sessions()
        by_ref = {int(row["id"]): row for row in sr}
        assert len(se) == len(sr) == self.e.live_sessions
        assert sorted(self.e2r[int(i)] for i in se["id"]) == sorted(by_ref)
        for row in se:
            rr = by_ref[self.e2r[int(row["id"])]]
            for f in ("user", "server", "pool", "state", "endpoint", "t_launch", "t_state", "pending"):
                assert row[f] == rr[f], f"session {row['id']}: {f} engine {row[f]!r} reference {rr[f]!r}"
            assert tuple(sorted(row["apps"])) == tuple(sorted(rr["apps"]))
        # counts conserved: every live session is on exactly one present server
        assert int(self.e.servers()["sessions"].sum()) == len(se)

    @invariant()
    def placements_met_hard_constraints(self):
        if self.e is None:
            return
        for sid in self.e.sessions()["id"]:
            assert self.launch_ok.get(int(sid)) == [], (int(sid), self.launch_ok.get(int(sid)))

    @invariant()
    def licences(self):
        if self.e is None:
            return
        held = self.e.licences_in_use
        assert held == self.r.licences_in_use
        assert held == len(set(self.e.sessions()["user"]))
        assert self.e.licence_cap == self.r.licence_cap
        if self.licence_bound is not None:
            assert held <= self.licence_bound, (held, self.licence_bound)
            # holders never grow past the cap; a lowered cap is caught up with
            self.licence_bound = max(self.e.licence_cap, held)

    @invariant()
    def trees_consistent(self):
        """Every inner node of every group's tree holds the best of its eight
        children (smaller (key, tiebreak), the leftmost on a full tie), and
        every entry names its server's leaf slot; the leaves hold their servers'
        keys. (The path replay must leave nothing stale behind.)"""
        if self.e is None or self.e._dirty:
            return
        from usher.core import state as cs
        t, grp, srv = self.e._t["tree"], self.e._t["group"], self.e._t["server_i"]
        A = cs.TREE_ARITY

        def entry(off, c):  # node c's entry: lane (c + 6) % 8 of block (c + 6) // 8
            b, lane = off + (c + 6) // A, (c + 6) % A
            return tuple(int(t[b, f + lane]) for f in (cs.TREE_KEY, cs.TREE_TB, cs.TREE_SERVER, cs.TREE_SLOT))

        for g in range(int(self.e._header[cs.H_GROUP_CAP])):
            off, cap = int(grp[cs.GR_TREE_OFF, g]), int(grp[cs.GR_TREE_CAP, g])
            first = cs.tree_first_leaf(cap)
            for node in range(first, first + cap):
                key, tb, i, _slot = entry(off, node)
                if i >= 0:
                    assert key == srv[cs.SV_KEY, i] and tb == srv[cs.SV_TB, i], (g, node)
                else:
                    assert (key, tb) == (cs.INF_KEY, cs.INF_KEY), (g, node)
            for node in range(first - 1, 0, -1):
                kids = [entry(off, c) for c in range(A * node - 6, A * node + 2)]
                best = min(kids, key=lambda r: (r[0], r[1]))  # min keeps the first of equals
                assert entry(off, node) == best, (g, node)
            for node in range(1, first + cap):
                _key, _tb, i, slot = entry(off, node)
                assert slot == (srv[cs.SV_SLOT, i] if i >= 0 else -1), (g, node)

    @invariant()
    def groups_count_their_available_servers(self):
        """Each group's ``n_available`` (the ``full`` / ``no_server`` split) is the
        number of its servers that are on, registered and enabled."""
        if self.e is None or self.e._dirty:
            return
        from usher.core import state as cs
        grp, srv = self.e._t["group"], self.e._t["server_i"]
        n = int(self.e._header[cs.H_N_SERVERS])
        counts = {}
        for i in range(n):
            g = int(srv[cs.SV_GROUP, i])
            if srv[cs.SV_PRESENT, i] and g >= 0:
                on = (srv[cs.SV_POWER, i] == usher.Power.ON and srv[cs.SV_REGISTERED, i] != 0
                      and srv[cs.SV_MODE, i] == usher.Mode.ENABLED)
                counts[g] = counts.get(g, 0) + int(on)
        for g in range(int(self.e._header[cs.H_GROUP_CAP])):
            if grp[cs.GR_N_SERVERS, g] > 0:
                assert grp[cs.GR_N_AVAILABLE, g] == counts.get(g, 0), g

    @invariant()
    def clocks_match(self):
        if self.e is None:
            return
        assert self.e.now == self.r.now


class LargeFleetMachine(SchedulerMachine):
    """The same rules on 12-30 servers: deeper ranking trees, more equal
    servers sharing a storm, more groups per pool."""

    N_SERVERS = (12, 30)
    SERVER_NAMES = tuple(f"s{i}" for i in range(31))


# TestCase.settings is built from the profile loaded by conftest.py
# (max_examples, stateful_step_count), with deadline=None.
TestSchedulerModel = SchedulerMachine.TestCase
TestLargeFleetModel = LargeFleetMachine.TestCase
TestLargeFleetModel.settings = settings(
    TestLargeFleetModel.settings, max_examples=max(10, TestLargeFleetModel.settings.max_examples // 3))


# ------------------------------------------------------------ pinned cases
# Cases the state machine found or keeps away from (see the comments in its
# rules), written out by hand so that they run on both backends every time.
def one_server(backend, pool_kw=None, **settings):
    s = backend(**settings)
    s.add_pool("p", **(pool_kw or {}))
    s.add_app("a", ["p"])
    s.add_server("s0", "z1", "p", now=0.0)
    return s


def test_pending_timeout_change_raised_counts_again(backend):
    # SEMANTICS.md: a session counts as a pending logon at `now` iff it is
    # launching and t_launch + pending_timeout > now, with the current setting.
    s = one_server(backend, pool_kw=dict(logon_tolerance=1, tolerance_is_hard=True), pending_timeout=50.0)
    s.launch("u0", "a", now=0.0)
    s.set_mode("s0", "enabled", now=51.0)  # 0 + 50 > 51 is false: no longer pending
    assert s.server("s0")["pending"] == 0
    s.settings(pending_timeout=200.0)  # 0 + 200 > 52: pending again
    d = s.launch("u1", "a", now=52.0)
    assert d.outcome == Outcome.REJECTED and str(d.reason) == "logon_tolerance"
    assert s.server("s0")["pending"] == 1


def test_pending_timeout_change_lowered_shows_at_once(backend):
    s = one_server(backend, pending_timeout=50.0)
    s.launch("u0", "a", now=0.0)
    s.set_mode("s0", "enabled", now=31.0)
    assert s.server("s0")["pending"] == 1
    s.settings(pending_timeout=25.0)  # 0 + 25 > 31 is false at the current time
    assert s.server("s0")["pending"] == 0
    assert not s.sessions()["pending"][0]


def test_zero_sinbin_seconds_never_sinbins(backend):
    # launch_failed at t sets sinbin_until = t + 0; sin-binned iff sinbin_until > now
    s = one_server(backend, sinbin_seconds=0.0)
    d = s.launch("u0", "a", now=1.0)
    s.launch_failed(d.session, now=2.0)
    assert not s.server("s0")["sinbinned"]
