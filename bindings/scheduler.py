"""The public API: :class:`Scheduler`.

Design: the public wrapper validates, the private kernel computes. This module
holds the scheduler's core state handling: construction, table allocation and
growth, the lock, and whole-state copies (``copy``, pickling, snapshots, fleet
files). Its methods come in groups from mixins in private modules:
``_configure`` (settings, licences, pools, apps, users), ``_servers`` (servers
and telemetry), ``_batches`` (``launch_many``) and ``_views`` (explanations,
read-only views, names); ``_common`` holds what they share. The hot
per-request operations (``launch``, ``logoff`` ...) are inherited from the
compiled base class ``usher._engine.Engine``. Every public method validates all
of its input before it changes anything, so an error leaves the state exactly
as it was; a batch with one bad row applies nothing.
"""

from __future__ import annotations

import copy as _copy
import math
import time
from collections.abc import Callable
from os import PathLike
from threading import get_ident
from typing import Any

import numpy as np

from usher import _engine
from usher import validate as _v
from usher._batches import _Batches
from usher._common import (  # noqa: F401  (SWEEP_FLOOR and the user kinds are this module's names too)
    SWEEP_FLOOR,
    USER_DIRECTORY,
    USER_FREE,
    USER_IMPLICIT,
    _as_names,
    _check_bool,
    _check_float,
    _check_int,
    _check_name,
    _ptr,
)
from usher._configure import _Configure
from usher._servers import _Servers
from usher._views import _Views
from usher.core import config, groups
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.core.codes import SessionState
from usher.decisions import Decision, Decisions, Explanation
from usher.errors import InvalidArgument

__all__ = ["Scheduler", "Decision", "Decisions", "Explanation"]


# ---------------------------------------------------------------- scheduler
class Scheduler(_Configure, _Servers, _Batches, _Views, _engine.Engine):
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

        self._servers, self._pools, self._apps = {}, {}, {}
        self._zones, self._tags = {}, {}
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

    # ------------------------------------------------------------ what-if
    #: the compiled base's attributes that make up the state (the rest is in __dict__)
    _ENGINE_STATE = ("_apps", "_zones", "_servers", "_pools",
                     "_server_names", "_zone_names", "_pool_names", "_app_names", "_user_names",
                     "_endpoint_names", "_user_free", "_endpoint_free", "_user_kind", "_user_apps",
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
        # a state written when user ids and endpoints had dicts: the key tables read the name lists
        state.pop("_users", None)
        state.pop("_endpoints", None)
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
                f"apps={len(self._apps)} users={len(self._user_names) - len(self._user_free)} sessions={self.live_sessions} "
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
