"""The public API: :class:`Scheduler`.

Design: the public wrapper validates, the private kernel computes. This module
holds configuration (pools, apps, users, servers, licences, settings), input
validation, table allocation and growth, batch entry points and read-only
views. The hot per-request operations (``launch``, ``logoff`` ...) are inherited
from the compiled base class ``usher._engine.Engine``. Every public method
validates all of its input before it changes anything, so an error leaves the
state exactly as it was; a batch with one bad row applies nothing.
"""

from __future__ import annotations

import copy as _copy
import ctypes
import functools
import math
import time
from threading import get_ident
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import Any, TypeVar

import numpy as np

from usher import _engine
from usher import validate as _v
from usher.core import config, groups
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.core.codes import (
    LoadBalancing,
    LoadRule,
    Mode,
    Power,
    Reconnection,
    SessionState,
    ZonePreference,
    parse_enum,
)
from usher.core.explain import FUNNEL
from usher.errors import (
    DuplicateName,
    InvalidArgument,
    InvalidState,
    ServerBusy,
    UnknownApp,
    UnknownPool,
    UnknownServer,
    UnknownUser,
    raise_for_status,
)

from usher.decisions import Decision, Decisions, Explanation

__all__ = ["Scheduler", "Decision", "Decisions", "Explanation"]

_SLOT_MASK = (1 << 32) - 1
_P64 = ctypes.POINTER(ctypes.c_int64)


def _ptr(array: np.ndarray):
    """An int64 array as a C pointer, for kernels called through ctypes."""
    return array.ctypes.data_as(_P64)


# ---------------------------------------------------------------- validation
# the rules live in usher.validate; these names are what the methods below call
def _check_int(field, value, lo=None, hi=None, allow_none=False):
    if value is None and allow_none:
        return None
    return _v.integer(field, value, lo, hi)


def _filled(n, value):
    """An int64 array of n copies of value (cheaper than np.full for small n)."""
    a = np.empty(n, dtype=np.int64)
    a.fill(value)
    return a


def _int64_rows(a: np.ndarray) -> np.ndarray:
    """An integer array as contiguous int64 rows: ``a`` itself when it already is one
    (no reshape: a batch's index arrays usually are)."""
    if a.ndim == 1 and a.dtype == np.int64 and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int64)


_check_float = _v.real
_check_bool = _v.flag
_check_name = _v.name
_as_names = _v.names


def _as_enums(field, value, enum_cls) -> tuple:
    """A name, an enum member, or a sequence of them, as enum members."""
    if value is None:
        return ()
    if isinstance(value, (str, enum_cls)):
        value = (value,)
    if isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise InvalidArgument(field, value, "must be a name or a list of names")
    return tuple(parse_enum(enum_cls, field, v) for v in value)


_ZEROS = np.zeros(4096)  # stand-in column for a telemetry field not given (never written)
_ZEROS.flags.writeable = False
_INT64 = np.dtype(np.int64)


def _telemetry_column(field, values, n):
    """One telemetry field of a batch as a contiguous float64 array of length n
    (numbers only; the kernel checks each row's range, in row order)."""
    return _v.number_array(field, values, n)


#: what a user index holds (``Scheduler._user_kind``; the same codes in _engine.pyx)
USER_DIRECTORY, USER_IMPLICIT, USER_FREE = 0, 1, 2
#: ``_sweep`` runs once this many implicit users and endpoints were added, or as
#: many as it kept the time before, whichever is more
SWEEP_FLOOR = 4096
_NO_APPS: frozenset[int] = frozenset()


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _serialised(method: _Method) -> _Method:
    """Run ``method`` under the scheduler's lock: every check that reads the
    state (a duplicate name, an unknown pool, the clock) and every write of one
    configuration call happen in one critical section."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._locked():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]  # functools.wraps keeps the signature


# ---------------------------------------------------------------- scheduler
class Scheduler(_engine.Engine):
    """The placement engine of a connection broker.

    Args:
        enforce_entitlement: refuse unknown users and apps a user is not entitled to.
        seed: seeds the tie-break order among equal servers.
        licences: concurrent licence cap (None = unlimited).
        sinbin_seconds: how long a server whose launch failed is skipped.
        pending_timeout: seconds after which a launching session stops counting
            as a pending logon.
        clock: time source for operations called without ``now``
            (default ``time.monotonic``).

    See docs/SEMANTICS.md for the exact rules and the full method list. All
    methods are safe to call from several threads.
    """

    _tags: dict[str, int]  # tag name -> its bit

    def __init__(
        self,
        *,
        enforce_entitlement: bool = False,
        seed: int = 0,
        licences: int | None = None,
        sinbin_seconds: float = config.DEFAULT_SINBIN_SECONDS,
        pending_timeout: float = config.DEFAULT_PENDING_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        enforce_entitlement = _check_bool("enforce_entitlement", enforce_entitlement)
        seed = _check_int("seed", seed, 0, 2**31 - 1)
        licences = _check_int("licences", licences, 0, _v.MAX_COUNT, allow_none=True)
        sinbin_seconds = _check_float("sinbin_seconds", sinbin_seconds, 0.0, _v.MAX_TIME)
        pending_timeout = _check_float("pending_timeout", pending_timeout, 0.0, _v.MAX_TIME, lo_open=True)
        if clock is not None and not callable(clock):
            raise InvalidArgument("clock", clock, "must be callable")
        self._clock = clock or time.monotonic
        self._seed = seed

        self._servers, self._pools, self._apps, self._users = {}, {}, {}, {}
        self._zones, self._endpoints, self._tags = {}, {}, {}
        self._server_names, self._zone_names, self._pool_names = [], [], []
        self._app_names, self._user_names = [], []
        self._names = (self._server_names, self._zone_names, self._pool_names)
        self._server_images: list = []
        self._server_tagsets: list = []
        self._user_apps: list[frozenset] = []
        self._pool_config: list[dict] = []
        self._app_config: list[dict] = []
        self._endpoint_names: list = []  # by index; None at a free index
        self._user_free, self._endpoint_free = [], []
        self._user_kind = np.full(config.INITIAL_USERS, USER_FREE, dtype=np.uint8)
        self._added_since_sweep, self._sweep_every = 0, SWEEP_FLOOR

        self._header = np.zeros(st.HEADER_LEN, dtype=np.int64)
        self._clockv = np.array([-math.inf, sinbin_seconds, pending_timeout], dtype=np.float64)
        self._t: dict[str, np.ndarray] = {}
        h = self._header
        self._alloc("server_i", st.new_table(st.SERVER_INT_FIELDS, config.INITIAL_SERVERS, np.int64), "server_cap")
        self._alloc("server_f", st.new_table(st.SERVER_FLOAT_FIELDS, config.INITIAL_SERVERS, np.float64, 0.0), None)
        self._alloc_sessions(config.INITIAL_SESSIONS)
        self._alloc_instances(config.INITIAL_SESSIONS)
        users = st.new_table(st.USER_FIELDS, config.INITIAL_USERS, np.int64)
        users[st.US_N_SESSIONS] = 0
        self._alloc("user", users, "user_cap")
        h[st.H_ENT_WORDS] = 1
        self._alloc("ent", np.zeros((config.INITIAL_USERS, 1), dtype=np.int64), None)
        self._alloc("app", st.new_table(st.APP_FIELDS, config.INITIAL_APPS, np.int64), "app_cap")
        self._alloc("app_pools", np.zeros(config.INITIAL_APPS, dtype=np.int64), "app_pools_len")
        self._alloc("pool_i", st.new_table(st.POOL_INT_FIELDS, config.INITIAL_POOLS, np.int64), "pool_cap")
        self._alloc("pool_f", st.new_table(st.POOL_FLOAT_FIELDS, config.INITIAL_POOLS, np.float64, 0.0), None)
        self._n_app_pools = 0
        self._alloc("clock", self._clockv, None)
        h[st.H_LICENCE_CAP] = -1 if licences is None else licences
        h[st.H_ENFORCE_ENTITLEMENT] = int(enforce_entitlement)
        for name in ("pend_head", "pend_tail", "sb_head", "sb_tail", "likely_pick"):
            h[getattr(st, f"H_{name.upper()}")] = -1
        self._bind(self._header, self._clockv, _kernels)
        self._dirty = True
        self._relayout()

    # ------------------------------------------------------------ tables
    def _alloc(self, table: str, array: np.ndarray, cap_slot: str | None):
        """Install ``array`` as ``table`` and write its address (and capacity)
        into the header. Record tables are stored record-major whatever order
        ``array`` comes in (see ``state.new_table``)."""
        if table in st.RECORD_TABLES and not array.flags.f_contiguous:
            array = np.asfortranarray(array)
        self._t[table] = array
        self._header[getattr(st, f"H_{table.upper()}_ADDR")] = array.ctypes.data
        if cap_slot is not None:
            # records run along the last axis, except in the tree (nodes are rows)
            size = array.shape[-1] if array.ndim == 2 and table != "tree" else array.shape[0]
            self._header[getattr(st, f"H_{cap_slot.upper()}")] = size

    def _alloc_sessions(self, cap: int):
        old = self._t.get("session_i")
        h = self._header
        ses = st.new_table(st.SESSION_INT_FIELDS, cap, np.int64)
        ses[st.SE_STATE] = SessionState.FREE
        ses[st.SE_GEN] = 1
        sesf = st.new_table(st.SESSION_FLOAT_FIELDS, cap, np.float64, 0.0)
        free = np.zeros(cap, dtype=np.int64)
        if old is None:
            free[:] = np.arange(cap - 1, -1, -1)
            top = cap
        else:
            n_old = old.shape[1]
            ses[:, :n_old] = old
            sesf[:, :n_old] = self._t["session_f"]
            old_top = int(h[st.H_SESSION_FREE_TOP])
            added = np.arange(cap - 1, n_old - 1, -1)
            free[: len(added)] = added
            free[len(added) : len(added) + old_top] = self._t["session_free"][:old_top]
            top = len(added) + old_top
        self._alloc("session_i", ses, "session_cap")
        self._alloc("session_f", sesf, None)
        self._alloc("session_free", free, None)
        h[st.H_SESSION_FREE_TOP] = top

    def _alloc_instances(self, cap: int):
        old = self._t.get("instance")
        h = self._header
        inst = st.new_table(st.INSTANCE_FIELDS, cap, np.int64)
        free = np.zeros(cap, dtype=np.int64)
        if old is None:
            free[:] = np.arange(cap - 1, -1, -1)
            top = cap
        else:
            n_old = old.shape[1]
            inst[:, :n_old] = old
            old_top = int(h[st.H_INSTANCE_FREE_TOP])
            added = np.arange(cap - 1, n_old - 1, -1)
            free[: len(added)] = added
            free[len(added) : len(added) + old_top] = self._t["instance_free"][:old_top]
            top = len(added) + old_top
        self._alloc("instance", inst, "instance_cap")
        self._alloc("instance_free", free, None)
        h[st.H_INSTANCE_FREE_TOP] = top

    def _reserve(self, rows: int):
        """Make room for ``rows`` more sessions and app instances (lock held)."""
        h = self._header
        if h[st.H_SESSION_FREE_TOP] < rows:
            cap = int(h[st.H_SESSION_CAP])
            need = cap + rows - int(h[st.H_SESSION_FREE_TOP])
            self._alloc_sessions(max(2 * cap, need))
        if h[st.H_INSTANCE_FREE_TOP] < rows:
            cap = int(h[st.H_INSTANCE_CAP])
            need = cap + rows - int(h[st.H_INSTANCE_FREE_TOP])
            self._alloc_instances(max(2 * cap, need))

    def _grow(self, table: str, needed: int, cap_slot: str | None, fill=st.NONE):
        arr = self._t[table]
        cap = arr.shape[-1]
        if needed <= cap:
            return
        self._alloc(table, st.grow_table(arr, max(2 * cap, needed), fill), cap_slot)

    def _relayout(self):
        """Group the servers anew and rebuild every tree (lock held)."""
        h = self._header
        n_pools = len(self._pool_names)
        n_zones = max(1, len(self._zone_names))
        h[st.H_N_ZONES] = n_zones
        grp, pz, tree, g_start, g_count = groups.layout(
            self._t["server_i"], int(h[st.H_N_SERVERS]), n_pools, n_zones
        )
        self._alloc("group", grp, "group_cap")
        self._alloc("pz", pz, "pz_cap")
        self._alloc("tree", tree, "tree_len")
        pool = self._t["pool_i"]
        pool[st.PO_G_START, :n_pools] = g_start[:n_pools]
        pool[st.PO_G_COUNT, :n_pools] = g_count[:n_pools]
        n_groups = int(np.count_nonzero(grp[st.GR_N_SERVERS] > 0)) if grp.shape[1] else 0
        _kernels.build_trees.ctypes(_ptr(self._header), n_groups)
        self._dirty = False

    # ------------------------------------------------------------ locking
    def _locked(self):
        return _Locked(self)

    def _zone_index(self, zone, field):
        """Index of a zone name, interned on first use (configuration only)."""
        if zone is None:
            return -1
        _check_name(field, zone)
        idx = self._zones.get(zone)
        if idx is None:
            idx = len(self._zone_names)
            self._zones[zone] = idx
            self._zone_names.append(zone)
            self._dirty = True
        return idx

    def _tag_mask(self, field, tags) -> int:
        names = _as_names(field, tags)
        new = [t for t in dict.fromkeys(names) if t not in self._tags]
        if len(self._tags) + len(new) > config.MAX_TAGS:
            raise InvalidArgument(field, tags, f"at most {config.MAX_TAGS} distinct tags")
        for t in new:
            self._tags[t] = len(self._tags)
        mask = 0
        for t in names:
            mask |= 1 << self._tags[t]
        return mask - (1 << 64) if mask >= (1 << 63) else mask

    # ------------------------------------------------------------ settings
    def settings(self, enforce_entitlement: bool | None = None, seed: int | None = None,
                 sinbin_seconds: float | None = None, pending_timeout: float | None = None) -> None:
        """Change scheduler settings; arguments left None stay as they are."""
        if enforce_entitlement is not None:
            enforce_entitlement = _check_bool("enforce_entitlement", enforce_entitlement)
        if seed is not None:
            seed = _check_int("seed", seed, 0, 2**31 - 1)
        if sinbin_seconds is not None:
            sinbin_seconds = _check_float("sinbin_seconds", sinbin_seconds, 0.0, _v.MAX_TIME)
        if pending_timeout is not None:
            pending_timeout = _check_float("pending_timeout", pending_timeout, 0.0, _v.MAX_TIME, lo_open=True)
        with self._locked():
            if enforce_entitlement is not None:
                self._header[st.H_ENFORCE_ENTITLEMENT] = int(enforce_entitlement)
            if sinbin_seconds is not None:
                self._clockv[st.CK_SINBIN_SECONDS] = sinbin_seconds
            if pending_timeout is not None and pending_timeout != self._clockv[st.CK_PENDING_TIMEOUT]:
                self._clockv[st.CK_PENDING_TIMEOUT] = pending_timeout
                # launching sessions count as pending again (or no longer) at once
                if self._dirty:
                    self._relayout()
                _kernels.retime.ctypes(_ptr(self._header), int(self._header[st.H_GROUP_CAP]))
            if seed is not None and seed != self._seed:
                self._seed = seed
                srv = self._t["server_i"]
                for i in range(int(self._header[st.H_N_SERVERS])):
                    if srv[st.SV_TB, i] < 0:
                        srv[st.SV_TB, i] = st.initial_tiebreak(seed, i)
                self._dirty = True

    def set_licences(self, cap: int | None) -> None:
        """Set the concurrent licence cap (None = unlimited). Lowering it below
        the current holders ends nobody; new users are refused until it frees."""
        cap = _check_int("cap", cap, 0, _v.MAX_COUNT, allow_none=True)
        with self._locked():
            self._header[st.H_LICENCE_CAP] = -1 if cap is None else cap

    # ------------------------------------------------------------ pools, apps, users
    @_serialised
    def add_pool(
        self,
        name: str,
        load_balancing: str | LoadBalancing = "horizontal",
        zone_preference: Iterable[str | ZonePreference] = config.DEFAULT_ZONE_PREFERENCE,
        failover: bool = True,
        session_reconnection: str | Reconnection = "always",
        reconnect_in_maintenance: bool = True,
        external_access: bool = False,
        logon_tolerance: int = config.DEFAULT_LOGON_TOLERANCE,
        tolerance_is_hard: bool = False,
        max_sessions_per_user: int | None = None,
        load_rules: Iterable[str | LoadRule] = config.DEFAULT_LOAD_RULES,
        cpu_full: float = config.DEFAULT_CPU_FULL,
        memory_full: float = config.DEFAULT_MEMORY_FULL,
        disk_queue_full: float = config.DEFAULT_DISK_QUEUE_FULL,
    ) -> None:
        """Add a pool (delivery group). Pools cannot be changed once added."""
        name = _check_name("name", name)
        if name in self._pools:
            raise DuplicateName("name", name, "a pool with this name exists")
        lb = parse_enum(LoadBalancing, "load_balancing", load_balancing)
        zp = list(_as_enums("zone_preference", zone_preference, ZonePreference))
        if len(set(zp)) != len(zp):
            raise InvalidArgument("zone_preference", zone_preference, "lists a preference twice")
        failover = _check_bool("failover", failover)
        rec = parse_enum(Reconnection, "session_reconnection", session_reconnection)
        rim = _check_bool("reconnect_in_maintenance", reconnect_in_maintenance)
        ext = _check_bool("external_access", external_access)
        tol = _check_int("logon_tolerance", logon_tolerance, 0, _v.MAX_COUNT)
        hard = _check_bool("tolerance_is_hard", tolerance_is_hard)
        mpu = _check_int("max_sessions_per_user", max_sessions_per_user, 1, _v.MAX_COUNT, allow_none=True)
        rules = _as_enums("load_rules", load_rules, LoadRule)
        if not rules:
            raise InvalidArgument("load_rules", load_rules, "must enable at least one rule")
        mask = 0
        for r in rules:
            mask |= 1 << r
        cpu_full = _check_float("cpu_full", cpu_full, 0.0, 100.0, lo_open=True)
        memory_full = _check_float("memory_full", memory_full, 0.0, 100.0, lo_open=True)
        disk_queue_full = _check_float("disk_queue_full", disk_queue_full, 0.0, lo_open=True)
        with self._locked():
            p = len(self._pool_names)
            self._grow("pool_i", p + 1, "pool_cap")
            self._grow("pool_f", p + 1, None, 0.0)
            pool, poolf = self._t["pool_i"], self._t["pool_f"]
            pool[:, p] = st.NONE
            values = {
                "load_balancing": lb, "failover": failover, "reconnection": rec,
                "reconnect_in_maintenance": rim, "external": ext, "tolerance": tol,
                "tolerance_hard": hard, "max_per_user": -1 if mpu is None else mpu,
                "rules": mask, "n_zpref": len(zp), "g_start": 0, "g_count": 0,
            }
            for key, v in values.items():
                pool[getattr(st, f"PO_{key.upper()}"), p] = int(v)
            for k, z in enumerate(zp):
                pool[st.PO_ZPREF0 + k, p] = int(z)
            poolf[st.POF_CPU_FULL, p] = cpu_full
            poolf[st.POF_MEMORY_FULL, p] = memory_full
            poolf[st.POF_DISK_QUEUE_FULL, p] = disk_queue_full
            self._pools[name] = p
            self._pool_names.append(name)
            self._pool_config.append(
                dict(
                    name=name, load_balancing=str(lb), zone_preference=[str(z) for z in zp],
                    failover=failover, session_reconnection=str(rec), reconnect_in_maintenance=rim,
                    external_access=ext, logon_tolerance=tol, tolerance_is_hard=hard,
                    max_sessions_per_user=mpu, load_rules=[str(r) for r in rules],
                    cpu_full=cpu_full, memory_full=memory_full, disk_queue_full=disk_queue_full,
                )
            )
            self._dirty = True

    @_serialised
    def add_app(self, name: str, pools: Sequence[str], home_zone: str | None = None,
                tag_restriction: Iterable[str] | None = None, max_instances_total: int | None = None,
                max_instances_per_user: int | None = None) -> None:
        """Publish an app on ``pools`` (in priority order)."""
        name = _check_name("name", name)
        if name in self._apps:
            raise DuplicateName("name", name, "an app with this name exists")
        pool_names = _as_names("pools", pools)
        if not pool_names:
            raise InvalidArgument("pools", pools, "an app must be published on at least one pool")
        if len(set(pool_names)) != len(pool_names):
            raise InvalidArgument("pools", pools, "lists a pool twice")
        for p in pool_names:
            if p not in self._pools:
                raise UnknownPool("pools", p, "no such pool")
        home_zone = _v.optional_name("home_zone", home_zone)
        tags = _as_names("tag_restriction", tag_restriction)
        mt = _check_int("max_instances_total", max_instances_total, 0, _v.MAX_COUNT, allow_none=True)
        mpu = _check_int("max_instances_per_user", max_instances_per_user, 0, _v.MAX_COUNT, allow_none=True)
        with self._locked():
            mask = self._tag_mask("tag_restriction", tags)
            a = len(self._app_names)
            self._grow("app", a + 1, "app_cap")
            start = self._n_app_pools
            self._grow("app_pools", start + len(pool_names), "app_pools_len", 0)
            ap = self._t["app_pools"]
            for k, p in enumerate(pool_names):
                ap[start + k] = self._pools[p]
            self._n_app_pools += len(pool_names)
            app = self._t["app"]
            app[:, a] = st.NONE
            app[st.AP_HOME_ZONE, a] = self._zone_index(home_zone, "home_zone")
            app[st.AP_TAGS, a] = mask
            app[st.AP_MAX_TOTAL, a] = -1 if mt is None else mt
            app[st.AP_MAX_PER_USER, a] = -1 if mpu is None else mpu
            app[st.AP_INSTANCES, a] = 0
            app[st.AP_POOLS_START, a] = start
            app[st.AP_POOLS_COUNT, a] = len(pool_names)
            self._apps[name] = a
            self._app_names.append(name)
            self._app_config.append(
                dict(name=name, pools=list(pool_names), home_zone=home_zone,
                     tag_restriction=None if tag_restriction is None else (tags[0] if isinstance(tag_restriction, str) else list(tags)),
                     max_instances_total=mt, max_instances_per_user=mpu)
            )
            words = (a >> 6) + 1
            if words > self._header[st.H_ENT_WORDS]:
                ent = self._t["ent"]
                new = np.zeros((ent.shape[0], max(words, 2 * ent.shape[1])), dtype=np.int64)
                new[:, : ent.shape[1]] = ent
                self._alloc("ent", new, None)
                self._header[st.H_ENT_WORDS] = new.shape[1]
            for u, entitled in enumerate(self._user_apps):
                if name in entitled:
                    self._entitle(u, a)

    def _entitle(self, u: int, a: int):
        ent = self._t["ent"]
        word = int(ent[u, a >> 6]) & ((1 << 64) - 1)
        word |= 1 << (a & 63)
        ent[u, a >> 6] = word - (1 << 64) if word >= (1 << 63) else word

    @_serialised
    def add_user(self, id: str, home_zone: str | None = None, apps: Iterable[str] = ()) -> None:
        """Add a user with an optional home zone and the apps they are entitled to
        (apps may be added later)."""
        id = _check_name("id", id)
        if id in self._users:
            raise DuplicateName("id", id, "a user with this id exists")
        home_zone = _v.optional_name("home_zone", home_zone)
        app_names = _as_names("apps", apps)
        with self._locked():
            self._add_user_unlocked(id, home_zone, app_names)

    def remove_user(self, id: str) -> None:
        """Forget a user (a directory user, or one a launch created) that holds
        no live session; its index may be given to the next user added.

        Raises:
            UnknownUser: no such user. InvalidState: the user holds live sessions.
        """
        id = _check_name("id", id)
        with self._locked():
            u = self._users.get(id)
            if u is None:
                raise UnknownUser("id", id, "no such user")
            n = int(self._t["user"][st.US_N_SESSIONS, u])
            if n:
                raise InvalidState("id", id, f"holds {n} live sessions")
            self._forget_keys(self._forget_users(np.array([u], dtype=np.int64)), [])

    @_serialised
    def add_users(self, ids: Sequence[str], home_zones: Sequence[str | None] | None = None,
                  apps: Sequence[Iterable[str]] | None = None) -> None:
        """Add many users at once (a user directory): the same as ``add_user``
        for each row, all or nothing.

        Args:
            ids: user ids, unique and not yet known.
            home_zones: one zone name (or None) per user, or None for all.
            apps: one list of app names per user, or one list for every user,
                or None.
        """
        ids = list(_v.sequence("ids", ids))
        n = len(ids)
        if home_zones is None:
            zones = [None] * n
        else:
            zones = list(_v.sequence("home_zones", home_zones))
            if len(zones) != n:
                raise InvalidArgument("home_zones", f"length {len(zones)}", f"must have length {n} like ids")
        if apps is not None and not isinstance(apps, str):
            apps = list(_v.sequence("apps", apps))
        if apps is None or isinstance(apps, str) or (apps and isinstance(apps[0], str)):
            one = _as_names("apps", apps)
            app_rows = None
        else:
            app_rows = apps
            if len(app_rows) != n:
                raise InvalidArgument("apps", f"length {len(app_rows)}", f"must have length {n} like ids")
        k = _engine.first_not_id(ids)
        if k >= 0:
            raise InvalidArgument(f"ids[{k}]", ids[k], "must be a non-empty string")
        ids = [uid if type(uid) is str else str(uid) for uid in ids]
        if len(set(ids)) != n:
            seen = set()
            for k, uid in enumerate(ids):
                if uid in seen:
                    raise DuplicateName(f"ids[{k}]", uid, "a user with this id exists")
                seen.add(uid)
        k = _engine.first_not_id(zones, True)
        if k >= 0:
            raise InvalidArgument(f"home_zones[{k}]", zones[k], "must be a non-empty string or None")
        sets: dict[Any, frozenset[str]] = {}  # distinct app sets -> their entitlement words (shared frozensets)
        if app_rows is None:
            frozen = [frozenset(one)] * n
        else:
            frozen = []
            for k, row in enumerate(app_rows):
                key = tuple(row) if isinstance(row, (list, tuple)) else row
                try:
                    f = sets.get(key)
                except TypeError:  # unhashable: the names check below says what it is
                    f, key = None, None  # type: ignore[assignment]
                if f is None:
                    f = frozenset(_as_names(f"apps[{k}]", row))
                    if key is not None:
                        sets[key] = f
                frozen.append(f)
        with self._locked():
            for k, uid in enumerate(ids):
                if uid in self._users:
                    raise DuplicateName(f"ids[{k}]", uid, "a user with this id exists")
            u0 = len(self._user_names)
            self._user_room(u0 + n)
            self._user_kind[u0 : u0 + n] = USER_DIRECTORY
            users = self._t["user"]
            users[:, u0 : u0 + n] = st.NONE
            users[st.US_N_SESSIONS, u0 : u0 + n] = 0
            zone_of: dict[str | None, int] = {}
            zi = np.empty(n, dtype=np.int64)
            for k, z in enumerate(zones):
                x = zone_of.get(z)
                if x is None:
                    x = zone_of[z] = self._zone_index(z, f"home_zones[{k}]")
                zi[k] = x
            users[st.US_HOME_ZONE, u0 : u0 + n] = zi
            words: dict[frozenset[str], np.ndarray] = {}
            ent = self._t["ent"]
            for k, f in enumerate(frozen):
                w = words.get(f)
                if w is None:
                    w = np.zeros(ent.shape[1], dtype=np.uint64)
                    for name in f:
                        a = self._apps.get(name)
                        if a is not None:
                            w[a >> 6] |= np.uint64(1) << np.uint64(a & 63)
                    w = words[f] = w.view(np.int64)
                if f:
                    ent[u0 + k] = w
            for k, uid in enumerate(ids):
                self._users[uid] = u0 + k
            self._user_names.extend(ids)
            self._user_apps.extend(frozen)

    def _user_room(self, need: int):
        """Grow the user and entitlement tables to hold ``need`` users (lock held)."""
        cap = self._t["user"].shape[1]
        if need <= cap:
            return
        cap = max(2 * cap, need)
        users = st.grow_table(self._t["user"], cap)
        users[st.US_N_SESSIONS, len(self._user_names):] = 0
        self._alloc("user", users, "user_cap")
        ent = np.zeros((cap, self._t["ent"].shape[1]), dtype=np.int64)
        ent[: self._t["ent"].shape[0]] = self._t["ent"]
        self._alloc("ent", ent, None)
        kind = np.full(cap, USER_FREE, dtype=np.uint8)
        kind[: self._user_kind.shape[0]] = self._user_kind
        self._user_kind = kind

    def _add_user_unlocked(self, id, home_zone, app_names, implicit=False):
        """A new user at a free index, or at the end (lock held; ``id`` checked
        and new)."""
        appended = not self._user_free
        if appended:
            u = len(self._user_names)
            self._user_room(u + 1)
            self._user_names.append(id)
            self._user_apps.append(frozenset(app_names))
        else:
            u = self._user_free.pop()
            self._user_names[u] = id
            self._user_apps[u] = frozenset(app_names)
            self._t["ent"][u] = 0
        users = self._t["user"]
        users[:, u] = st.NONE
        users[st.US_N_SESSIONS, u] = 0
        users[st.US_HOME_ZONE, u] = self._zone_index(home_zone, "home_zone")
        self._user_kind[u] = USER_IMPLICIT if implicit else USER_DIRECTORY
        self._users[id] = u
        self._user_key_added(id, u, appended)
        if implicit:
            self._added_since_sweep += 1
        for name in app_names:
            a = self._apps.get(name)
            if a is not None:
                self._entitle(u, a)
        return u

    def _forget_users(self, victims: np.ndarray) -> list:
        """Free the user indices ``victims`` (users holding no live session):
        their ids leave the user dict and their indices go to the free list
        (lock held; the caller deletes the ids with ``_forget_keys``). Returns
        the ids."""
        ids = []
        names, apps = self._user_names, self._user_apps
        for u in victims.tolist():
            uid = names[u]
            names[u] = None
            apps[u] = _NO_APPS
            ids.append(uid)
        self._user_kind[victims] = USER_FREE
        self._user_free.extend(victims.tolist())
        return ids

    def _sweep(self):
        """Forget what no live session needs: implicit users (created by a
        launch) without a live session, and endpoints no live session names.
        Their indices are reused by the next users and endpoints. Runs (lock
        held, before an operation looks any id up) once as many implicit users
        and endpoints were added since the last sweep as that sweep kept, and at
        least SWEEP_FLOOR: amortised O(1) per addition, with the tables and dicts
        at most about twice what live sessions need (plus the directory)."""
        n = len(self._user_names)
        idle = self._t["user"][st.US_N_SESSIONS, :n] == 0
        victims = np.flatnonzero(idle & (self._user_kind[:n] == USER_IMPLICIT))
        user_ids = self._forget_users(victims) if victims.size else []
        ses = self._t["session_i"]
        named = np.zeros(len(self._endpoint_names) + 1, dtype=bool)
        named[ses[st.SE_ENDPOINT, ses[st.SE_STATE] != SessionState.FREE]] = True  # -1 lands on the last
        endpoints = []
        names = self._endpoint_names
        for e in np.flatnonzero(~named[:-1]).tolist():
            name = names[e]
            if name is not None:
                names[e] = None
                self._endpoint_free.append(e)
                endpoints.append(name)
        self._forget_keys(user_ids, endpoints)
        self._added_since_sweep = 0
        kept = int(np.count_nonzero(self._user_kind[:n] == USER_IMPLICIT)) + len(self._endpoints)
        self._sweep_every = max(SWEEP_FLOOR, kept)

    # ------------------------------------------------------------ servers
    @_serialised
    def add_server(self, name: str, zone: str, pool: str, tags: Iterable[str] = (),
                   max_sessions: int = config.DEFAULT_MAX_SESSIONS, weight: int = config.DEFAULT_WEIGHT,
                   power: str | Power = "on", registered: bool = True, mode: str | Mode = "enabled",
                   image: str | None = None, now: float | None = None) -> int:
        """Add a session host to ``pool`` in ``zone``."""
        name = _check_name("name", name)
        if name in self._servers:
            raise DuplicateName("name", name, "a server with this name exists")
        zone = _check_name("zone", zone)
        if _check_name("pool", pool) not in self._pools:
            raise UnknownPool("pool", pool, "no such pool")
        tag_names = _as_names("tags", tags)
        max_sessions = _check_int("max_sessions", max_sessions, 1, _v.MAX_COUNT)
        weight = _check_int("weight", weight, config.MIN_WEIGHT, config.MAX_WEIGHT)
        power = parse_enum(Power, "power", power)
        registered = _check_bool("registered", registered)
        mode = parse_enum(Mode, "mode", mode)
        if image is not None and not isinstance(image, str):
            raise InvalidArgument("image", image, "must be a string or None")
        if now is not None:
            now = _v.time("now", now)
        with self._locked():
            if now is not None:
                self._time_check(now)
            mask = self._tag_mask("tags", tag_names)
            i = int(self._header[st.H_N_SERVERS])
            self._grow("server_i", i + 1, "server_cap")
            self._grow("server_f", i + 1, None, 0.0)
            srv, srvf = self._t["server_i"], self._t["server_f"]
            srv[:, i] = st.NONE
            srvf[:, i] = 0.0
            values = {
                "present": 1, "zone": self._zone_index(zone, "zone"), "pool": self._pools[pool],
                "tags": mask, "max_sessions": max_sessions, "weight": weight, "power": power,
                "registered": registered, "mode": mode, "sessions": 0, "pending": 0,
                "load_index": 0, "tb": st.initial_tiebreak(self._seed, i), "key": st.INF_KEY,
                "sinbin": 0, "key_bits": 0, "picks": 0,
            }
            for k, v in values.items():
                srv[getattr(st, f"SV_{k.upper()}"), i] = int(v)
            self._header[st.H_N_SERVERS] = i + 1
            self._servers[name] = i
            self._server_names.append(name)
            self._server_images.append(image)
            self._server_tagsets.append(tuple(dict.fromkeys(tag_names)))
            self._dirty = True  # laid out once, before the next decision
            if now is not None:
                self._advance_to(now)  # the current layout stays valid for the other servers
        return i

    def _server_index(self, server, field="server") -> int:
        """Index of a present server named by its name (a str) or its index
        (an integer)."""
        if isinstance(server, str):
            i = self._servers.get(server)
        elif isinstance(server, (int, np.integer)) and not isinstance(server, (bool, np.bool_)):
            i = int(server)
            if not (0 <= i < len(self._server_names) and self._servers.get(self._server_names[i]) == i):
                i = None
        else:
            raise InvalidArgument(field, server, "must be a server name or index")
        if i is None:
            raise UnknownServer(field, server, "no such server")
        return i

    def _time_check(self, now):
        t = _v.time("now", now) if now is not None else None
        if t is not None and t < self._clockv[st.CK_NOW]:
            from usher.errors import TimeWentBackwards

            raise TimeWentBackwards("now", now, f"earlier than the previous operation ({self._clockv[st.CK_NOW]})")

    def _server_change(self, server, op, value, now):
        if now is not None:
            now = _v.time("now", now)
        with self._locked():
            i = self._server_index(server)
            if self._dirty:
                self._relayout()
            sessions = int(self._t["server_i"][st.SV_SESSIONS, i])
            return self._server_call(i, op, value, now, sessions)

    def set_power(self, server: str | int, state: str | Power, now: float | None = None) -> list[int]:
        """Set the power state. Powering off ends every session on the server;
        returns the ids of those lost sessions."""
        state = parse_enum(Power, "state", state)
        return self._server_change(server, _kernels.OP_POWER, int(state), now)

    def set_registered(self, server: str | int, registered: bool, now: float | None = None) -> None:
        """An unregistered server keeps its sessions but takes no new session
        and no reconnect until it registers again."""
        registered = _check_bool("registered", registered)
        self._server_change(server, _kernels.OP_REGISTERED, int(registered), now)

    def set_mode(self, server: str | int, mode: str | Mode, now: float | None = None) -> None:
        """``enabled``, ``drain`` (no new sessions, reconnects allowed) or
        ``maintenance`` (reconnects only where the pool allows them)."""
        mode = parse_enum(Mode, "mode", mode)
        self._server_change(server, _kernels.OP_MODE, int(mode), now)

    def set_place_last(self, servers: str | int | Iterable[str | int], flag: bool, now: float | None = None) -> None:
        """Mark (``flag`` True) or unmark servers *place-last*: within a pool and a
        zone, a marked server gets a new session only when no unmarked candidate
        is left (sin-binned servers excepted; see docs/SEMANTICS.md). A preference
        only, applied after every filter: it never makes a server eligible.
        ``servers``: a name, an index, or a list of them. Every server is checked
        before any is changed."""
        if isinstance(servers, (str, int, np.integer)) and not isinstance(servers, (bool, np.bool_)):
            servers = [servers]
        else:
            servers = list(_v.sequence("servers", servers))
        flag = _v.flag("flag", flag)
        if now is not None:
            now = _v.time("now", now)
        with self._locked():
            idx = [self._server_index(x, "servers") for x in servers]
            if now is not None:
                self._time_check(now)
            if self._dirty:
                self._relayout()
            if not idx:
                self._advance_to(now)
            for i in idx:
                self._server_call(i, _kernels.OP_PLACE_LAST, int(flag), now, 0)

    def set_image(self, server: str | int, image: str | None, now: float | None = None) -> None:
        """The image the server runs (a name, or None): set when it comes back from
        a reboot on a new image. Placement does not read it; the power and
        rollout planners do."""
        image = _v.optional_name("image", image)
        if now is not None:
            now = _v.time("now", now)
        with self._locked():
            i = self._server_index(server)
            if now is not None:
                self._time_check(now)
            self._advance_to(now)  # None: the scheduler's clock, as every operation
            self._server_images[i] = image

    def remove_server(self, server: str | int, force: bool = False, now: float | None = None) -> list[int]:
        """Remove a server. Refused (ServerBusy) while it holds sessions unless
        ``force``; forced removal ends them and returns their ids."""
        force = _check_bool("force", force)
        if now is not None:
            now = _v.time("now", now)
        with self._locked():
            i = self._server_index(server)
            if self._dirty:
                self._relayout()
            sessions = int(self._t["server_i"][st.SV_SESSIONS, i])
            if sessions and not force:
                raise ServerBusy("server", server, f"holds {sessions} sessions (use force=True)")
            lost = self._server_call(i, _kernels.OP_EVICT, 0, now, sessions)
            del self._servers[self._server_names[i]]
            self._dirty = True
            self._relayout()
            return lost

    def telemetry_many(self, servers: Sequence[str] | np.ndarray, cpu: Sequence[float] | np.ndarray | None = None,
                       mem: Sequence[float] | np.ndarray | None = None,
                       disk_queue: Sequence[float] | np.ndarray | None = None,
                       custom: Sequence[float] | np.ndarray | None = None, now: float | None = None) -> None:
        """Telemetry for many servers at once (arrays of equal length; a field
        left None is unchanged everywhere). Every row is checked before any is
        applied: one bad row applies nothing."""
        servers = _v.sequence("servers", servers)
        if now is not None:
            now = _v.time("now", now)
        self._lock_acquire()
        try:  # the servers first (an unknown one is the error), then the columns
            idx = self._server_indices(servers)
            n = idx.shape[0]
            zeros = _ZEROS if n <= _ZEROS.shape[0] else np.zeros(n)
            c_cpu = zeros if cpu is None else _telemetry_column("cpu", cpu, n)
            c_mem = zeros if mem is None else _telemetry_column("mem", mem, n)
            c_disk = zeros if disk_queue is None else _telemetry_column("disk_queue", disk_queue, n)
            c_custom = zeros if custom is None else _telemetry_column("custom", custom, n)
            mask = ((cpu is not None) * _kernels.T_CPU | (mem is not None) * _kernels.T_MEM
                    | (disk_queue is not None) * _kernels.T_DISK_QUEUE | (custom is not None) * _kernels.T_CUSTOM)
            if self._dirty:
                self._relayout()
            self._telemetry_arrays(idx, c_cpu, c_mem, c_disk, c_custom, mask, now)
        finally:
            self._lock_release()

    def _server_indices(self, servers) -> np.ndarray:
        """Server indices of a batch (names, or an integer array; the kernel
        checks each index is a present server). Lock held."""
        if isinstance(servers, np.ndarray) and servers.dtype.kind in "iu":
            return _v.index_array("servers", servers)
        get = self._servers.get
        if _engine.first_not_id(servers) < 0:  # names: one dict probe each
            out = [get(name) for name in servers]
            if None not in out:
                return np.array(out, dtype=np.int64)
        return np.array([self._server_index(x, f"servers[{k}]") for k, x in enumerate(servers)],
                        dtype=np.int64)

    # ------------------------------------------------------------ batch launch
    def user_indices(self, users: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices of known users (for ``launch_many`` with integer arrays and
        ``launch_by_index``). The index of a user a launch created holds while
        the user has a live session (see docs/SEMANTICS.md, *Memory*)."""
        users = _v.sequence("users", users)
        k = _engine.first_not_id(users)
        if k >= 0:
            raise InvalidArgument(f"users[{k}]", users[k], "must be a non-empty string")
        with self._locked():
            get = self._users.get
            out = [get(u) for u in users]
            if None in out:
                k = out.index(None)
                raise UnknownUser(f"users[{k}]", users[k], "no such user")
        return np.array(out, dtype=np.int64)

    def app_indices(self, apps: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices of apps (for ``launch_many`` with integer arrays)."""
        apps = _v.sequence("apps", apps)
        k = _engine.first_not_id(apps)
        if k >= 0:
            raise InvalidArgument(f"apps[{k}]", apps[k], "must be a non-empty string")
        get = self._apps.get
        out = [get(a) for a in apps]
        if None in out:
            k = out.index(None)
            raise UnknownApp(f"apps[{k}]", apps[k], "no such app")
        return np.array(out, dtype=np.int64)

    def launch_many(self, users: Sequence[str] | np.ndarray, apps: Sequence[str] | np.ndarray,
                    locations: Sequence[str | None] | None = None, endpoints: Sequence[str | None] | None = None,
                    external: Sequence[bool] | np.ndarray | None = None,
                    now: float | Sequence[float] | np.ndarray | None = None) -> Decisions:
        """Place a batch of launches (a logon storm); exactly the decisions of the
        same launches one by one, in order.

        Args:
            users, apps: sequences of names (or int64 index arrays from
                ``user_indices`` / ``app_indices``), equal length.
            locations, endpoints: sequences (None entries allowed) or None.
            external: sequence of bools or None.
            now: one time for all rows, or a non-decreasing sequence.

        Returns:
            :class:`Decisions`. Any invalid row raises and nothing is applied.
        """
        if not (isinstance(now, float) and -_v.MAX_TIME <= now <= _v.MAX_TIME):
            now = self._batch_time(now)
        self._lock_acquire()
        try:
            if now is None:
                now = _v.time("now", self._clock())  # read once, under the lock, whichever path decides
            if endpoints is None and external is None:
                # user indices or known ids, app indices, zone names or None, one time:
                # the compiled path (None: not that shape, a user to add, or a value to
                # refuse, which the path below names)
                rows = self._launch_compiled(users, apps, now, locations)
                if rows is not None:
                    return Decisions(rows, self._names)
            out = self._launch_general(users, apps, locations, endpoints, external, now)
        finally:
            self._lock_release()
        return Decisions(out, self._names)

    @staticmethod
    def _batch_time(now):
        """A batch's ``now`` checked: None, one time, or a 1-D array of times."""
        if now is None:
            return None
        if isinstance(now, (list, tuple, np.ndarray)):
            return _v.time_array("now", now)
        return _v.time("now", now)

    def _launch_general(self, users, apps, locations, endpoints, external, now):
        """``launch_many``'s general path: every argument checked, new users and
        endpoints added, then the kernel (lock held, ``now`` checked)."""
        users = _v.sequence("users", users)
        apps = _v.sequence("apps", apps)
        n = len(users)
        if len(apps) != n:
            raise InvalidArgument("apps", f"length {len(apps)}", f"must have length {n} like users")
        by_index = isinstance(users, np.ndarray) and users.dtype.kind in "iu"
        if not by_index:
            k = _engine.first_not_id(users)
            if k >= 0:
                raise InvalidArgument(f"users[{k}]", _v._short(users[k]), "must be a non-empty string")
        a_idx = self._app_rows(apps, n)
        loc = self._optional_rows("locations", locations, n)
        eps = self._optional_rows("endpoints", endpoints, n)
        ext = _filled(n, 0) if external is None else _v.flag_array("external", external, n)
        if isinstance(now, np.ndarray):
            if now.shape[0] != n:
                raise InvalidArgument("now", f"length {now.shape[0]}", f"must have length {n}")
            nows = now
        else:
            nows = np.empty(n, dtype=np.float64)
            nows.fill(now)
        if n:
            self._time_check(float(nows[0]))
        if not by_index:
            self._maybe_sweep_py()  # before any id is looked up: nothing found below is forgotten
        u_idx = self._user_rows(users, n)
        loc_idx = _filled(n, -1)
        if loc is not None:  # a zone no server uses: -2 (no candidates there)
            _engine.rows_from_names(loc, self._zones, loc_idx, -1, -2)
        ep_idx = _filled(n, -1)
        if eps is not None:
            ep_idx = np.empty(n, dtype=np.int64)
            self._endpoint_rows_into(eps, ep_idx)
        out = np.empty((n, st.N_D), dtype=np.int64)  # the kernel writes every field of every row
        self._prepare_rows(n)
        self._launch_arrays(u_idx, a_idx, loc_idx, ep_idx, ext, nows, out)
        return out

    def _prepare_rows(self, n):
        if self._dirty:
            self._relayout()
        self._reserve(n)

    def _app_rows(self, apps, n) -> np.ndarray:
        if isinstance(apps, np.ndarray) and apps.dtype.kind in "iu":
            idx = _v.index_array("apps", apps, n)
            k = _engine.first_outside(idx, len(self._app_names))
            if k >= 0:
                raise UnknownApp(f"apps[{k}]", int(idx[k]), "no such app")
            return idx
        k = _engine.first_not_id(apps)
        if k >= 0:
            if apps[k] is None:
                raise UnknownApp(f"apps[{k}]", None, "no such app")
            raise InvalidArgument(f"apps[{k}]", _v._short(apps[k]), "must be a non-empty string")
        out = np.empty(n, dtype=np.int64)
        _engine.rows_from_names(apps, self._apps, out, -1, -1)
        k = _engine.first_outside(out, len(self._app_names))  # not an app: -1
        if k >= 0:
            raise UnknownApp(f"apps[{k}]", apps[k], "no such app")
        return out

    def _user_rows(self, users, n) -> np.ndarray:
        """User indices; unknown users are created (not enforced) or -1. Called
        with the lock held, after every other check of the batch."""
        if isinstance(users, np.ndarray) and users.dtype.kind in "iu":
            idx = _v.index_array("users", users, n)
            k = _engine.first_outside(idx, len(self._user_names))
            if k < 0 and self._user_free:
                free = self._user_kind[idx] == USER_FREE
                k = int(np.argmax(free)) if free.any() else -1
            if k >= 0:
                raise InvalidArgument(f"users[{k}]", int(idx[k]), "no such user index")
            return idx
        out = np.empty(n, dtype=np.int64)
        self._user_rows_into(users, out)
        return out

    @staticmethod
    def _optional_rows(field, values, n):
        """Locations or endpoints of a batch: None, or n strs or Nones."""
        if values is None:
            return None
        values = _v.sequence(field, values)
        if len(values) != n:
            raise InvalidArgument(field, f"length {len(values)}", f"must have length {n}")
        k = _engine.first_not_id(values, True)
        if k >= 0:
            raise InvalidArgument(f"{field}[{k}]", _v._short(values[k]), "must be a non-empty string or None")
        return values

    # ------------------------------------------------------------ explain
    def _explain(self, u, a, loc, ext):
        """Explanation of a launch about to be decided (lock held)."""
        app = self._t["app"]
        n_pools = int(app[st.AP_POOLS_COUNT, a])
        k = config.EXPLAIN_TOP
        counts = np.zeros((n_pools, len(FUNNEL)), dtype=np.int64)
        top = np.full((n_pools, k), -1, dtype=np.int64)
        _kernels.explain.ctypes(_ptr(self._header), u, a, loc, ext, _ptr(counts), _ptr(top), n_pools, k)
        srv = self._t["server_i"]
        start = int(app[st.AP_POOLS_START, a])
        pools = []
        for j in range(n_pools):
            p = int(self._t["app_pools"][start + j])
            funnel = dict(zip(FUNNEL, counts[j].tolist()))
            allowed = bool(funnel.pop("allowed"))
            cands = []
            for i in top[j]:
                if i < 0:
                    break
                key = int(srv[st.SV_KEY, i])
                cands.append(
                    dict(
                        server=self._server_names[i],
                        zone=self._zone_names[srv[st.SV_ZONE, i]],
                        load_index=int(srv[st.SV_LOAD_INDEX, i]),
                        score=key & (st.PLACE_LAST_BIT - 1),
                        pending=int(srv[st.SV_PENDING, i]),
                        over_tolerance=bool(key & st.OVERTOL_BIT),
                        sinbinned=bool(key & st.SINBIN_BIT),
                        place_last=bool(key & st.PLACE_LAST_BIT),
                    )
                )
            pools.append(dict(pool=self._pool_names[p], allowed=allowed, funnel=funnel, top=cands))
        return Explanation(pools)

    # ------------------------------------------------------------ views
    @property
    def now(self) -> float | None:
        """Time of the latest operation (None before the first)."""
        t = float(self._clockv[st.CK_NOW])
        return None if t == -math.inf else t

    @property
    def licences_in_use(self) -> int:
        return int(self._header[st.H_HOLDERS])

    @property
    def licence_cap(self) -> int | None:
        cap = int(self._header[st.H_LICENCE_CAP])
        return None if cap < 0 else cap

    @property
    def live_sessions(self) -> int:
        return int(self._header[st.H_LIVE_SESSIONS])

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def enforce_entitlement(self) -> bool:
        return bool(self._header[st.H_ENFORCE_ENTITLEMENT])

    @property
    def sinbin_seconds(self) -> float:
        return float(self._clockv[st.CK_SINBIN_SECONDS])

    @property
    def pending_timeout(self) -> float:
        return float(self._clockv[st.CK_PENDING_TIMEOUT])

    def header_view(self) -> memoryview:
        """Read-only live view of the engine's header: int64 counters indexed by the
        ``H_*`` constants of :mod:`usher.core.state` (``H_LIVE_SESSIONS``, ``H_HOLDERS``,
        ``H_N_SERVERS``, ``H_SERVER_I_ADDR`` ...). Indexing a memoryview gives a Python
        int at a fraction of a numpy scalar's cost, for loops that read counters often
        (the simulator's day). The header never moves, so the view stays valid."""
        return memoryview(self._header).toreadonly()  # type: ignore[arg-type]  # numpy types the buffer protocol from 3.12

    def server_field(self, field: str) -> np.ndarray:
        """Read-only view (no copy) of one server field over indices
        0 .. n-1 (removed servers included; see ``present``). Fields:
        state.SERVER_INT_FIELDS and SERVER_FLOAT_FIELDS."""
        n = int(self._header[st.H_N_SERVERS])
        if field in st.SERVER_INT_FIELDS:
            v = self._t["server_i"][st.SERVER_INT_FIELDS.index(field), :n]
        elif field in st.SERVER_FLOAT_FIELDS:
            v = self._t["server_f"][st.SERVER_FLOAT_FIELDS.index(field), :n]
        else:
            raise InvalidArgument("field", field, "not a server field")
        v = v.view()
        v.flags.writeable = False
        return v

    SERVER_DTYPE = np.dtype(
        [("index", "i8"), ("name", "O"), ("zone", "O"), ("pool", "O"), ("tags", "O"),
         ("max_sessions", "i8"), ("weight", "i8"), ("power", "U13"), ("registered", "?"),
         ("mode", "U11"), ("sessions", "i8"), ("pending", "i8"), ("load_index", "i8"),
         ("cpu", "f8"), ("mem", "f8"), ("disk_queue", "f8"), ("custom", "f8"),
         ("sinbinned", "?"), ("image", "O"), ("picks", "i8"), ("place_last", "?")]
    )

    def servers(self) -> np.ndarray:
        """One record per present server (a copy), in index order."""
        with self._locked():
            if self._dirty:
                self._relayout()
            n = int(self._header[st.H_N_SERVERS])
            srv, srvf = self._t["server_i"], self._t["server_f"]
            idx = np.nonzero(srv[st.SV_PRESENT, :n] != 0)[0]
            out = np.zeros(len(idx), dtype=self.SERVER_DTYPE)
            out["index"] = idx
            out["name"] = [self._server_names[i] for i in idx]
            out["zone"] = [self._zone_names[z] for z in srv[st.SV_ZONE, idx]]
            out["pool"] = [self._pool_names[p] for p in srv[st.SV_POOL, idx]]
            out["tags"] = [frozenset(self._server_tagsets[i]) for i in idx]
            out["image"] = [self._server_images[i] for i in idx]
            for f in ("max_sessions", "weight", "sessions", "pending", "load_index", "picks"):
                out[f] = srv[st.SERVER_INT_FIELDS.index(f), idx]
            out["registered"] = srv[st.SV_REGISTERED, idx] != 0
            out["sinbinned"] = srv[st.SV_SINBIN, idx] != 0
            out["place_last"] = (srv[st.SV_KEY_BITS, idx] & st.PLACE_LAST_BIT) != 0
            out["power"] = [str(Power(v)) for v in srv[st.SV_POWER, idx]]
            out["mode"] = [str(Mode(v)) for v in srv[st.SV_MODE, idx]]
            for f in st.SERVER_FLOAT_FIELDS[:4]:
                out[f] = srvf[st.SERVER_FLOAT_FIELDS.index(f), idx]
            return out

    def server(self, name: str | int) -> dict[str, Any]:
        """One server's state as a dict."""
        i = self._server_index(name)
        rows = self.servers()
        row = rows[rows["index"] == i][0]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in rows.dtype.names}  # type: ignore[union-attr]  # a structured dtype

    SESSION_DTYPE = np.dtype(
        [("id", "i8"), ("user", "O"), ("server", "O"), ("pool", "O"), ("state", "U12"),
         ("endpoint", "O"), ("apps", "O"), ("t_launch", "f8"), ("t_state", "f8"), ("pending", "?")]
    )

    def _endpoint_name(self, e):
        return None if e < 0 else self._endpoint_names[e]

    def _session_apps(self, slot) -> tuple:
        ses, inst = self._t["session_i"], self._t["instance"]
        apps = []
        k = ses[st.SE_INST_HEAD, slot]
        while k >= 0:
            apps.append(self._app_names[inst[st.IN_APP, k]])
            k = inst[st.IN_NEXT, k]
        return tuple(sorted(apps))

    def sessions(self) -> np.ndarray:
        """One record per live session (a copy), in slot order."""
        with self._locked():
            ses, sesf = self._t["session_i"], self._t["session_f"]
            live = ses[st.SE_STATE] != SessionState.FREE
            idx = np.nonzero(live)[0]
            out = np.zeros(len(idx), dtype=self.SESSION_DTYPE)
            out["id"] = (ses[st.SE_GEN, idx] << 32) | idx
            out["user"] = [self._user_names[u] for u in ses[st.SE_USER, idx]]
            out["server"] = [self._server_names[i] for i in ses[st.SE_SERVER, idx]]
            out["pool"] = [self._pool_names[p] for p in ses[st.SE_POOL, idx]]
            out["state"] = [str(SessionState(v)) for v in ses[st.SE_STATE, idx]]
            out["endpoint"] = [self._endpoint_name(e) for e in ses[st.SE_ENDPOINT, idx]]
            out["apps"] = [self._session_apps(x) for x in idx]
            out["t_launch"] = sesf[st.SEF_T_LAUNCH, idx]
            out["t_state"] = sesf[st.SEF_T_STATE, idx]
            out["pending"] = ses[st.SE_PENDING, idx] != 0
            return out

    def session(self, id: int) -> dict[str, Any]:
        """One live session as a dict (UnknownSession / SessionEnded otherwise)."""
        sid = _v.session_id("session", id)
        slot, gen = sid & _SLOT_MASK, sid >> 32
        ses = self._t["session_i"]
        if slot >= ses.shape[1] or gen < 1 or gen > ses[st.SE_GEN, slot] or (
            gen == ses[st.SE_GEN, slot] and ses[st.SE_STATE, slot] == SessionState.FREE
        ):
            raise_for_status(1, "session", id)
        if gen < ses[st.SE_GEN, slot]:
            raise_for_status(2, "session", id)
        rows = self.sessions()
        row = rows[rows["id"] == sid][0]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in rows.dtype.names}  # type: ignore[union-attr]  # a structured dtype

    # ------------------------------------------------------------ names
    @property
    def pool_names(self) -> list[str]:
        return list(self._pool_names)

    @property
    def app_names(self) -> list[str]:
        return list(self._app_names)

    @property
    def zone_names(self) -> list[str]:
        return list(self._zone_names)

    @property
    def user_ids(self) -> list[str]:
        """Ids of the users known now, in index order."""
        return [u for u in self._user_names if u is not None]

    def server_names(self) -> list[str]:
        """Names of present servers, in index order."""
        return [n for i, n in enumerate(self._server_names) if self._servers.get(n) == i]

    def pool_config(self, name: str) -> dict[str, Any]:
        if _check_name("name", name) not in self._pools:
            raise UnknownPool("pool", name, "no such pool")
        return dict(self._pool_config[self._pools[name]])

    def app_config(self, name: str) -> dict[str, Any]:
        if _check_name("name", name) not in self._apps:
            raise UnknownApp("app", name, "no such app")
        return dict(self._app_config[self._apps[name]])

    def user_config(self, id: str) -> dict[str, Any]:
        u = self._users.get(_check_name("id", id))
        if u is None:
            raise UnknownUser("id", id, "no such user")
        hz = int(self._t["user"][st.US_HOME_ZONE, u])
        return dict(id=id, home_zone=None if hz < 0 else self._zone_names[hz], apps=sorted(self._user_apps[u]))

    # ------------------------------------------------------------ what-if
    #: the compiled base's attributes that make up the state (the rest is in __dict__)
    _ENGINE_STATE = ("_users", "_apps", "_zones", "_endpoints", "_servers", "_pools",
                     "_server_names", "_zone_names", "_pool_names", "_app_names", "_user_names",
                     "_endpoint_names", "_user_free", "_endpoint_free", "_user_kind",
                     "_added_since_sweep", "_sweep_every", "_clock")

    def _state(self) -> dict:
        """A deep copy of the whole state — configuration, tables, names,
        counters, clock, seed and tiebreak sequence — sharing nothing with this
        scheduler but the clock function (lock held, layout current)."""
        state = {a: getattr(self, a) for a in self._ENGINE_STATE}
        state.update((k, v) for k, v in self.__dict__.items() if not k.startswith("_lock_"))
        return _copy.deepcopy(state, {id(self._clock): self._clock})

    @classmethod
    def _from_state(cls, state: dict) -> "Scheduler":
        """A scheduler holding ``state`` (from ``_state``; taken over, not copied)."""
        new = cls.__new__(cls)
        tables = state.pop("_t")
        for attr, value in state.items():
            setattr(new, attr, value)
        new._names = (new._server_names, new._zone_names, new._pool_names)
        new._t = {}
        for table, array in tables.items():
            if table == "clock":
                new._alloc("clock", new._clockv, None)
            elif table == "tree":  # keep its rows on cache-line boundaries
                tree = groups.aligned_rows(array.shape[0], array.shape[1], 0)
                tree[:] = array
                new._alloc("tree", tree, None)
            else:
                new._alloc(table, array, None)
        new._bind(new._header, new._clockv, _kernels)
        new._dirty = False
        return new

    def copy(self) -> Scheduler:
        """An independent deep copy (state, configuration, clock): try a storm,
        a power plan or a rollout on the copy and keep the original untouched."""
        with self._locked():
            if self._dirty:
                self._relayout()
            state = self._state()
        return self._from_state(state)

    def __reduce__(self):
        """Pickling: the whole state (see ``_state``); an unpickled scheduler makes
        the decisions the original would make next. The clock function is
        pickled by reference (``time.monotonic`` is; a lambda is not)."""
        with self._locked():
            if self._dirty:
                self._relayout()
            state = self._state()
        return (_unpickle, (type(self), state))

    # ------------------------------------------------------------ files
    @classmethod
    def from_files(cls, config_path: str | PathLike[str], servers_path: str | PathLike[str] | None = None,
                   **kwargs: Any) -> Scheduler:
        """A scheduler configured from a fleet: pools, apps, users, licences and
        settings in TOML, servers in CSV or Parquet (see docs/TRACE_FORMAT.md)."""
        from usher.formats import fleet

        return fleet.load_fleet(config_path, servers_path, scheduler_cls=cls, **kwargs)

    def to_files(self, config_path: str | PathLike[str], servers_path: str | PathLike[str] | None = None) -> None:
        """Write this scheduler's configuration and servers (round trip of
        ``from_files``)."""
        from usher.formats import fleet

        fleet.save_fleet(self, config_path, servers_path)

    def __repr__(self) -> str:
        return (f"<usher.Scheduler servers={len(self._servers)} pools={len(self._pools)} "
                f"apps={len(self._apps)} users={len(self._users)} sessions={self.live_sessions} "
                f"licences={self.licences_in_use}/{self.licence_cap}>")

    # ------------------------------------------------------------ durable state
    def snapshot(self, path) -> None:
        """Write the whole state to ``path`` atomically (write, fsync, rename): a
        pickle that :meth:`restore` reads back. See docs/SERVICE.md."""
        from usher import journal

        journal.write_snapshot(path, self)

    @classmethod
    def restore(cls, path) -> "Scheduler":
        """The scheduler a :meth:`snapshot` file holds (JournalError when the file
        cannot be read or holds something else)."""
        from usher import journal

        s = journal.read_snapshot(path)
        if not isinstance(s, cls):
            raise journal.JournalError("path", str(path), f"holds a {type(s).__name__}, not a {cls.__name__}")
        return s

    @classmethod
    def open(cls, directory) -> "Scheduler":
        """The state a journal directory (``usher.journal``, ``usher serve --journal``)
        holds: its latest snapshot plus a replay of the journal after it. Reads only;
        to go on journalling, use ``usher.journal.open(directory)``."""
        from usher import journal

        return journal.recover(directory).replayer.scheduler


class _Locked:
    """``with scheduler._locked():`` — the scheduler's lock for Python-level
    changes. Re-entrant within one thread, so a configuration method can hold it
    over all of its checks and writes and still call helpers that take it."""

    __slots__ = ("_s",)

    def __init__(self, s):
        self._s = s

    def __enter__(self):
        s, me = self._s, get_ident()
        if s.__dict__.get("_lock_owner") == me:
            s._lock_depth += 1
            return
        s._lock_acquire()
        s._lock_owner, s._lock_depth = me, 1

    def __exit__(self, *exc):
        s = self._s
        s._lock_depth -= 1
        if not s._lock_depth:
            s._lock_owner = None
            s._lock_release()
        return False


def _unpickle(cls, state):
    """The scheduler a pickle holds (``Scheduler.__reduce__``)."""
    return cls._from_state(state)
