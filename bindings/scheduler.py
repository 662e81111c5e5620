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

import ctypes
import math
import time
from collections.abc import Iterable

import numpy as np

from usher import _engine
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
    ServerBusy,
    UnknownApp,
    UnknownPool,
    UnknownServer,
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
def _check_int(field, value, lo=None, hi=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(field, value, "must be an integer")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise InvalidArgument(field, value, f"must be in {rng}")
    return value


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


def _check_float(field, value, lo=None, hi=None, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(field, value, "must be a number")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise InvalidArgument(field, value, "must be finite")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidArgument(field, value, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise InvalidArgument(field, value, f"must be <= {hi}")
    return v


def _check_bool(field, value):
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(field, value, "must be true or false")
    return bool(value)


def _check_name(field, value):
    if not isinstance(value, str) or not value:
        raise InvalidArgument(field, value, "must be a non-empty string")
    return value


def _as_names(field, value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise InvalidArgument(field, value, "must be a string or a list of strings")
    out = tuple(value)
    for v in out:
        _check_name(field, v)
    return out


def _as_enums(field, value, enum_cls) -> tuple:
    """A name, an enum member, or a sequence of them, as enum members."""
    if value is None:
        return ()
    if isinstance(value, (str, enum_cls)):
        value = (value,)
    if not isinstance(value, Iterable):
        raise InvalidArgument(field, value, "must be a name or a list of names")
    return tuple(parse_enum(enum_cls, field, v) for v in value)


_ZEROS = np.zeros(4096)  # stand-in column for a telemetry field not given (never written)
_ZEROS.flags.writeable = False
_INT64 = np.dtype(np.int64)


def _telemetry_column(field, values, n):
    """One telemetry field of a batch as a contiguous float64 array of length n."""
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument(field, values, "must be an array of numbers") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidArgument(field, f"shape {arr.shape}", f"must have length {n} like servers")
    return arr


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

    def __init__(
        self,
        *,
        enforce_entitlement: bool = False,
        seed: int = 0,
        licences: int | None = None,
        sinbin_seconds: float = config.DEFAULT_SINBIN_SECONDS,
        pending_timeout: float = config.DEFAULT_PENDING_TIMEOUT,
        clock=None,
    ):
        enforce_entitlement = _check_bool("enforce_entitlement", enforce_entitlement)
        seed = _check_int("seed", seed, 0, 2**31 - 1)
        licences = _check_int("licences", licences, 0, allow_none=True)
        sinbin_seconds = _check_float("sinbin_seconds", sinbin_seconds, 0.0)
        pending_timeout = _check_float("pending_timeout", pending_timeout, 0.0, lo_open=True)
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
        self._endpoint_names: list = []

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

    def _grow(self, table: str, needed: int, cap_slot: str, fill=st.NONE):
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
    def settings(self, enforce_entitlement=None, seed=None, sinbin_seconds=None, pending_timeout=None):
        """Change scheduler settings; arguments left None stay as they are."""
        if enforce_entitlement is not None:
            enforce_entitlement = _check_bool("enforce_entitlement", enforce_entitlement)
        if seed is not None:
            seed = _check_int("seed", seed, 0, 2**31 - 1)
        if sinbin_seconds is not None:
            sinbin_seconds = _check_float("sinbin_seconds", sinbin_seconds, 0.0)
        if pending_timeout is not None:
            pending_timeout = _check_float("pending_timeout", pending_timeout, 0.0, lo_open=True)
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

    def set_licences(self, cap):
        """Set the concurrent licence cap (None = unlimited). Lowering it below
        the current holders ends nobody; new users are refused until it frees."""
        cap = _check_int("cap", cap, 0, allow_none=True)
        with self._locked():
            self._header[st.H_LICENCE_CAP] = -1 if cap is None else cap

    # ------------------------------------------------------------ pools, apps, users
    def add_pool(
        self,
        name,
        load_balancing="horizontal",
        zone_preference=config.DEFAULT_ZONE_PREFERENCE,
        failover=True,
        session_reconnection="always",
        reconnect_in_maintenance=True,
        external_access=False,
        logon_tolerance=config.DEFAULT_LOGON_TOLERANCE,
        tolerance_is_hard=False,
        max_sessions_per_user=None,
        load_rules=config.DEFAULT_LOAD_RULES,
        cpu_full=config.DEFAULT_CPU_FULL,
        memory_full=config.DEFAULT_MEMORY_FULL,
        disk_queue_full=config.DEFAULT_DISK_QUEUE_FULL,
    ):
        """Add a pool (delivery group). Pools cannot be changed once added."""
        _check_name("name", name)
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
        tol = _check_int("logon_tolerance", logon_tolerance, 0)
        hard = _check_bool("tolerance_is_hard", tolerance_is_hard)
        mpu = _check_int("max_sessions_per_user", max_sessions_per_user, 1, allow_none=True)
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
            for k, v in values.items():
                pool[getattr(st, f"PO_{k.upper()}"), p] = int(v)
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

    def add_app(self, name, pools, home_zone=None, tag_restriction=None, max_instances_total=None,
                max_instances_per_user=None):
        """Publish an app on ``pools`` (in priority order)."""
        _check_name("name", name)
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
        if home_zone is not None:
            _check_name("home_zone", home_zone)
        tags = _as_names("tag_restriction", tag_restriction)
        mt = _check_int("max_instances_total", max_instances_total, 0, allow_none=True)
        mpu = _check_int("max_instances_per_user", max_instances_per_user, 0, allow_none=True)
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
                     tag_restriction=None if tag_restriction is None else (tag_restriction if isinstance(tag_restriction, str) else list(tags)),
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

    def add_user(self, id, home_zone=None, apps=()):
        """Add a user with an optional home zone and the apps they are entitled to
        (apps may be added later)."""
        if id is None:
            raise InvalidArgument("id", id, "a user id is required")
        try:
            hash(id)
        except TypeError:
            raise InvalidArgument("id", id, "must be hashable") from None
        if id in self._users:
            raise DuplicateName("id", id, "a user with this id exists")
        if home_zone is not None:
            _check_name("home_zone", home_zone)
        app_names = _as_names("apps", apps)
        with self._locked():
            self._add_user_unlocked(id, home_zone, app_names)

    def add_users(self, ids, home_zones=None, apps=None):
        """Add many users at once (a user directory): the same as ``add_user``
        for each row, all or nothing.

        Args:
            ids: user ids, unique and not yet known.
            home_zones: one zone name (or None) per user, or None for all.
            apps: one list of app names per user, or one list for every user,
                or None.
        """
        ids = list(ids)
        n = len(ids)
        if home_zones is None:
            zones = [None] * n
        else:
            zones = list(home_zones)
            if len(zones) != n:
                raise InvalidArgument("home_zones", f"length {len(zones)}", f"must have length {n} like ids")
        if apps is not None and not isinstance(apps, str):
            apps = list(apps)
        if apps is None or isinstance(apps, str) or (apps and isinstance(apps[0], str)):
            one = _as_names("apps", apps)
            app_rows = None
        else:
            app_rows = list(apps)
            if len(app_rows) != n:
                raise InvalidArgument("apps", f"length {len(app_rows)}", f"must have length {n} like ids")
        seen = set()
        for k, uid in enumerate(ids):
            if uid is None:
                raise InvalidArgument(f"ids[{k}]", uid, "a user id is required")
            try:
                hash(uid)
            except TypeError:
                raise InvalidArgument(f"ids[{k}]", uid, "must be hashable") from None
            if uid in self._users or uid in seen:
                raise DuplicateName(f"ids[{k}]", uid, "a user with this id exists")
            seen.add(uid)
            if zones[k] is not None:
                _check_name(f"home_zones[{k}]", zones[k])
        sets = {}  # distinct app sets -> their entitlement words (shared frozensets)
        if app_rows is None:
            frozen = [frozenset(one)] * n
        else:
            frozen = []
            for k, row in enumerate(app_rows):
                key = tuple(row) if isinstance(row, (list, tuple)) else row
                f = sets.get(key)
                if f is None:
                    f = frozenset(_as_names(f"apps[{k}]", row))
                    sets[key] = f
                frozen.append(f)
        with self._locked():
            u0 = len(self._user_names)
            self._user_room(u0 + n)
            users = self._t["user"]
            users[:, u0 : u0 + n] = st.NONE
            users[st.US_N_SESSIONS, u0 : u0 + n] = 0
            zone_of = {}
            zi = np.empty(n, dtype=np.int64)
            for k, z in enumerate(zones):
                x = zone_of.get(z)
                if x is None:
                    x = zone_of[z] = self._zone_index(z, f"home_zones[{k}]")
                zi[k] = x
            users[st.US_HOME_ZONE, u0 : u0 + n] = zi
            words = {}
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

    def _add_user_unlocked(self, id, home_zone, app_names):
        u = len(self._user_names)
        self._user_room(u + 1)
        users = self._t["user"]
        users[:, u] = st.NONE
        users[st.US_N_SESSIONS, u] = 0
        users[st.US_HOME_ZONE, u] = self._zone_index(home_zone, "home_zone")
        self._users[id] = u
        self._user_names.append(id)
        self._user_apps.append(frozenset(app_names))
        for name in app_names:
            a = self._apps.get(name)
            if a is not None:
                self._entitle(u, a)
        return u

    # ------------------------------------------------------------ servers
    def add_server(self, name, zone, pool, tags=(), max_sessions=config.DEFAULT_MAX_SESSIONS,
                   weight=config.DEFAULT_WEIGHT, power="on", registered=True, mode="enabled",
                   image=None, now=None):
        """Add a session host to ``pool`` in ``zone``."""
        _check_name("name", name)
        if name in self._servers:
            raise DuplicateName("name", name, "a server with this name exists")
        _check_name("zone", zone)
        if pool not in self._pools:
            raise UnknownPool("pool", pool, "no such pool")
        tag_names = _as_names("tags", tags)
        max_sessions = _check_int("max_sessions", max_sessions, 1)
        weight = _check_int("weight", weight, config.MIN_WEIGHT, config.MAX_WEIGHT)
        power = parse_enum(Power, "power", power)
        registered = _check_bool("registered", registered)
        mode = parse_enum(Mode, "mode", mode)
        if image is not None and not isinstance(image, str):
            raise InvalidArgument("image", image, "must be a string or None")
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
                "sinbin": 0, "picks": 0,
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
        if isinstance(server, (int, np.integer)) and not isinstance(server, bool):
            i = int(server)
            if 0 <= i < len(self._server_names) and self._server_names[i] in self._servers \
                    and self._servers[self._server_names[i]] == i:
                return i
            raise UnknownServer(field, server, "no such server")
        i = self._servers.get(server)
        if i is None:
            raise UnknownServer(field, server, "no such server")
        return i

    def _time_check(self, now):
        t = _check_float("now", now) if now is not None else None
        if t is not None and t < self._clockv[st.CK_NOW]:
            from usher.errors import TimeWentBackwards

            raise TimeWentBackwards("now", now, f"earlier than the previous operation ({self._clockv[st.CK_NOW]})")

    def _server_change(self, server, op, value, now):
        i = self._server_index(server)
        with self._locked():
            if self._dirty:
                self._relayout()
            sessions = int(self._t["server_i"][st.SV_SESSIONS, i])
            return self._server_call(i, op, value, now, sessions)

    def set_power(self, server, state, now=None):
        """Set the power state. Powering off ends every session on the server;
        returns the ids of those lost sessions."""
        state = parse_enum(Power, "state", state)
        return self._server_change(server, _kernels.OP_POWER, int(state), now)

    def set_registered(self, server, registered, now=None):
        """An unregistered server keeps its sessions but takes no new session
        and no reconnect until it registers again."""
        registered = _check_bool("registered", registered)
        self._server_change(server, _kernels.OP_REGISTERED, int(registered), now)

    def set_mode(self, server, mode, now=None):
        """``enabled``, ``drain`` (no new sessions, reconnects allowed) or
        ``maintenance`` (reconnects only where the pool allows them)."""
        mode = parse_enum(Mode, "mode", mode)
        self._server_change(server, _kernels.OP_MODE, int(mode), now)

    def remove_server(self, server, force=False, now=None):
        """Remove a server. Refused (ServerBusy) while it holds sessions unless
        ``force``; forced removal ends them and returns their ids."""
        i = self._server_index(server)
        force = _check_bool("force", force)
        with self._locked():
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

    def telemetry_many(self, servers, cpu=None, mem=None, disk_queue=None, custom=None, now=None):
        """Telemetry for many servers at once (arrays of equal length; a field
        left None is unchanged everywhere). Every row is checked before any is
        applied: one bad row applies nothing."""
        idx = self._server_indices(servers)
        n = idx.shape[0]
        zeros = _ZEROS if n <= _ZEROS.shape[0] else np.zeros(n)
        c_cpu = zeros if cpu is None else _telemetry_column("cpu", cpu, n)
        c_mem = zeros if mem is None else _telemetry_column("mem", mem, n)
        c_disk = zeros if disk_queue is None else _telemetry_column("disk_queue", disk_queue, n)
        c_custom = zeros if custom is None else _telemetry_column("custom", custom, n)
        mask = ((cpu is not None) * _kernels.T_CPU | (mem is not None) * _kernels.T_MEM
                | (disk_queue is not None) * _kernels.T_DISK_QUEUE | (custom is not None) * _kernels.T_CUSTOM)
        self._lock_acquire()
        try:
            if self._dirty:
                self._relayout()
            self._telemetry_arrays(idx, c_cpu, c_mem, c_disk, c_custom, mask, now)
        finally:
            self._lock_release()

    def _server_indices(self, servers) -> np.ndarray:
        """Server indices (the kernel checks each is present)."""
        if type(servers) is np.ndarray and servers.dtype == _INT64 and servers.ndim == 1 \
                and servers.flags.c_contiguous:
            return servers  # already what the kernel reads (it never writes it)
        if isinstance(servers, np.ndarray) and servers.dtype.kind in "iu":
            return np.ascontiguousarray(servers.reshape(-1), dtype=np.int64)
        if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
            raise InvalidArgument("servers", servers, "must be a sequence of server names or indices")
        if not isinstance(servers, (list, tuple)):
            servers = list(servers)  # read once: the fallback below reads it again
        get = self._servers.get
        try:  # the common case: known names, one dict probe each
            out = [get(name) for name in servers]
            if None not in out:
                return np.array(out, dtype=np.int64)
        except TypeError:  # an unhashable entry: the loop below names it
            pass
        out = []
        for k, name in enumerate(servers):
            i = get(name) if isinstance(name, str) else None
            if i is None:
                i = self._server_index(name, f"servers[{k}]")
            out.append(i)
        return np.array(out, dtype=np.int64)

    # ------------------------------------------------------------ batch launch
    def user_indices(self, users) -> np.ndarray:
        """Indices of known users (for ``launch_many`` with integer arrays)."""
        return np.array([self._users[u] for u in users], dtype=np.int64)

    def app_indices(self, apps) -> np.ndarray:
        return np.array([self._apps[a] for a in apps], dtype=np.int64)

    def launch_many(self, users, apps, locations=None, endpoints=None, external=None, now=None):
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
        if now is None:
            now = float(self._clock())  # read once, whichever path decides
        if endpoints is None and external is None:
            # user indices or known ids, app indices, zone names or None, one time:
            # the compiled path (None: not that shape, a user to add, or a value to
            # refuse, which the path below names)
            rows = self._launch_compiled(users, apps, now, locations)
            if rows is not None:
                return Decisions(rows, self._names)
        n = len(users)
        if len(apps) != n:
            raise InvalidArgument("apps", f"length {len(apps)}", f"must have length {n} like users")
        a_idx = self._app_rows(apps, n)
        loc = self._optional_rows("locations", locations, n)
        eps = self._optional_rows("endpoints", endpoints, n)
        if external is None:
            ext = _filled(n, 0)
        else:
            ext = np.asarray(external)
            if ext.shape != (n,):
                raise InvalidArgument("external", f"shape {ext.shape}", f"must have length {n}")
            ext = ext.astype(bool).astype(np.int64)
        if now is None:
            nows = np.empty(n, dtype=np.float64)
            nows.fill(float(self._clock()))
        elif isinstance(now, (int, float, np.number)) or np.ndim(now) == 0:
            nows = np.empty(n, dtype=np.float64)
            nows.fill(_check_float("now", now))
        else:
            try:
                nows = np.ascontiguousarray(now, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise InvalidArgument("now", now, "must be a number or an array of numbers") from None
            if nows.shape[0] != n:
                raise InvalidArgument("now", f"length {nows.shape[0]}", f"must have length {n}")
            k = _engine.first_bad_time(nows)
            if k >= 0:
                why = "must be finite" if not math.isfinite(nows[k]) else "times must not decrease"
                raise InvalidArgument(f"now[{k}]", float(nows[k]), why)
        # ids that cannot be dict keys are refused before anything is added
        for field, values in (("users", users), ("locations", loc), ("endpoints", eps)):
            if values is not None and not (isinstance(values, np.ndarray) and values.dtype.kind in "iu"):
                k = _engine.first_unhashable(values)
                if k >= 0:
                    raise InvalidArgument(f"{field}[{k}]", values[k], "must be hashable")
        out = np.empty((n, st.N_D), dtype=np.int64)  # the kernel writes every field of every row
        with self._locked():
            if n:
                self._time_check(float(nows[0]))
            u_idx = self._user_rows(users, n)
            loc_idx = _filled(n, -1)
            if loc is not None:  # a zone no server uses: -2 (no candidates there)
                _engine.rows_from_names(loc, self._zones, loc_idx, -1, -2)
            ep_idx = _filled(n, -1)
            if eps is not None:
                ep_idx = np.empty(n, dtype=np.int64)
                self._endpoint_rows_into(eps, ep_idx)
            self._prepare_rows(n)
            self._launch_arrays(u_idx, a_idx, loc_idx, ep_idx, ext, nows, out)
        return Decisions(out, self._names)

    def _prepare_rows(self, n):
        if self._dirty:
            self._relayout()
        self._reserve(n)

    def _app_rows(self, apps, n) -> np.ndarray:
        if isinstance(apps, np.ndarray) and apps.dtype.kind in "iu":
            idx = _int64_rows(apps)
            k = _engine.first_outside(idx, len(self._app_names))
            if k >= 0:
                raise UnknownApp(f"apps[{k}]", int(idx[k]), "no such app")
            return idx
        if not isinstance(apps, (list, tuple)):
            apps = list(apps)
        out = np.empty(n, dtype=np.int64)
        try:
            _engine.rows_from_names(apps, self._apps, out, -1, -1)
        except TypeError:
            k = _engine.first_unhashable(apps)
            if k < 0:  # not a hash: an app name's own == raised
                raise
            raise InvalidArgument(f"apps[{k}]", apps[k], "must be hashable") from None
        k = _engine.first_outside(out, len(self._app_names))  # None or not an app: -1
        if k >= 0:
            raise UnknownApp(f"apps[{k}]", apps[k], "no such app")
        return out

    def _user_rows(self, users, n) -> np.ndarray:
        """User indices; unknown users are created (not enforced) or -1. Called
        with the lock held, after every other check of the batch."""
        if isinstance(users, np.ndarray) and users.dtype.kind in "iu":
            idx = _int64_rows(users)
            k = _engine.first_outside(idx, len(self._user_names))
            if k >= 0:
                raise InvalidArgument(f"users[{k}]", int(idx[k]), "no such user index")
            return idx
        out = np.empty(n, dtype=np.int64)
        self._user_rows_into(users, out)
        return out

    @staticmethod
    def _optional_rows(field, values, n):
        if values is None:
            return None
        if isinstance(values, str) or len(values) != n:
            raise InvalidArgument(field, values, f"must be a sequence of length {n}")
        return list(values)

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
                        score=key & (st.OVERTOL_BIT - 1),
                        pending=int(srv[st.SV_PENDING, i]),
                        over_tolerance=bool(key & st.OVERTOL_BIT),
                        sinbinned=bool(key & st.SINBIN_BIT),
                    )
                )
            pools.append(dict(pool=self._pool_names[p], allowed=allowed, funnel=funnel, top=cands))
        return Explanation(pools)

    # ------------------------------------------------------------ views
    @property
    def now(self):
        """Time of the latest operation (None before the first)."""
        t = float(self._clockv[st.CK_NOW])
        return None if t == -math.inf else t

    @property
    def licences_in_use(self) -> int:
        return int(self._header[st.H_HOLDERS])

    @property
    def licence_cap(self):
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
        return memoryview(self._header).toreadonly()

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
         ("sinbinned", "?"), ("image", "O"), ("picks", "i8")]
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
            out["power"] = [str(Power(v)) for v in srv[st.SV_POWER, idx]]
            out["mode"] = [str(Mode(v)) for v in srv[st.SV_MODE, idx]]
            for f in st.SERVER_FLOAT_FIELDS[:4]:
                out[f] = srvf[st.SERVER_FLOAT_FIELDS.index(f), idx]
            return out

    def server(self, name) -> dict:
        """One server's state as a dict."""
        i = self._server_index(name)
        rows = self.servers()
        row = rows[rows["index"] == i][0]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in rows.dtype.names}

    SESSION_DTYPE = np.dtype(
        [("id", "i8"), ("user", "O"), ("server", "O"), ("pool", "O"), ("state", "U12"),
         ("endpoint", "O"), ("apps", "O"), ("t_launch", "f8"), ("t_state", "f8"), ("pending", "?")]
    )

    def _endpoint_name(self, e):
        if e < 0:
            return None
        if len(self._endpoint_names) != len(self._endpoints):
            self._endpoint_names = list(self._endpoints)
        return self._endpoint_names[e]

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

    def session(self, id) -> dict:
        """One live session as a dict (UnknownSession / SessionEnded otherwise)."""
        try:
            sid = int(id)
        except (TypeError, ValueError):
            raise InvalidArgument("session", id, "must be a session id (int)") from None
        slot, gen = sid & _SLOT_MASK, sid >> 32
        ses = self._t["session_i"]
        if sid < 0 or slot >= ses.shape[1] or gen < 1 or gen > ses[st.SE_GEN, slot] or (
            gen == ses[st.SE_GEN, slot] and ses[st.SE_STATE, slot] == SessionState.FREE
        ):
            raise_for_status(1, "session", id)
        if gen < ses[st.SE_GEN, slot]:
            raise_for_status(2, "session", id)
        rows = self.sessions()
        row = rows[rows["id"] == sid][0]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in rows.dtype.names}

    # ------------------------------------------------------------ names
    @property
    def pool_names(self) -> list:
        return list(self._pool_names)

    @property
    def app_names(self) -> list:
        return list(self._app_names)

    @property
    def zone_names(self) -> list:
        return list(self._zone_names)

    @property
    def user_ids(self) -> list:
        return list(self._user_names)

    def server_names(self) -> list:
        """Names of present servers, in index order."""
        return [n for i, n in enumerate(self._server_names) if self._servers.get(n) == i]

    def pool_config(self, name) -> dict:
        if name not in self._pools:
            raise UnknownPool("pool", name, "no such pool")
        return dict(self._pool_config[self._pools[name]])

    def app_config(self, name) -> dict:
        if name not in self._apps:
            raise UnknownApp("app", name, "no such app")
        return dict(self._app_config[self._apps[name]])

    def user_config(self, id) -> dict:
        u = self._users[id]
        hz = int(self._t["user"][st.US_HOME_ZONE, u])
        return dict(id=id, home_zone=None if hz < 0 else self._zone_names[hz], apps=sorted(self._user_apps[u]))

    # ------------------------------------------------------------ what-if
    def copy(self) -> "Scheduler":
        """An independent deep copy (state, configuration, clock): try a storm,
        a power plan or a rollout on the copy and keep the original untouched."""
        with self._locked():
            if self._dirty:
                self._relayout()
            new = type(self).__new__(type(self))
            for attr in ("_servers", "_pools", "_apps", "_users", "_zones", "_endpoints", "_tags"):
                setattr(new, attr, dict(getattr(self, attr)))
            for attr in ("_server_names", "_zone_names", "_pool_names", "_app_names", "_user_names",
                         "_server_images", "_server_tagsets", "_user_apps", "_endpoint_names"):
                setattr(new, attr, list(getattr(self, attr)))
            new._pool_config = [dict(c) for c in self._pool_config]
            new._app_config = [dict(c) for c in self._app_config]
            new._names = (new._server_names, new._zone_names, new._pool_names)
            new._clock = self._clock
            new._seed = self._seed
            new._n_app_pools = self._n_app_pools
            new._header = self._header.copy()
            new._clockv = self._clockv.copy()
            new._t = {}
            for table, array in self._t.items():
                if table == "clock":
                    new._alloc("clock", new._clockv, None)
                elif table == "tree":  # keep its rows on cache-line boundaries
                    tree = groups.aligned_rows(array.shape[0], array.shape[1], 0)
                    tree[:] = array
                    new._alloc("tree", tree, None)
                else:
                    new._alloc(table, array.copy(), None)
            new._bind(new._header, new._clockv, _kernels)
            new._dirty = False
            return new

    # ------------------------------------------------------------ files
    @classmethod
    def from_files(cls, config_path, servers_path=None, **kwargs):
        """A scheduler configured from a fleet: pools, apps, users, licences and
        settings in TOML, servers in CSV or Parquet (see docs/TRACE_FORMAT.md)."""
        from usher.formats import fleet

        return fleet.load_fleet(config_path, servers_path, scheduler_cls=cls, **kwargs)

    def to_files(self, config_path, servers_path=None):
        """Write this scheduler's configuration and servers (round trip of
        ``from_files``)."""
        from usher.formats import fleet

        fleet.save_fleet(self, config_path, servers_path)

    def __repr__(self):
        return (f"<usher.Scheduler servers={len(self._servers)} pools={len(self._pools)} "
                f"apps={len(self._apps)} users={len(self._users)} sessions={self.live_sessions} "
                f"licences={self.licences_in_use}/{self.licence_cap}>")


class _Locked:
    """``with scheduler._locked():`` — the scheduler's lock for Python-level changes."""

    __slots__ = ("_s",)

    def __init__(self, s):
        self._s = s

    def __enter__(self):
        self._s._lock_acquire()

    def __exit__(self, *exc):
        self._s._lock_release()
        return False
