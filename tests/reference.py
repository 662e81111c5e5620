"""A slow, obviously correct reference scheduler: the oracle of the tests.

Design: this file follows docs/SEMANTICS.md step by step and recomputes every
derived quantity from its definition on each use, so there is no incremental
state to get wrong:

- a server's sessions = the live sessions whose server it is;
- its pending logons = its ``launching`` sessions with ``t_launch + pending_timeout > now``;
- it is sin-binned iff ``sinbin_until > now``;
- it is slow as its pool's slow rule last judged it (``_judge``: its logon EWMA
  against the pool's median, computed when the pool's ``slow_wait`` ran out);
- its load index is computed from the formula each time it is read;
- the pick scans every server and takes ``min`` of ``(score, tb)``;
- licence holders = users with at least one live session.

It exposes the public API of ``usher.Scheduler`` (constructor, ``settings``,
``add_*``, ``launch``, ``launch_many``, session and server operations, the
read-only views ``servers()``, ``server()``, ``sessions()``, ``session()``) and
raises the same ``usher.errors`` classes, checking everything before changing
anything, so the state is unchanged after an error. Session ids are its own
integers (1, 2, 3, ... in creation order); the model tests map engine ids to them.

Where the spec does not say which of two bad inputs is reported first, or how a
value outside the spec's examples is checked, this file follows the order of
the public wrapper (validate arguments, then the server or session, then ``now``).
"""

from __future__ import annotations

import copy as _copy
import enum
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from usher.core.codes import (
    LoadBalancing,
    LoadRule,
    Mode,
    Outcome,
    Power,
    Reason,
    Reconnection,
    SessionState,
    ZoneChoice,
    ZonePreference,
)
from usher.errors import (
    DuplicateName,
    InvalidArgument,
    InvalidState,
    ServerBusy,
    SessionEnded,
    TimeWentBackwards,
    UnknownApp,
    UnknownPool,
    UnknownServer,
    UnknownSession,
)

MASK64 = (1 << 64) - 1
FULL = 10_000
#: the slow rule's constants (docs/SEMANTICS.md, *Slow servers*)
SLOW_EWMA_ALPHA = 0.3
SLOW_MEDIAN_EVERY = 16


# ---------------------------------------------------------------- spec formulas
def splitmix64(x: int) -> int:
    """The standard splitmix64 finaliser, all arithmetic mod 2^64."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def initial_tiebreak(seed: int, index: int) -> int:
    """``splitmix64(((seed << 32) ^ index) mod 2^64) >> 3`` minus ``2^61`` (negative)."""
    return (splitmix64(((seed << 32) ^ index) & MASK64) >> 3) - (1 << 61)


def load_index(rules, sessions, max_sessions, cpu, mem, disk_queue, custom,
               cpu_full, memory_full, disk_queue_full) -> int:
    """The load index (0-10000) of a server whose pool enables ``rules``.

    Sub-indexes: sessions ``sessions * 10000 // max_sessions``; cpu
    ``min(10000, floor(cpu * 10000.0 / cpu_full))``; memory likewise; disk queue
    ``min(10000, floor(dq * 7500.0 / disk_queue_full))``; custom ``floor(custom)``.
    With M the largest and S the sum of the k others: M if k == 0, else
    ``min(10000, M + S // (20 * k))``.
    """
    subs = []
    for rule in rules:
        if rule == LoadRule.SESSIONS:
            subs.append(sessions * 10000 // max_sessions)
        elif rule == LoadRule.CPU:
            subs.append(min(10000, math.floor(cpu * 10000.0 / cpu_full)))
        elif rule == LoadRule.MEMORY:
            subs.append(min(10000, math.floor(mem * 10000.0 / memory_full)))
        elif rule == LoadRule.DISK_QUEUE:
            subs.append(min(10000, math.floor(disk_queue * 7500.0 / disk_queue_full)))
        elif rule == LoadRule.CUSTOM:
            subs.append(math.floor(custom))
        else:  # pragma: no cover
            raise AssertionError(rule)
    m = max(subs)
    k = len(subs) - 1
    if k == 0:
        return m
    s = sum(subs) - m
    return min(10000, m + s // (20 * k))


# ---------------------------------------------------------------- validation
def _check_int(fld, value, lo=None, hi=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(fld, value, "must be an integer")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidArgument(fld, value, "out of range")
    return value


def _check_hashable(field, value):
    try:
        hash(value)
    except TypeError:
        raise InvalidArgument(field, value, "must be hashable") from None


def _check_float(fld, value, lo=None, hi=None, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(fld, value, "must be a number")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise InvalidArgument(fld, value, "must be finite")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidArgument(fld, value, "too small")
    if hi is not None and v > hi:
        raise InvalidArgument(fld, value, "too large")
    return v


def _check_bool(fld, value):
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(fld, value, "must be true or false")
    return bool(value)


def _check_name(fld, value):
    if not isinstance(value, str) or not value:
        raise InvalidArgument(fld, value, "must be a non-empty string")
    return value


def _names(fld, value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise InvalidArgument(fld, value, "must be a string or a list of strings")
    out = tuple(value)
    for v in out:
        _check_name(fld, v)
    return out


def _enum(enum_cls, fld, value):
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls[value.upper()]
        except KeyError:
            pass
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        try:
            return enum_cls(int(value))
        except ValueError:
            pass
    raise InvalidArgument(fld, value, f"not a valid {enum_cls.__name__}")


def _enums(enum_cls, fld, value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, enum.Enum)):
        value = (value,)
    if not isinstance(value, Iterable):
        raise InvalidArgument(fld, value, "must be a name or a list of names")
    return tuple(_enum(enum_cls, fld, v) for v in value)


# ---------------------------------------------------------------- records
@dataclass
class Pool:
    name: str
    load_balancing: LoadBalancing
    zone_preference: tuple
    failover: bool
    session_reconnection: Reconnection
    reconnect_in_maintenance: bool
    external_access: bool
    logon_tolerance: int
    tolerance_is_hard: bool
    max_sessions_per_user: int | None
    load_rules: tuple
    cpu_full: float
    memory_full: float
    disk_queue_full: float
    slow_logon_factor: float | None = None
    slow_min_samples: int = 5
    logon_median: float = -1.0  # the median when last computed, -1 = none
    slow_wait: int = 0  # logons of the pool left before the median is computed again


@dataclass
class App:
    name: str
    pools: tuple
    home_zone: str | None
    tag_restriction: frozenset
    max_instances_total: int | None
    max_instances_per_user: int | None


@dataclass
class User:
    id: object
    home_zone: str | None
    apps: frozenset


@dataclass
class Server:
    index: int
    name: str
    zone: str
    pool: str
    tags: frozenset
    max_sessions: int
    weight: int
    power: Power
    registered: bool
    mode: Mode
    image: str | None
    tb: int
    cpu: float = 0.0
    mem: float = 0.0
    disk_queue: float = 0.0
    custom: float = 0.0
    sinbin_until: float = -math.inf
    picks: int = 0
    place_last: bool = False
    logons: int = 0
    logon_ewma: float = 0.0
    slow: bool = False


@dataclass
class Session:
    id: int
    user: object
    server: str
    pool: str
    apps: set
    state: SessionState
    endpoint: object
    t_launch: float
    t_state: float


@dataclass
class Decision:
    """The answer to one launch (same attributes as ``usher.Decision``)."""

    outcome: Outcome
    reason: Reason | None = None
    server: str | None = None
    zone: str | None = None
    session: int | None = None
    load_index: int | None = None
    pool: str | None = None
    zone_choice: ZoneChoice | None = None
    server_index: int = -1
    explanation: object = None

    @property
    def placed(self) -> bool:
        return self.outcome != Outcome.REJECTED

    def to_dict(self):
        return {
            "outcome": str(self.outcome),
            "reason": None if self.reason is None else str(self.reason),
            "server": self.server,
            "zone": self.zone,
            "session": self.session,
            "load_index": self.load_index,
        }


class Decisions:
    """A ``launch_many`` result: a list of decisions plus code arrays (-1 = none)."""

    def __init__(self, decisions: list, zone_index):
        self._rows = decisions
        self.outcome = np.array([int(d.outcome) for d in decisions], dtype=np.int64)
        self.reason = np.array([0 if d.reason is None else int(d.reason) for d in decisions], dtype=np.int64)
        self.server = np.array([d.server_index for d in decisions], dtype=np.int64)
        self.session = np.array([-1 if d.session is None else d.session for d in decisions], dtype=np.int64)
        self.zone = np.array([zone_index(d.zone) for d in decisions], dtype=np.int64)
        self.load_index = np.array([-1 if d.load_index is None else d.load_index for d in decisions],
                                   dtype=np.int64)

    def __len__(self):
        return len(self._rows)

    def __getitem__(self, i):
        return self._rows[i]

    def __iter__(self):
        return iter(self._rows)

    def server_names(self):
        return [d.server for d in self._rows]


LIVE = (SessionState.LAUNCHING, SessionState.ACTIVE, SessionState.DISCONNECTED)

SERVER_DTYPE = np.dtype(
    [("index", "i8"), ("name", "O"), ("zone", "O"), ("pool", "O"), ("tags", "O"),
     ("max_sessions", "i8"), ("weight", "i8"), ("power", "U13"), ("registered", "?"),
     ("mode", "U11"), ("sessions", "i8"), ("pending", "i8"), ("load_index", "i8"),
     ("cpu", "f8"), ("mem", "f8"), ("disk_queue", "f8"), ("custom", "f8"),
     ("sinbinned", "?"), ("image", "O"), ("picks", "i8"), ("place_last", "?"),
     ("slow", "?"), ("logons", "i8"), ("logon_ewma", "f8")]
)

SESSION_DTYPE = np.dtype(
    [("id", "i8"), ("user", "O"), ("server", "O"), ("pool", "O"), ("state", "U12"),
     ("endpoint", "O"), ("apps", "O"), ("t_launch", "f8"), ("t_state", "f8"), ("pending", "?")]
)


# ---------------------------------------------------------------- the scheduler
class ReferenceScheduler:
    """Plain-Python scheduler following docs/SEMANTICS.md to the letter."""

    def __init__(self, *, enforce_entitlement=False, seed=0, licences=None, sinbin_seconds=60.0,
                 pending_timeout=120.0, clock=None):
        self.enforce_entitlement = _check_bool("enforce_entitlement", enforce_entitlement)
        self.seed = _check_int("seed", seed, 0, 2**31 - 1)
        self._cap = _check_int("licences", licences, 0, allow_none=True)
        self.sinbin_seconds = _check_float("sinbin_seconds", sinbin_seconds, 0.0)
        self.pending_timeout = _check_float("pending_timeout", pending_timeout, 0.0, lo_open=True)
        if clock is not None and not callable(clock):
            raise InvalidArgument("clock", clock, "must be callable")
        self._clock = clock or time.monotonic
        self._now = -math.inf
        self.pools: dict[str, Pool] = {}
        self.apps: dict[str, App] = {}
        self.users: dict[object, User] = {}
        self.servers_by_name: dict[str, Server] = {}  # present servers, in index order
        self.n_indices = 0  # server indices handed out so far
        self.sessions_by_id: dict[int, Session] = {}  # every session ever, in creation order
        self.next_session = 1
        self.pick_seq = 0

    # ------------------------------------------------------------ time
    def _time(self, now) -> float:
        """``now`` (or the clock) as a float, checked against the last operation.
        Changes nothing; ``_advance`` moves the clock once the call is valid."""
        if now is None:
            t = float(self._clock())
        else:
            try:
                t = float(now)
            except (TypeError, ValueError):
                raise InvalidArgument("now", now, "must be a number of seconds") from None
        if not math.isfinite(t):
            raise InvalidArgument("now", now, "must be a finite number of seconds")
        if t < self._now:
            raise TimeWentBackwards("now", now, "earlier than the previous operation")
        return t

    def _advance(self, t: float):
        self._now = t

    @property
    def now(self):
        return None if self._now == -math.inf else self._now

    # ------------------------------------------------------------ derived quantities
    def live(self):
        """Live sessions, oldest first."""
        return [x for x in self.sessions_by_id.values() if x.state in LIVE]

    def server_sessions(self, srv: Server) -> int:
        return sum(1 for x in self.live() if x.server == srv.name)

    def pending(self, srv: Server, now: float) -> int:
        return sum(
            1 for x in self.live()
            if x.server == srv.name and x.state == SessionState.LAUNCHING
            and x.t_launch + self.pending_timeout > now
        )

    def sinbinned(self, srv: Server, now: float) -> bool:
        return srv.sinbin_until > now

    def load_index_of(self, srv: Server) -> int:
        p = self.pools[srv.pool]
        return load_index(p.load_rules, self.server_sessions(srv), srv.max_sessions, srv.cpu, srv.mem,
                          srv.disk_queue, srv.custom, p.cpu_full, p.memory_full, p.disk_queue_full)

    def available(self, srv: Server) -> bool:
        return srv.power == Power.ON and srv.registered and srv.mode == Mode.ENABLED

    def eligible(self, srv: Server) -> bool:
        return (self.available(srv) and self.server_sessions(srv) < srv.max_sessions
                and self.load_index_of(srv) < FULL)

    @staticmethod
    def matches(srv: Server, app: App) -> bool:
        return srv.tags >= app.tag_restriction

    def score(self, srv: Server) -> int:
        li = self.load_index_of(srv)
        if self.pools[srv.pool].load_balancing == LoadBalancing.HORIZONTAL:
            return li * 1_000_000 // srv.weight
        return 10000 - li

    def holders(self) -> set:
        return {x.user for x in self.live()}

    def user_sessions(self, user) -> list:
        return [x for x in self.live() if x.user == user]

    def app_instances(self, app_name) -> int:
        return sum(1 for x in self.live() if app_name in x.apps)

    def user_app_instances(self, user, app_name) -> int:
        return sum(1 for x in self.user_sessions(user) if app_name in x.apps)

    @property
    def licences_in_use(self) -> int:
        return len(self.holders())

    @property
    def licence_cap(self):
        return self._cap

    @property
    def live_sessions(self) -> int:
        return len(self.live())

    # ------------------------------------------------------------ settings
    def settings(self, enforce_entitlement=None, seed=None, sinbin_seconds=None, pending_timeout=None):
        if enforce_entitlement is not None:
            enforce_entitlement = _check_bool("enforce_entitlement", enforce_entitlement)
        if seed is not None:
            seed = _check_int("seed", seed, 0, 2**31 - 1)
        if sinbin_seconds is not None:
            sinbin_seconds = _check_float("sinbin_seconds", sinbin_seconds, 0.0)
        if pending_timeout is not None:
            pending_timeout = _check_float("pending_timeout", pending_timeout, 0.0, lo_open=True)
        if enforce_entitlement is not None:
            self.enforce_entitlement = enforce_entitlement
        if sinbin_seconds is not None:
            self.sinbin_seconds = sinbin_seconds
        if pending_timeout is not None:
            self.pending_timeout = pending_timeout
        if seed is not None:
            self.seed = seed
            for srv in self.servers_by_name.values():
                if srv.tb < 0:
                    srv.tb = initial_tiebreak(seed, srv.index)

    def set_licences(self, cap):
        self._cap = _check_int("cap", cap, 0, allow_none=True)

    # ------------------------------------------------------------ configuration
    def add_pool(self, name, load_balancing="horizontal",
                 zone_preference=("app_home", "user_home", "user_location"), failover=True,
                 session_reconnection="always", reconnect_in_maintenance=True, external_access=False,
                 logon_tolerance=2, tolerance_is_hard=False, max_sessions_per_user=None,
                 load_rules=("sessions",), cpu_full=90.0, memory_full=90.0, disk_queue_full=8.0,
                 slow_logon_factor=None, slow_min_samples=5):
        _check_name("name", name)
        if name in self.pools:
            raise DuplicateName("name", name, "a pool with this name exists")
        lb = _enum(LoadBalancing, "load_balancing", load_balancing)
        zp = _enums(ZonePreference, "zone_preference", zone_preference)
        if len(set(zp)) != len(zp):
            raise InvalidArgument("zone_preference", zone_preference, "lists a preference twice")
        pool = Pool(
            name=name,
            load_balancing=lb,
            zone_preference=zp,
            failover=_check_bool("failover", failover),
            session_reconnection=_enum(Reconnection, "session_reconnection", session_reconnection),
            reconnect_in_maintenance=_check_bool("reconnect_in_maintenance", reconnect_in_maintenance),
            external_access=_check_bool("external_access", external_access),
            logon_tolerance=_check_int("logon_tolerance", logon_tolerance, 0),
            tolerance_is_hard=_check_bool("tolerance_is_hard", tolerance_is_hard),
            max_sessions_per_user=_check_int("max_sessions_per_user", max_sessions_per_user, 1,
                                             allow_none=True),
            load_rules=_enums(LoadRule, "load_rules", load_rules),
            cpu_full=_check_float("cpu_full", cpu_full, 0.0, 100.0, lo_open=True),
            memory_full=_check_float("memory_full", memory_full, 0.0, 100.0, lo_open=True),
            disk_queue_full=_check_float("disk_queue_full", disk_queue_full, 0.0, lo_open=True),
        )
        if slow_logon_factor is not None:
            f = _check_float("slow_logon_factor", slow_logon_factor, 0.0, 1e6)
            if 0.0 < f <= 1.0:
                raise InvalidArgument("slow_logon_factor", slow_logon_factor, "must be 0 (off) or above 1")
            pool.slow_logon_factor = f or None
        pool.slow_min_samples = _check_int("slow_min_samples", slow_min_samples, 1)
        if not pool.load_rules:
            raise InvalidArgument("load_rules", load_rules, "must enable at least one rule")
        pool.load_rules = tuple(dict.fromkeys(pool.load_rules))
        self.pools[name] = pool

    def add_app(self, name, pools, home_zone=None, tag_restriction=None, max_instances_total=None,
                max_instances_per_user=None):
        _check_name("name", name)
        if name in self.apps:
            raise DuplicateName("name", name, "an app with this name exists")
        pool_names = _names("pools", pools)
        if not pool_names:
            raise InvalidArgument("pools", pools, "an app must be published on at least one pool")
        if len(set(pool_names)) != len(pool_names):
            raise InvalidArgument("pools", pools, "lists a pool twice")
        for p in pool_names:
            if p not in self.pools:
                raise UnknownPool("pools", p, "no such pool")
        if home_zone is not None:
            _check_name("home_zone", home_zone)
        tags = frozenset(_names("tag_restriction", tag_restriction))
        mt = _check_int("max_instances_total", max_instances_total, 0, allow_none=True)
        mpu = _check_int("max_instances_per_user", max_instances_per_user, 0, allow_none=True)
        self.apps[name] = App(name, pool_names, home_zone, tags, mt, mpu)

    def add_user(self, id, home_zone=None, apps=()):
        if id is None:
            raise InvalidArgument("id", id, "a user id is required")
        try:
            hash(id)
        except TypeError:
            raise InvalidArgument("id", id, "must be hashable") from None
        if id in self.users:
            raise DuplicateName("id", id, "a user with this id exists")
        if home_zone is not None:
            _check_name("home_zone", home_zone)
        self.users[id] = User(id, home_zone, frozenset(_names("apps", apps)))

    def add_server(self, name, zone, pool, tags=(), max_sessions=250, weight=100, power="on",
                   registered=True, mode="enabled", image=None, now=None):
        _check_name("name", name)
        if name in self.servers_by_name:
            raise DuplicateName("name", name, "a server with this name exists")
        _check_name("zone", zone)
        if pool not in self.pools:
            raise UnknownPool("pool", pool, "no such pool")
        tag_names = _names("tags", tags)
        max_sessions = _check_int("max_sessions", max_sessions, 1)
        weight = _check_int("weight", weight, 1, 10000)
        power = _enum(Power, "power", power)
        registered = _check_bool("registered", registered)
        mode = _enum(Mode, "mode", mode)
        if image is not None and not isinstance(image, str):
            raise InvalidArgument("image", image, "must be a string or None")
        t = None
        if now is not None:
            t = _check_float("now", now)
            if t < self._now:
                raise TimeWentBackwards("now", now, "earlier than the previous operation")
        index = self.n_indices
        self.n_indices += 1
        self.servers_by_name[name] = Server(
            index=index, name=name, zone=zone, pool=pool, tags=frozenset(tag_names),
            max_sessions=max_sessions, weight=weight, power=power, registered=registered, mode=mode,
            image=image, tb=initial_tiebreak(self.seed, index),
        )
        if t is not None:
            self._advance(t)
        return index

    def _server(self, server, fld="server") -> Server:
        if isinstance(server, (int, np.integer)) and not isinstance(server, bool):
            for srv in self.servers_by_name.values():
                if srv.index == int(server):
                    return srv
            raise UnknownServer(fld, server, "no such server")
        try:
            srv = self.servers_by_name.get(server)
        except TypeError:
            srv = None
        if srv is None:
            raise UnknownServer(fld, server, "no such server")
        return srv

    # ------------------------------------------------------------ launch
    def launch(self, user, app, location=None, endpoint=None, external=False, now=None, explain=False):
        t = self._time(now)
        for fld, v in (("app", app), ("location", location), ("user", user), ("endpoint", endpoint)):
            _check_hashable(fld, v)
        if app not in self.apps:
            raise UnknownApp("app", app, "no such app")
        self._advance(t)
        return self._launch(user, self.apps[app], location, endpoint, bool(external), t)

    def _resolve_zones(self, pool: Pool, user: User | None, app: App, location) -> list:
        """[(zone, preference)], None entries dropped, duplicates at their first place."""
        out, seen = [], set()
        for pref in pool.zone_preference:
            if pref == ZonePreference.USER_LOCATION:
                z = location
            elif pref == ZonePreference.USER_HOME:
                z = None if user is None else user.home_zone
            else:
                z = app.home_zone
            if z is None or z in seen:
                continue
            seen.add(z)
            out.append((z, pref))
        return out

    @staticmethod
    def _in_reach(pool: Pool, zones: list, zone) -> bool:
        if not zones:
            return True
        if pool.failover:
            return True
        return any(z == zone for z, _ in zones)

    def _instance_limit(self, user_id, app: App):
        """Step 5's instance limits: the reason if one is reached, else None."""
        if app.max_instances_per_user is not None and \
                self.user_app_instances(user_id, app.name) >= app.max_instances_per_user:
            return Reason.USER_LIMIT
        if app.max_instances_total is not None and \
                self.app_instances(app.name) >= app.max_instances_total:
            return Reason.APP_LIMIT
        return None

    def _reusable(self, x: Session, app: App, ap: list) -> bool:
        if x.pool not in ap:
            return False
        srv = self.servers_by_name.get(x.server)
        if srv is None or srv.power != Power.ON or not srv.registered:
            return False
        pool = self.pools[x.pool]
        if not (srv.mode in (Mode.ENABLED, Mode.DRAIN)
                or (srv.mode == Mode.MAINTENANCE and pool.reconnect_in_maintenance)):
            return False
        if not self.matches(srv, app):
            return False
        if app.name not in x.apps and self._instance_limit(x.user, app) is not None:
            return False
        return True

    def _existing(self, outcome, x: Session, app: App):
        x.apps.add(app.name)  # "the app joins" (a set: no-op when already in)
        srv = self.servers_by_name[x.server]
        return Decision(outcome, None, srv.name, srv.zone, x.id, self.load_index_of(srv), x.pool,
                        None, srv.index)

    def _launch(self, user_id, app: App, location, endpoint, external: bool, now: float) -> Decision:
        rejected = lambda reason: Decision(Outcome.REJECTED, reason)  # noqa: E731
        user = self.users.get(user_id)
        # unknown user: created (not enforced) or refused as not entitled (enforced)
        if user is None and not self.enforce_entitlement:
            user = self.users[user_id] = User(user_id, None, frozenset())
        ap = [p for p in app.pools if not external or self.pools[p].external_access]

        # 1. entitlement, external
        if self.enforce_entitlement and (user is None or app.name not in user.apps):
            return rejected(Reason.NOT_ENTITLED)
        if external and not ap:
            return rejected(Reason.EXTERNAL_DENIED)

        # 2. reconnect, 3. share
        mine = [x for x in self.user_sessions(user_id) if self._reusable(x, app, ap)]
        for x in mine:
            mode = self.pools[x.pool].session_reconnection
            if x.state == SessionState.DISCONNECTED and (
                    mode in (Reconnection.ALWAYS, Reconnection.DISCONNECTED_ONLY)
                    or (mode == Reconnection.SAME_ENDPOINT and x.endpoint == endpoint)):
                return self._reconnect(x, app, endpoint, now)
        for x in mine:
            if x.state == SessionState.ACTIVE and self.pools[x.pool].session_reconnection == Reconnection.ALWAYS \
                    and x.endpoint != endpoint:
                return self._reconnect(x, app, endpoint, now)
        for x in mine:
            if x.state in (SessionState.ACTIVE, SessionState.LAUNCHING):
                return self._existing(Outcome.SHARED, x, app)

        # 4. licence
        if not self.user_sessions(user_id) and self._cap is not None and len(self.holders()) >= self._cap:
            return rejected(Reason.LICENCE_EXHAUSTED)

        # 5. limits
        limit = self._instance_limit(user_id, app)
        if limit is not None:
            return rejected(limit)
        ap2 = []
        for p in ap:
            mpu = self.pools[p].max_sessions_per_user
            if mpu is None or sum(1 for x in self.user_sessions(user_id) if x.pool == p) < mpu:
                ap2.append(p)
        if not ap2:
            return rejected(Reason.USER_LIMIT)

        # 6. zones, 7. pick
        zones = {p: self._resolve_zones(self.pools[p], user, app, location) for p in ap2}
        for sinbin_allowed in (False, True):
            for p in ap2:
                pool = self.pools[p]
                cands = [
                    srv for srv in self.servers_by_name.values()
                    if srv.pool == p and self.eligible(srv) and self.matches(srv, app)
                    and self._in_reach(pool, zones[p], srv.zone)
                    and (sinbin_allowed or not (self.sinbinned(srv, now) or srv.slow))
                ]
                if not cands:
                    continue
                zone_set, choice = None, None
                for z, pref in zones[p]:
                    in_zone = [srv for srv in cands if srv.zone == z]
                    if in_zone:
                        zone_set, choice = in_zone, ZoneChoice[pref.name]
                        break
                if zone_set is None:
                    zone_set = cands
                    choice = ZoneChoice.FAILOVER if zones[p] else ZoneChoice.ANY
                # pass 2: the healthiest of the set first (slow before sin-binned)
                health = min((self.sinbinned(srv, now), srv.slow) for srv in zone_set)
                zone_set = [srv for srv in zone_set if (self.sinbinned(srv, now), srv.slow) == health]
                keep = [srv for srv in zone_set if self.pending(srv, now) < pool.logon_tolerance]
                if not keep:
                    if pool.tolerance_is_hard:
                        return rejected(Reason.LOGON_TOLERANCE)
                    keep = zone_set
                # place-last: after every unmarked candidate of the same set
                best = min(keep, key=lambda srv: (srv.place_last, self.score(srv), srv.tb))
                return self._commit(user_id, app, best, endpoint, now, choice)

        # 8. nothing in either pass
        for p in ap2:
            pool = self.pools[p]
            for srv in self.servers_by_name.values():
                if srv.pool == p and self._in_reach(pool, zones[p], srv.zone) and self.matches(srv, app) \
                        and self.available(srv):
                    return rejected(Reason.FULL)
        return rejected(Reason.NO_SERVER)

    def _reconnect(self, x: Session, app: App, endpoint, now) -> Decision:
        x.state = SessionState.ACTIVE
        x.endpoint = endpoint
        x.t_state = now
        return self._existing(Outcome.RECONNECTED, x, app)

    def _commit(self, user_id, app: App, srv: Server, endpoint, now, choice) -> Decision:
        sid = self.next_session
        self.next_session += 1
        self.sessions_by_id[sid] = Session(sid, user_id, srv.name, srv.pool, {app.name},
                                           SessionState.LAUNCHING, endpoint, now, now)
        self.pick_seq += 1
        srv.tb = self.pick_seq
        srv.picks += 1
        return Decision(Outcome.PLACED, None, srv.name, srv.zone, sid, self.load_index_of(srv), srv.pool,
                        choice, srv.index)

    def launch_many(self, users, apps, locations=None, endpoints=None, external=None, now=None):
        n = len(users)
        if len(apps) != n:
            raise InvalidArgument("apps", f"length {len(apps)}", f"must have length {n} like users")
        for k, a in enumerate(apps):
            _check_hashable(f"apps[{k}]", a)
        for k, a in enumerate(apps):
            if a not in self.apps:
                raise UnknownApp(f"apps[{k}]", a, "no such app")
        for fld, rows in (("locations", locations), ("endpoints", endpoints)):
            if rows is not None and (isinstance(rows, str) or len(rows) != n):
                raise InvalidArgument(fld, rows, f"must be a sequence of length {n}")
        for fld, rows in (("users", users), ("locations", locations), ("endpoints", endpoints)):
            for k, v in enumerate(() if rows is None else rows):
                _check_hashable(f"{fld}[{k}]", v)
        if external is not None and len(external) != n:
            raise InvalidArgument("external", external, f"must have length {n}")
        if now is None:
            nows = [float(self._clock())] * n
        elif np.ndim(now) == 0:
            nows = [_check_float("now", now)] * n
        else:
            nows = [float(v) for v in now]
            if len(nows) != n:
                raise InvalidArgument("now", now, f"must have length {n}")
            for k, v in enumerate(nows):
                if not math.isfinite(v):
                    raise InvalidArgument(f"now[{k}]", v, "must be finite")
            for k in range(1, n):
                if nows[k] < nows[k - 1]:
                    raise InvalidArgument(f"now[{k}]", nows[k], "times must not decrease")
        if n and nows[0] < self._now:
            raise TimeWentBackwards("now", nows[0], "earlier than the previous operation")
        out = []
        for k in range(n):
            self._advance(nows[k])
            out.append(self._launch(users[k], self.apps[apps[k]],
                                    None if locations is None else locations[k],
                                    None if endpoints is None else endpoints[k],
                                    False if external is None else bool(external[k]), nows[k]))
        zone_names = list(dict.fromkeys(s.zone for s in self.servers_by_name.values()))
        return Decisions(out, lambda z: -1 if z is None else zone_names.index(z))

    # ------------------------------------------------------------ sessions
    def _session(self, session) -> Session:
        try:
            sid = int(session)
        except (TypeError, ValueError):
            raise InvalidArgument("session", session, "must be a session id (int)") from None
        x = self.sessions_by_id.get(sid)
        if x is None:
            raise UnknownSession("session", session, "no such session")
        if x.state == SessionState.ENDED:
            raise SessionEnded("session", session, "the session has ended")
        return x

    def _end(self, x: Session, now: float):
        x.state = SessionState.ENDED
        x.t_state = now

    def logon_complete(self, session, now=None):
        t = self._time(now)
        x = self._session(session)
        if x.state != SessionState.LAUNCHING:
            raise InvalidState("session", session, "not launching")
        self._advance(t)
        x.state = SessionState.ACTIVE
        x.t_state = t
        self._record_logon(self.servers_by_name[x.server], t - x.t_launch)

    # ------------------------------------------------------------ slow servers
    def _record_logon(self, srv: Server, seconds: float):
        """A logon of ``seconds`` on srv: its EWMA, then the pool's slow rule."""
        srv.logon_ewma = seconds if srv.logons == 0 else srv.logon_ewma + SLOW_EWMA_ALPHA * (seconds - srv.logon_ewma)
        srv.logons += 1
        pool = self.pools[srv.pool]
        if pool.slow_logon_factor is None:
            return
        if pool.slow_wait > 0:
            pool.slow_wait -= 1
            self._judge(srv)
            return
        judged = sorted(x.logon_ewma for x in self.servers_by_name.values()
                        if x.pool == pool.name and x.logons >= pool.slow_min_samples)
        pool.logon_median = judged[(len(judged) - 1) // 2] if judged else -1.0
        pool.slow_wait = len(judged) // SLOW_MEDIAN_EVERY
        for x in self.servers_by_name.values():
            if x.pool == pool.name:
                self._judge(x)

    def _judge(self, srv: Server):
        pool = self.pools[srv.pool]
        srv.slow = (srv.logons >= pool.slow_min_samples and pool.logon_median >= 0.0
                    and srv.logon_ewma > pool.slow_logon_factor * pool.logon_median)

    def disconnect(self, session, now=None):
        t = self._time(now)
        x = self._session(session)
        if x.state not in (SessionState.ACTIVE, SessionState.LAUNCHING):
            raise InvalidState("session", session, "not active or launching")
        self._advance(t)
        x.state = SessionState.DISCONNECTED
        x.t_state = t

    def logoff(self, session, now=None):
        t = self._time(now)
        x = self._session(session)
        self._advance(t)
        self._end(x, t)

    def close_app(self, session, app, now=None) -> bool:
        if app not in self.apps:
            raise UnknownApp("app", app, "no such app")
        t = self._time(now)
        x = self._session(session)
        if app not in x.apps:
            raise InvalidArgument("app", app, f"not running in session {session}")
        self._advance(t)
        x.apps.discard(app)
        if not x.apps:
            self._end(x, t)
            return True
        return False

    def launch_failed(self, session, now=None):
        t = self._time(now)
        x = self._session(session)
        if x.state != SessionState.LAUNCHING:
            raise InvalidState("session", session, "not launching")
        self._advance(t)
        self._end(x, t)
        self.servers_by_name[x.server].sinbin_until = t + self.sinbin_seconds

    # ------------------------------------------------------------ servers
    def _end_sessions_on(self, srv: Server, t: float) -> list:
        lost = [x.id for x in self.live() if x.server == srv.name]
        for sid in lost:
            self._end(self.sessions_by_id[sid], t)
        return lost

    def set_power(self, server, state, now=None) -> list:
        state = _enum(Power, "state", state)
        srv = self._server(server)
        t = self._time(now)
        self._advance(t)
        srv.power = state
        if state == Power.OFF:
            srv.logons, srv.logon_ewma, srv.slow = 0, 0.0, False
            return self._end_sessions_on(srv, t)
        return []

    def set_registered(self, server, registered, now=None):
        registered = _check_bool("registered", registered)
        srv = self._server(server)
        t = self._time(now)
        self._advance(t)
        srv.registered = registered

    def set_mode(self, server, mode, now=None):
        mode = _enum(Mode, "mode", mode)
        srv = self._server(server)
        t = self._time(now)
        self._advance(t)
        srv.mode = mode

    def set_place_last(self, servers, flag, now=None):
        if isinstance(servers, (str, int, np.integer)) and not isinstance(servers, (bool, np.bool_)):
            servers = [servers]
        elif isinstance(servers, (bytes, dict)) or not isinstance(servers, Iterable):
            raise InvalidArgument("servers", servers, "must be a sequence")
        flag = _check_bool("flag", flag)
        rows = [self._server(x, "servers") for x in servers]
        t = self._time(now)
        self._advance(t)
        for srv in rows:
            srv.place_last = flag

    def set_image(self, server, image, now=None):
        if image is not None and (not isinstance(image, str) or not image):
            raise InvalidArgument("image", image, "must be a non-empty string")
        srv = self._server(server)
        t = self._time(now)
        self._advance(t)
        srv.image = image

    def remove_server(self, server, force=False, now=None) -> list:
        srv = self._server(server)
        force = _check_bool("force", force)
        if self.server_sessions(srv) and not force:
            raise ServerBusy("server", server, "holds sessions (use force=True)")
        t = self._time(now)
        self._advance(t)
        lost = self._end_sessions_on(srv, t)
        del self.servers_by_name[srv.name]
        return lost

    @staticmethod
    def _telemetry_value(fld, v):
        """The spec's ranges: cpu, mem in [0, 100]; disk_queue >= 0 and finite;
        custom in [0, 10000]; never NaN."""
        v = float(v)
        hi = {"cpu": 100.0, "mem": 100.0, "disk_queue": math.inf, "custom": 10000.0}[fld]
        return not (math.isnan(v) or v < 0.0 or v > hi or math.isinf(v))

    def telemetry(self, server, cpu=None, mem=None, disk_queue=None, custom=None, now=None):
        srv = self._server(server)
        values = {"cpu": cpu, "mem": mem, "disk_queue": disk_queue, "custom": custom}
        for fld, v in values.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
                raise InvalidArgument(fld, v, "must be a number")
        t = self._time(now)
        for fld, v in values.items():
            if v is not None and not self._telemetry_value(fld, v):
                raise InvalidArgument(fld, v, "NaN or out of range")
        self._advance(t)
        for fld, v in values.items():
            if v is not None:
                setattr(srv, fld, float(v))

    def telemetry_many(self, servers, cpu=None, mem=None, disk_queue=None, custom=None, now=None):
        if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
            raise InvalidArgument("servers", servers, "must be a sequence of server names")
        rows = [self._server(name, f"servers[{k}]") for k, name in enumerate(servers)]
        n = len(rows)
        cols = {}
        for fld, v in (("cpu", cpu), ("mem", mem), ("disk_queue", disk_queue), ("custom", custom)):
            if v is None:
                continue
            try:
                arr = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidArgument(fld, v, "must be an array of numbers") from None
            if arr.ndim != 1 or arr.shape[0] != n:
                raise InvalidArgument(fld, f"shape {arr.shape}", f"must have length {n} like servers")
            cols[fld] = [float(x) for x in arr]
        t = self._time(now)
        for k in range(n):
            for fld, col in cols.items():
                if not self._telemetry_value(fld, col[k]):
                    raise InvalidArgument(f"{fld}[{k}]" if n > 1 else fld, col[k], "NaN or out of range")
        self._advance(t)
        for k, srv in enumerate(rows):
            for fld, col in cols.items():
                setattr(srv, fld, col[k])

    # ------------------------------------------------------------ views
    def servers(self) -> np.ndarray:
        now = self._now
        rows = list(self.servers_by_name.values())
        out = np.zeros(len(rows), dtype=SERVER_DTYPE)
        for k, srv in enumerate(rows):
            out[k] = (srv.index, srv.name, srv.zone, srv.pool, srv.tags, srv.max_sessions, srv.weight,
                      str(srv.power), srv.registered, str(srv.mode), self.server_sessions(srv),
                      self.pending(srv, now), self.load_index_of(srv), srv.cpu, srv.mem, srv.disk_queue,
                      srv.custom, self.sinbinned(srv, now), srv.image, srv.picks, srv.place_last,
                      srv.slow, srv.logons, srv.logon_ewma)
        return out

    def server(self, name) -> dict:
        srv = self._server(name)
        row = self.servers()[[r.name for r in self.servers_by_name.values()].index(srv.name)]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in SERVER_DTYPE.names}

    def sessions(self) -> np.ndarray:
        rows = self.live()
        out = np.zeros(len(rows), dtype=SESSION_DTYPE)
        for k, x in enumerate(rows):
            out[k] = (x.id, x.user, x.server, x.pool, str(x.state), x.endpoint, tuple(sorted(x.apps)),
                      x.t_launch, x.t_state,
                      x.state == SessionState.LAUNCHING and x.t_launch + self.pending_timeout > self._now)
        return out

    def session(self, id) -> dict:
        x = self._session(id)
        row = self.sessions()[[y.id for y in self.live()].index(x.id)]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in SESSION_DTYPE.names}

    def server_names(self) -> list:
        return list(self.servers_by_name)

    @property
    def pool_names(self) -> list:
        return list(self.pools)

    @property
    def app_names(self) -> list:
        return list(self.apps)

    @property
    def user_ids(self) -> list:
        return list(self.users)

    def copy(self) -> "ReferenceScheduler":
        clock = self._clock
        self._clock = None
        try:
            new = _copy.deepcopy(self)
        finally:
            self._clock = clock
        new._clock = clock
        return new

    def __repr__(self):
        return (f"<ReferenceScheduler servers={len(self.servers_by_name)} pools={len(self.pools)} "
                f"apps={len(self.apps)} users={len(self.users)} sessions={self.live_sessions}>")
