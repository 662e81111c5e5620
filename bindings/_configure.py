"""``Scheduler``'s configuration: settings, pools, apps and users (a mixin of
:class:`usher.Scheduler`; see scheduler.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from usher import _engine
from usher import validate as _v
from usher._common import (
    USER_DIRECTORY,
    USER_FREE,
    USER_IMPLICIT,
    _as_enums,
    _as_names,
    _check_bool,
    _check_float,
    _check_int,
    _check_name,
    _Host,
    _ptr,
    _serialised,
)
from usher.core import config
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.core.codes import (
    LoadBalancing,
    LoadRule,
    Reconnection,
    ZonePreference,
    parse_enum,
)
from usher.errors import (
    DuplicateName,
    InvalidArgument,
    InvalidState,
    UnknownPool,
    UnknownUser,
)


class _Configure(_Host):
    """Settings, licences, pools, apps and users: validated, then written under the lock."""

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
        slow_logon_factor: float | None = None,
        slow_min_samples: int = config.DEFAULT_SLOW_MIN_SAMPLES,
    ) -> None:
        """Add a pool (delivery group). Pools cannot be changed once added.

        ``slow_logon_factor``: None or 0 (off), else a number > 1: a server of the
        pool with at least ``slow_min_samples`` logons whose logon EWMA exceeds
        this factor times the pool's median is *slow* (docs/SEMANTICS.md)."""
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
        slow_factor = None
        if slow_logon_factor is not None:
            slow_factor = _check_float("slow_logon_factor", slow_logon_factor, 0.0, 1e6)
            if slow_factor == 0.0:
                slow_factor = None
            elif slow_factor <= 1.0:
                raise InvalidArgument("slow_logon_factor", slow_logon_factor, "must be 0 (off) or above 1")
        slow_min = _check_int("slow_min_samples", slow_min_samples, 1, _v.MAX_COUNT)
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
                "slow_min": slow_min, "slow_wait": 0,
            }
            for key, v in values.items():
                pool[getattr(st, f"PO_{key.upper()}"), p] = int(v)
            for k, z in enumerate(zp):
                pool[st.PO_ZPREF0 + k, p] = int(z)
            poolf[st.POF_CPU_FULL, p] = cpu_full
            poolf[st.POF_MEMORY_FULL, p] = memory_full
            poolf[st.POF_DISK_QUEUE_FULL, p] = disk_queue_full
            poolf[st.POF_SLOW_FACTOR, p] = 0.0 if slow_factor is None else slow_factor
            poolf[st.POF_LOGON_MEDIAN, p] = -1.0
            self._pools[name] = p
            self._pool_names.append(name)
            self._pool_config.append(
                dict(
                    name=name, load_balancing=str(lb), zone_preference=[str(z) for z in zp],
                    failover=failover, session_reconnection=str(rec), reconnect_in_maintenance=rim,
                    external_access=ext, logon_tolerance=tol, tolerance_is_hard=hard,
                    max_sessions_per_user=mpu, load_rules=[str(r) for r in rules],
                    cpu_full=cpu_full, memory_full=memory_full, disk_queue_full=disk_queue_full,
                    slow_logon_factor=slow_factor, slow_min_samples=slow_min,
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
        if self._find_user(id) >= 0:
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
            u = self._find_user(id)
            if u < 0:
                raise UnknownUser("id", id, "no such user")
            n = int(self._t["user"][st.US_N_SESSIONS, u])
            if n:
                raise InvalidState("id", id, f"holds {n} live sessions")
            self._forget_user(u)

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
            known = np.flatnonzero(self._find_users(ids) >= 0)
            if len(known):
                k = int(known[0])
                raise DuplicateName(f"ids[{k}]", ids[k], "a user with this id exists")
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
            self._user_names.extend(ids)  # the key table reads the ids appended at its next lookup
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
        self._user_key_added(id, u, appended)
        if implicit:
            self._added_since_sweep += 1
        for name in app_names:
            a = self._apps.get(name)
            if a is not None:
                self._entitle(u, a)
        return u
