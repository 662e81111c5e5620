"""Benchmark fleets: a prefilled ``usher.Scheduler`` in steady state, by size and constraint mix.

Design: a :class:`Fleet` is built once per (size, mix) and shared by every benchmark of a
pytest session (building 100,000 servers and 1.2 M sessions takes a while). It is kept in a
*steady state*: about 60 % of the session slots of available servers are taken, and every
benchmark that places sessions first logs off as many of the oldest ones (in its untimed
setup), so the fleet neither fills nor empties however long the suite runs. All operations
after the prefill run at one logical time ``Fleet.now`` (the prefill runs at t = 0 and the
clock is then moved past ``pending_timeout``, so prefilled sessions no longer count as
pending logons; benchmark launches do, until their ``logon_complete`` in the next setup).

Mixes:

``a`` — one pool, horizontal, sessions-only load index, no zone preference, logon tolerance
    out of the way; every server available. The easiest case for any broker.
``b`` — the full mix: 6 zones; 4 pools with different ordered zone preferences
    (``user_home`` → ``user_location``; ``user_location`` → ``user_home``; ``app_home`` without
    failover; ``user_home``), apps published on an ordered list of pools (a pool without
    failover that spills into a general pool), tag restrictions (``gpu``, ``gpu``+``hires``),
    logon tolerance 1–3 (soft), weights 100/150/200, a cpu load rule on one pool, and 10 % of
    the servers unavailable (4 % drain, 2 % maintenance, 3 % off, 1 % unregistered).

Request stream: each request takes a user holding no live session (so a launch is a real
placement, not a reconnect), an app drawn by the mix's weights, and a location: the user's
home zone (70 %), another zone (20 %) or none (10 %).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

import usher

SIZES = (1400, 10_000, 100_000)
MIXES = ("a", "b")
FILL = 0.60  # share of the session slots of available servers taken in steady state
NOW = 1000.0  # logical time of every benchmark operation (after the prefill at t = 0)
ZONES_B = ("North", "Central", "South", "East", "West", "Harbour")
NO_TOLERANCE = 1_000_000  # mix (a): a logon tolerance that never filters


@dataclass(frozen=True)
class PoolSpec:
    name: str
    zone_preference: tuple  # of "app_home" / "user_home" / "user_location"
    failover: bool
    logon_tolerance: int
    load_rules: tuple = ("sessions",)
    cpu_full: float = 90.0


@dataclass(frozen=True)
class AppSpec:
    name: str
    pools: tuple  # pool names, in priority order
    home_zone: str | None
    tags: frozenset  # tag restriction (empty = none)
    share: float  # share of requests


@dataclass
class Fleet:
    """A prefilled scheduler plus the static description the baselines and checks need.

    Attributes:
        s: the usher.Scheduler (steady state, see module doc).
        pools, apps: PoolSpec / AppSpec by name, in the order they were added.
        server_names: list of str; server_zone, server_pool: ndarray of shape (n_servers,)
            of zone / pool names (object); server_tags: list of frozenset;
            available: ndarray of bool, shape (n_servers,) — power on, registered, enabled.
        users: list of user ids; user_home: list of home zone names.
        live: deque of (session id, user index, app name), oldest first.
        free: deque of user indices holding no live session.
        valid: {app name: ndarray of bool (n_servers,)} — servers a placement of the app may use
            (available, in one of the app's pools, tags ⊇ restriction).
    """

    size: int
    mix: str
    s: usher.Scheduler
    pools: dict
    apps: dict
    zones: tuple
    server_names: list
    server_zone: np.ndarray
    server_pool: np.ndarray
    server_tags: list
    max_sessions: np.ndarray
    weight: np.ndarray
    power: list
    registered: np.ndarray
    mode: list
    available: np.ndarray
    users: list
    user_home: list
    live: deque = field(default_factory=deque)
    free: deque = field(default_factory=deque)
    launching: list = field(default_factory=list)
    valid: dict = field(default_factory=dict)
    rng: np.random.Generator = None
    now: float = NOW
    build_s: float = 0.0

    # ------------------------------------------------------------ requests
    def draw(self, k: int):
        """``k`` launch requests ``(user id, user index, app, location)`` for users without a
        live session (taken from ``free``; give them back with :meth:`settle`)."""
        if len(self.free) < k:
            raise RuntimeError(f"only {len(self.free)} free users for {k} requests")
        names = list(self.apps)
        p = np.array([self.apps[a].share for a in names])
        app_k = self.rng.choice(len(names), size=k, p=p / p.sum())
        loc_draw = self.rng.random(k)
        other = self.rng.integers(0, len(self.zones), size=k)
        out = []
        for j in range(k):
            u = self.free.popleft()
            if self.mix == "a":
                loc = None
            elif loc_draw[j] < 0.70:
                loc = self.user_home[u]
            elif loc_draw[j] < 0.90:
                loc = self.zones[other[j]]
            else:
                loc = None
            # the id as a broker decodes it from the request: a new str, equal to the one
            # registered (``users[u]``) but not that object, its hash not yet computed
            out.append((user_id(u), u, names[app_k[j]], loc))
        return out

    # ------------------------------------------------------------ steady state
    def make_room(self, k: int):
        """Log off the ``k`` oldest sessions (untimed setup of a placing benchmark)."""
        logoff, now = self.s.logoff, self.now
        for _ in range(k):
            sid, u, _app = self.live.popleft()
            logoff(sid, now=now)
            self.free.append(u)

    def settle(self, requests, decisions, check=True):
        """Record the sessions a round placed (and give unplaced users back); check that
        every placement went to a server valid for its app. Returns the PLACED count."""
        placed = 0
        for (uid, u, app, _loc), d in zip(requests, decisions):
            if d.outcome_code == 0:  # PLACED
                placed += 1
                if check and not self.valid[app][d.server_index]:
                    raise AssertionError(f"{app} placed on invalid server {self.server_names[d.server_index]}")
                self.live.append((d.session_id, u, app))
                self.launching.append(d.session_id)
            else:
                self.free.append(u)
        return placed

    def recycle(self, placed: int):
        """Log off the ``placed`` sessions :meth:`settle` recorded last and put their users
        first in line, so the next :meth:`draw` takes the same users again (untimed)."""
        logoff, now = self.s.logoff, self.now
        for _ in range(placed):
            sid, u, _app = self.live.pop()
            logoff(sid, now=now)
            self.free.appendleft(u)
        del self.launching[len(self.launching) - placed:]

    def complete_logons(self):
        """``logon_complete`` for the sessions earlier rounds placed (untimed): their logons
        finished, so they stop counting against the logon tolerance."""
        done = self.s.logon_complete
        for sid in self.launching:
            done(sid, now=self.now)
        self.launching.clear()

    def prepare(self, k: int):
        """Untimed setup of a round that places ``k`` sessions: finish earlier logons, log off
        the ``k`` oldest sessions, draw ``k`` requests."""
        self.complete_logons()
        self.make_room(k)
        return self.draw(k)

    def check_servers(self):
        """Invariants of the whole fleet, read back through ``s.servers()``:
        no session on an unavailable server, sessions ≤ max_sessions, the load index of every
        sessions-only pool is floor(sessions · 10000 / max_sessions), 60 % ± 15 % full."""
        rows = self.s.servers()
        assert len(rows) == len(self.server_names)
        assert (rows["sessions"][~self.available] == 0).all(), "a session on an unavailable server"
        assert (rows["sessions"] <= rows["max_sessions"]).all()
        sessions_only = np.array([self.pools[p].load_rules == ("sessions",) for p in rows["pool"]])
        li = rows["sessions"] * 10000 // rows["max_sessions"]
        assert (rows["load_index"][sessions_only] == li[sessions_only]).all(), "load index off"
        fill = rows["sessions"][self.available].sum() / rows["max_sessions"][self.available].sum()
        assert 0.45 <= fill <= 0.75, f"fleet {fill:.0%} full: not in steady state"
        return rows


# ---------------------------------------------------------------- building
def _mix_a(n):
    pools = [PoolSpec("desktops", (), True, NO_TOLERANCE)]
    apps = [AppSpec("desktop", ("desktops",), None, frozenset(), 1.0)]
    zones = ("North", "Central", "South")
    rows = []
    for i in range(n):
        big = i % 25 == 0
        rows.append((f"vda-{i:06d}", zones[i % 3], "desktops", (), 30 if big else 20,
                     150 if big else 100, "on", True, "enabled"))
    return pools, apps, zones, rows


def _mix_b(n, rng):
    zones = ZONES_B
    pools = [
        PoolSpec("records", ("user_home", "user_location"), True, 2),
        PoolSpec("desktop", ("user_location", "user_home"), True, 3, ("sessions", "cpu")),
        PoolSpec("lab", ("app_home",), False, 1),
        PoolSpec("imaging", ("user_home",), True, 1),
    ]
    apps = [
        AppSpec("patient-record", ("records",), None, frozenset(), 0.50),
        AppSpec("office-desktop", ("desktop", "records"), None, frozenset(), 0.20),
        AppSpec("lab-results", ("lab", "records"), "Central", frozenset(), 0.10),
        AppSpec("pacs-viewer", ("imaging",), None, frozenset({"gpu"}), 0.13),
        AppSpec("3d-recon", ("imaging",), None, frozenset({"gpu", "hires"}), 0.07),
    ]
    # unavailable servers: 4 % drain, 2 % maintenance, 3 % off, 1 % unregistered
    state = rng.choice(5, size=n, p=[0.90, 0.04, 0.02, 0.03, 0.01])
    rows = []
    for i in range(n):
        r = i % 20  # 10 records, 4 desktop, 2 lab, 4 imaging
        if r < 10:
            big = i % 25 == 0
            row = [f"rec-{i:06d}", zones[i % 6], "records", (), 30 if big else 20, 150 if big else 100]
        elif r < 14:
            row = [f"dsk-{i:06d}", zones[i % 6], "desktop", (), 20, 200 if i % 3 == 0 else 100]
        elif r < 16:
            row = [f"lab-{i:06d}", zones[i % 2], "lab", (), 20, 100]  # North and Central only
        else:
            tags = ("gpu", "hires") if i % 3 == 0 else ("gpu",)
            row = [f"img-{i:06d}", zones[i % 6], "imaging", tags, 20, 100]
        s = state[i]
        row += [("off" if s == 3 else "on"), s != 4, ("drain", "maintenance")[s - 1] if s in (1, 2) else "enabled"]
        rows.append(tuple(row))
    return pools, apps, zones, rows


def build(size: int, mix: str, seed: int = 7, fill: float = FILL) -> Fleet:
    """Build, prefill (launch_many at t = 0) and settle a fleet of ``size`` servers."""
    import time

    started = time.perf_counter()
    rng = np.random.default_rng(seed + size + (0 if mix == "a" else 1))
    if mix == "a":
        pools, apps, zones, rows = _mix_a(size)
    elif mix == "b":
        pools, apps, zones, rows = _mix_b(size, rng)
    else:
        raise ValueError(mix)
    s = usher.Scheduler(seed=seed)
    for p in pools:
        s.add_pool(p.name, zone_preference=p.zone_preference, failover=p.failover,
                   logon_tolerance=p.logon_tolerance, load_rules=p.load_rules, cpu_full=p.cpu_full)
    for a in apps:
        s.add_app(a.name, list(a.pools), home_zone=a.home_zone,
                  tag_restriction=sorted(a.tags) if a.tags else None)
    add = s.add_server
    for name, zone, pool, tags, ms, w, power, reg, mode in rows:
        add(name, zone, pool, tags=tags, max_sessions=ms, weight=w, power=power, registered=reg, mode=mode)

    max_sessions = np.array([r[4] for r in rows], dtype=np.int64)
    available = np.array([r[6] == "on" and r[7] and r[8] == "enabled" for r in rows])
    n_prefill = int(fill * max_sessions[available].sum())
    n_users = n_prefill + max(5000, n_prefill // 10)
    home = rng.integers(0, len(zones), size=n_users)
    users = [user_id(k) for k in range(n_users)]
    user_home = [zones[z] for z in home]
    add_user = s.add_user
    for k in range(n_users):
        add_user(users[k], home_zone=user_home[k])

    fleet = Fleet(
        size=size, mix=mix, s=s, pools={p.name: p for p in pools}, apps={a.name: a for a in apps},
        zones=zones, server_names=[r[0] for r in rows],
        server_zone=np.array([r[1] for r in rows], dtype=object),
        server_pool=np.array([r[2] for r in rows], dtype=object),
        server_tags=[frozenset(r[3]) for r in rows], max_sessions=max_sessions,
        weight=np.array([r[5] for r in rows], dtype=np.int64), power=[r[6] for r in rows],
        registered=np.array([r[7] for r in rows]), mode=[r[8] for r in rows], available=available,
        users=users, user_home=user_home, rng=rng,
    )
    for a in apps:
        in_pool = np.isin(fleet.server_pool, list(a.pools))
        tags_ok = np.array([a.tags <= t for t in fleet.server_tags])
        fleet.valid[a.name] = available & in_pool & tags_ok
    # users in random order: the prefill and every round draw them at random, as a logon
    # storm does (in index order, the rounds before the users returned by logoffs come
    # round would read consecutive user records and id strings, which the CPU streams in
    # ahead of the reads: benchmarks/README.md, "Steady state")
    fleet.free.extend(rng.permutation(n_users).tolist())

    # prefill through launch_many at t = 0, in chunks; then move the clock past the pending timeout
    app_idx = {a: i for i, a in enumerate(s.app_names)}
    chunk = 50_000
    left = n_prefill
    while left > 0:
        k = min(chunk, left)
        reqs = fleet.draw(k)
        b = s.launch_many(np.array([r[1] for r in reqs], dtype=np.int64),
                          np.array([app_idx[r[2]] for r in reqs], dtype=np.int64),
                          locations=[r[3] for r in reqs], now=0.0)
        placed = 0
        for j, r in enumerate(reqs):
            if b.outcome[j] == 0:
                placed += 1
                fleet.live.append((int(b.session[j]), r[1], r[2]))
            else:
                fleet.free.append(r[1])
        left -= k
        assert placed > 0.9 * k, f"prefill placed only {placed} of {k}"
    # shuffle who logs off first, so logoffs hit servers at random
    order = rng.permutation(len(fleet.live))
    live = list(fleet.live)
    fleet.live = deque(live[j] for j in order)
    s.telemetry_many(np.array([], dtype=np.int64), now=NOW)  # advance the clock
    fleet.check_servers()
    fleet.build_s = time.perf_counter() - started
    return fleet


def user_id(k: int) -> str:
    """The id of user ``k`` (a new str object at every call)."""
    return f"u{k:07d}"


def placed_servers_valid(fleet: Fleet, app_names, servers) -> bool:
    """True when every (app, server index) pair is a valid placement (server < 0 = rejected)."""
    return all(sv < 0 or fleet.valid[a][sv] for a, sv in zip(app_names, servers))


def expected_load_index(sessions, max_sessions, cpu=0.0, cpu_full=90.0, rules=("sessions",)):
    """Load index per docs/SEMANTICS.md for the rules the mixes use (sessions, cpu)."""
    subs = []
    if "sessions" in rules:
        subs.append(sessions * 10000 // max_sessions)
    if "cpu" in rules:
        subs.append(min(10000, math.floor(cpu * 10000.0 / cpu_full)))
    m = max(subs)
    k = len(subs) - 1
    return m if k == 0 else min(10000, m + (sum(subs) - m) // (20 * k))
