"""Baseline brokers: what a broker developer would write without usher.

Design: three brokers share one plain-Python front (users, sessions, the reconnect/share
check, zone resolution, the commit) and differ only in how they pick a server:

- :class:`ScanBroker` — a list of ``Server`` objects per pool; every launch filters the
  pool's servers and takes ``min()`` over the candidates. Simple and obviously right.
- :class:`HeapBroker` — a ``heapq`` per (pool, zone, server tag set) and per side of the
  logon tolerance, keyed ``(score, tiebreak)``; a change pushes a new entry and bumps the
  server's version, stale entries are dropped lazily when they reach the top (and the heap
  is rebuilt when stale entries outnumber live ones).
- :class:`NumpyBroker` — the fleet as numpy arrays; every launch builds boolean masks over the
  whole fleet and takes an argmin (score, then tiebreak among equal scores).

Rules (docs/SEMANTICS.md, the subset the benchmark mixes use): eligibility (available, not
full, load index < 10000), tag restriction, allowed pools in order, zone preference order with
failover, soft/hard logon tolerance, horizontal score ``LI · 1_000_000 // weight`` with the
tiebreak ``tb`` (the seeded initial order, then the pick sequence), load index from the
sessions rule (and cpu, for the one pool of mix (b) that enables it). Reconnect: the user's
first disconnected session in an allowed pool; share: the first active/launching one.
Not modelled (the mixes never use them): entitlement, licences, instance limits,
max sessions per user, external access, endpoints/roaming, sin-bin, vertical balancing,
memory/disk/custom rules. The brokers start from a snapshot of a usher fleet
(:meth:`from_fleet`), so both start from exactly the same state.
"""

from __future__ import annotations

import heapq
import math
from operator import attrgetter

import numpy as np

PLACED, RECONNECTED, SHARED, REJECTED = 0, 1, 2, 3
FULL = 10000


class Server:
    __slots__ = ("index", "name", "zone", "pool", "tags", "max_sessions", "weight", "available",
                 "sessions", "pending", "cpu", "load_index", "score", "tb", "version")


class Session:
    __slots__ = ("id", "user", "server", "pool", "state", "pending")


class _Broker:
    """The shared front: state, reconnect/share, zone resolution and the commit."""

    name = "?"

    def __init__(self, fleet):
        rows = fleet.s.servers()
        tb = np.asarray(fleet.s.server_field("tb"))
        self.pools = fleet.pools
        self.apps = fleet.apps
        self.user_home = dict(zip(fleet.users, fleet.user_home))
        self.servers = []
        self.pool_servers = {p: [] for p in self.pools}
        self.pool_zones = {p: [] for p in self.pools}
        for r in rows:
            x = Server()
            x.index = int(r["index"])
            x.name, x.zone, x.pool = r["name"], r["zone"], r["pool"]
            x.tags = r["tags"]
            x.max_sessions, x.weight = int(r["max_sessions"]), int(r["weight"])
            x.available = r["power"] == "on" and bool(r["registered"]) and r["mode"] == "enabled"
            x.sessions, x.pending, x.cpu = int(r["sessions"]), int(r["pending"]), float(r["cpu"])
            x.tb = int(tb[x.index])
            x.version = 0
            self._rescore(x)
            assert x.load_index == int(r["load_index"]), (x.name, x.load_index, int(r["load_index"]))
            self.servers.append(x)
            self.pool_servers[x.pool].append(x)
            if x.zone not in self.pool_zones[x.pool]:
                self.pool_zones[x.pool].append(x.zone)
        self.pick_seq = max(0, max(x.tb for x in self.servers))
        self.sessions = {}
        self.user_sessions = {}
        index_of = {n: i for i, n in enumerate(fleet.server_names)}
        for r in fleet.s.sessions():
            ses = Session()
            ses.id, ses.user, ses.pool, ses.state = int(r["id"]), r["user"], r["pool"], r["state"]
            ses.server = self.servers[index_of[r["server"]]]
            ses.pending = bool(r["pending"])
            self.sessions[ses.id] = ses
            self.user_sessions.setdefault(ses.user, []).append(ses.id)
        self.next_id = -1  # the brokers' own session ids are negative

    # ------------------------------------------------------------ load index and score
    def _rescore(self, x):
        """Load index (sessions rule, plus cpu where the pool enables it) and horizontal score."""
        pool = self.pools[x.pool]
        li = x.sessions * 10000 // x.max_sessions
        if "cpu" in pool.load_rules:
            c = min(10000, math.floor(x.cpu * 10000.0 / pool.cpu_full))
            m = max(li, c)
            li = min(10000, m + (li + c - m) // 20)
        x.load_index = li
        x.score = li * 1_000_000 // x.weight

    def _eligible(self, x):
        return x.available and x.sessions < x.max_sessions and x.load_index < FULL

    # ------------------------------------------------------------ operations
    def launch(self, user, app, location=None):
        """Returns (outcome, server index, session id); server -1 when rejected."""
        a = self.apps[app]
        mine = self.user_sessions.get(user)
        if mine:
            found = self._reuse(mine, a)
            if found is not None:
                return found
        home = self.user_home.get(user)
        for p in a.pools:
            pool = self.pools[p]
            zones = []
            for pref in pool.zone_preference:
                z = a.home_zone if pref == "app_home" else home if pref == "user_home" else location
                if z is not None and z not in zones:
                    zones.append(z)
            x = self._pick(pool, zones, a.tags)
            if x is not None:
                return self._commit(x, user, p)
        return REJECTED, -1, -1

    def _reuse(self, mine, a):
        sessions = self.sessions
        for want, outcome in (("disconnected", RECONNECTED), (None, SHARED)):
            for sid in mine:
                ses = sessions[sid]
                x = ses.server
                if ses.pool not in a.pools or not x.available or not a.tags <= x.tags:
                    continue
                if want == "disconnected" and ses.state == "disconnected":
                    ses.state = "active"
                    return outcome, x.index, sid
                if want is None and ses.state in ("active", "launching"):
                    return outcome, x.index, sid
        return None

    def _commit(self, x, user, pool):
        self.pick_seq += 1
        x.tb = self.pick_seq
        x.sessions += 1
        x.pending += 1
        self._changed(x)
        ses = Session()
        ses.id, ses.user, ses.server, ses.pool = self.next_id, user, x, pool
        ses.state, ses.pending = "launching", True
        self.next_id -= 1
        self.sessions[ses.id] = ses
        self.user_sessions.setdefault(user, []).append(ses.id)
        return PLACED, x.index, ses.id

    def logon_complete(self, sid):
        ses = self.sessions[sid]
        ses.state = "active"
        if ses.pending:
            ses.pending = False
            ses.server.pending -= 1
            self._changed(ses.server)

    def disconnect(self, sid):
        ses = self.sessions[sid]
        ses.state = "disconnected"
        if ses.pending:
            ses.pending = False
            ses.server.pending -= 1
            self._changed(ses.server)

    def logoff(self, sid):
        ses = self.sessions.pop(sid)
        mine = self.user_sessions[ses.user]
        mine.remove(sid)
        if not mine:
            del self.user_sessions[ses.user]
        x = ses.server
        x.sessions -= 1
        if ses.pending:
            x.pending -= 1
        self._changed(x)

    def telemetry_many(self, indices, cpu):
        servers = self.servers
        for i, c in zip(indices, cpu):
            x = servers[i]
            x.cpu = float(c)
            self._changed(x)

    def _changed(self, x):
        self._rescore(x)

    def _pick(self, pool, zones, tags):
        raise NotImplementedError


# ---------------------------------------------------------------- (1) scan + min()
class ScanBroker(_Broker):
    """Filter the pool's servers and take ``min()`` on every launch."""

    name = "scan"
    _key = attrgetter("score", "tb")

    def _pick(self, pool, zones, tags):
        reach = set(zones) if zones and not pool.failover else None
        cands = [x for x in self.pool_servers[pool.name]
                 if x.available and x.sessions < x.max_sessions and x.load_index < FULL
                 and tags <= x.tags and (reach is None or x.zone in reach)]
        if not cands:
            return None
        chosen = cands
        for z in zones:
            in_zone = [x for x in cands if x.zone == z]
            if in_zone:
                chosen = in_zone
                break
        tol = pool.logon_tolerance
        under = [x for x in chosen if x.pending < tol]
        if not under:
            if getattr(pool, "tolerance_is_hard", False):
                return None
            under = chosen
        return min(under, key=self._key)


# ---------------------------------------------------------------- (2) heapq, lazy invalidation
class HeapBroker(_Broker):
    """A heap per (pool, zone, tag set) and per side of the logon tolerance."""

    name = "heapq"

    def __init__(self, fleet):
        super().__init__(fleet)
        self.buckets = {}  # (pool, zone, tags) -> [under heap, over heap, n servers]
        for x in self.servers:
            b = self.buckets.setdefault((x.pool, x.zone, x.tags), [[], [], 0])
            b[2] += 1
        self.bucket_of = {x.index: self.buckets[(x.pool, x.zone, x.tags)] for x in self.servers}
        for x in self.servers:
            self._push(x)
        for b in self.buckets.values():
            heapq.heapify(b[0])
            heapq.heapify(b[1])
        self._zone_buckets = {}  # (pool, tags) -> {zone: [bucket, ...]}

    def _push(self, x, heap=False):
        if not self._eligible(x):
            return
        b = self.bucket_of[x.index]
        side = b[0] if x.pending < self.pools[x.pool].logon_tolerance else b[1]
        entry = (x.score, x.tb, x.version, x.index)
        if heap:
            heapq.heappush(side, entry)
            if len(side) > 2 * b[2] + 64:
                self._rebuild(b)
        else:
            side.append(entry)

    def _rebuild(self, b):
        servers = self.servers
        for k in (0, 1):
            b[k] = [e for e in b[k] if servers[e[3]].version == e[2]]
            heapq.heapify(b[k])

    def _changed(self, x):
        self._rescore(x)
        x.version += 1
        self._push(x, heap=True)

    def _top(self, heap):
        servers = self.servers
        while heap:
            e = heap[0]
            if servers[e[3]].version == e[2]:
                return e
            heapq.heappop(heap)
        return None

    def _zones_of(self, pool, tags):
        key = (pool.name, tags)
        zb = self._zone_buckets.get(key)
        if zb is None:
            zb = {}
            for (p, z, t), b in self.buckets.items():
                if p == pool.name and tags <= t:
                    zb.setdefault(z, []).append(b)
            self._zone_buckets[key] = zb
        return zb

    def _best(self, buckets, side):
        best = None
        for b in buckets:
            e = self._top(b[side])
            if e is not None and (best is None or e < best):
                best = e
        return best

    def _pick(self, pool, zones, tags):
        zb = self._zones_of(pool, tags)
        chosen = None
        for z in zones:
            bs = zb.get(z, ())
            if self._best(bs, 0) is not None or self._best(bs, 1) is not None:
                chosen = bs
                break
        if chosen is None:
            if zones and not pool.failover:
                return None
            chosen = [b for bs in zb.values() for b in bs]
        e = self._best(chosen, 0)
        if e is None:
            if getattr(pool, "tolerance_is_hard", False):
                return None
            e = self._best(chosen, 1)
            if e is None:
                return None
        return self.servers[e[3]]


# ---------------------------------------------------------------- (3) numpy argmin
class NumpyBroker(_Broker):
    """Masks over the whole fleet and an argmin per launch."""

    name = "numpy"

    def __init__(self, fleet):
        super().__init__(fleet)
        xs = self.servers
        self.zone_arr = np.array([x.zone for x in xs], dtype=object)
        self.pool_arr = np.array([x.pool for x in xs], dtype=object)
        self.avail = np.array([x.available for x in xs])
        self.free = np.array([self._eligible(x) for x in xs])
        self.pending = np.array([x.pending for x in xs], dtype=np.int64)
        self.score = np.array([x.score for x in xs], dtype=np.int64)
        self.tb = np.array([x.tb for x in xs], dtype=np.int64)
        self.sessions_arr = np.array([x.sessions for x in xs], dtype=np.int64)
        self.max_arr = np.array([x.max_sessions for x in xs], dtype=np.int64)
        self.weight_arr = np.array([x.weight for x in xs], dtype=np.int64)
        self.cpu = np.array([x.cpu for x in xs], dtype=np.float64)
        self.cpu_full = np.array([self.pools[x.pool].cpu_full for x in xs], dtype=np.float64)
        self.cpu_rule = np.array(["cpu" in self.pools[x.pool].load_rules for x in xs])
        self.zone_mask = {z: self.zone_arr == z for z in set(self.zone_arr.tolist())}
        self._static = {}  # (pool, tags) -> bool mask: in pool, available, tags match
        self._none = np.zeros(len(xs), dtype=bool)

    def _changed(self, x):
        i = x.index
        x.cpu = float(self.cpu[i])  # telemetry_many writes the array only
        self._rescore(x)
        self.sessions_arr[i] = x.sessions
        self.free[i] = self._eligible(x)
        self.pending[i] = x.pending
        self.score[i] = x.score
        self.tb[i] = x.tb

    def telemetry_many(self, indices, cpu):
        """Vectorised: write cpu, recompute load index, score and eligibility of the rows."""
        idx = np.asarray(indices)
        self.cpu[idx] = cpu
        li = self.sessions_arr[idx] * 10000 // self.max_arr[idx]
        c = np.minimum(10000, np.floor(self.cpu[idx] * 10000.0 / self.cpu_full[idx]).astype(np.int64))
        m = np.maximum(li, c)
        li = np.where(self.cpu_rule[idx], np.minimum(10000, m + (li + c - m) // 20), li)
        self.score[idx] = li * 1_000_000 // self.weight_arr[idx]
        self.free[idx] = self.avail[idx] & (self.sessions_arr[idx] < self.max_arr[idx]) & (li < FULL)

    def _pick(self, pool, zones, tags):
        key = (pool.name, tags)
        static = self._static.get(key)
        if static is None:
            ok = np.array([tags <= x.tags for x in self.servers])
            static = self._static[key] = (self.pool_arr == pool.name) & self.avail & ok
        cand = static & self.free
        if zones and not pool.failover:
            reach = self._none.copy()
            for z in zones:
                reach |= self.zone_mask.get(z, self._none)
            cand &= reach
        if not cand.any():
            return None
        for z in zones:
            m = cand & self.zone_mask.get(z, self._none)
            if m.any():
                cand = m
                break
        under = cand & (self.pending < pool.logon_tolerance)
        if under.any():
            cand = under
        elif getattr(pool, "tolerance_is_hard", False):
            return None
        idx = np.flatnonzero(cand)
        sc = self.score[idx]
        ties = idx[sc == sc.min()]
        return self.servers[int(ties[np.argmin(self.tb[ties])])]


class BrokerQueues:
    """A baseline's own steady-state queues (a copy of the fleet's when the broker was made):
    the baseline runs the same kind of request stream as usher, on its own state."""

    def __init__(self, fleet):
        from collections import deque

        self.fleet = fleet
        self.live = deque(fleet.live)
        self.free = deque(fleet.free)
        self.launching = []
        self.rng = np.random.default_rng(fleet.size)

    def draw(self, k):
        f = self.fleet
        saved = f.free, f.rng
        f.free, f.rng = self.free, self.rng
        try:
            return f.draw(k)
        finally:
            f.free, f.rng = saved

    def prepare(self, broker, k):
        for sid in self.launching:
            broker.logon_complete(sid)
        self.launching.clear()
        for _ in range(k):
            sid, u, _app = self.live.popleft()
            broker.logoff(sid)
            self.free.append(u)
        return self.draw(k)

    def settle(self, requests, results):
        placed = 0
        for (uid, u, app, _loc), (outcome, server, sid) in zip(requests, results):
            if outcome == PLACED:
                placed += 1
                assert self.fleet.valid[app][server], f"baseline placed {app} on an invalid server"
                self.live.append((sid, u, app))
                self.launching.append(sid)
            else:
                self.free.append(u)
        return placed



BROKERS = {b.name: b for b in (ScanBroker, HeapBroker, NumpyBroker)}


def cross_check(fleet, broker, k: int):
    """Run ``k`` requests through usher and ``broker`` from the same state; assert both
    place every request on the same server (hence on a valid one), then log the sessions
    off again on both. Leaves fleet and broker in step. Returns the number PLACED."""
    fleet.complete_logons()
    for sid in [sid for sid, s in broker.sessions.items() if s.pending]:
        broker.logon_complete(sid)
    reqs = fleet.draw(k)
    ds = [fleet.s.launch(uid, app, loc, None, False, fleet.now) for uid, _u, app, loc in reqs]
    placed = 0
    mine = []
    for (uid, u, app, loc), d in zip(reqs, ds):
        outcome, server, sid = broker.launch(uid, app, loc)
        assert outcome == d.outcome_code and server == d.server_index, (
            f"{broker.name} disagrees with usher on {uid} {app} {loc}: "
            f"{outcome}/{server} vs {d.outcome_code}/{d.server_index}")
        assert server < 0 or fleet.valid[app][server], f"{broker.name} placed {app} on an invalid server"
        if outcome == PLACED:
            placed += 1
            mine.append(sid)
    for (uid, u, app, loc), d in zip(reqs, ds):
        if d.outcome_code == PLACED:
            fleet.s.logoff(d.session_id, now=fleet.now)
        fleet.free.append(u)
    for sid in mine:
        broker.logoff(sid)
    return placed
