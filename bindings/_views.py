"""``Scheduler``'s read-only side: explanations, views of servers and sessions,
names and configurations (a mixin of :class:`usher.Scheduler`; see scheduler.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from usher import validate as _v
from usher._common import (
    _SLOT_MASK,
    _check_name,
    _Host,
    _ptr,
)
from usher.core import config
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.core.codes import (
    Mode,
    Power,
    SessionState,
)
from usher.core.explain import FUNNEL
from usher.decisions import Explanation
from usher.errors import (
    InvalidArgument,
    UnknownApp,
    UnknownPool,
    UnknownUser,
    raise_for_status,
)


def _names_by_code(enum_cls) -> np.ndarray:
    """``str(member)`` at the index of each member's code (codes run from 0)."""
    names = np.array([str(m) for m in sorted(enum_cls)])
    assert [int(m) for m in sorted(enum_cls)] == list(range(len(names)))
    return names


_POWER_NAMES, _MODE_NAMES = _names_by_code(Power), _names_by_code(Mode)
_SESSION_STATE_NAMES = _names_by_code(SessionState)


def _objects(names: list) -> np.ndarray:
    """A list of names as a 1-D object array (for indexing by a column of codes)."""
    a = np.empty(len(names), dtype=object)
    a[:] = names
    return a


def _names_at(names: list, codes: np.ndarray):
    """``names[c]`` for each of ``codes``: by one index into an
    object array, or one by one when the codes are few beside the names (a single
    session of a million users)."""
    if 8 * len(codes) < len(names):
        return [names[c] for c in codes.tolist()]
    return _objects(names)[codes]


def _optional_names_at(names: list, codes: np.ndarray):
    """``_names_at`` where a code of -1 stands for None."""
    if 8 * len(codes) < len(names):
        return [None if c < 0 else names[c] for c in codes.tolist()]
    return _objects([*names, None])[codes]


def _frozensets(tagsets: list) -> np.ndarray:
    """An object array of ``frozenset(t)`` for each tuple ``t`` of ``tagsets``, one
    frozenset per distinct tuple (indexed into place: an array of sets is not
    read back as a sequence)."""
    position: dict = {}
    codes = np.fromiter((position.setdefault(t, len(position)) for t in tagsets), np.intp, len(tagsets))
    sets = np.empty(len(position), dtype=object)
    for t, j in position.items():
        sets[j] = frozenset(t)
    return sets[codes]


def _pick(values: list, idx: np.ndarray, every: bool) -> list:
    """``values`` at the indices ``idx`` (all of them, in order, when ``every``)."""
    return values[: len(idx)] if every else [values[i] for i in idx.tolist()]


class _Views(_Host):
    """Explanations, read-only views, names and configurations."""

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
                        slow=bool(key & st.SLOW_BIT),
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
         ("sinbinned", "?"), ("image", "O"), ("picks", "i8"), ("place_last", "?"),
         ("slow", "?"), ("logons", "i8"), ("logon_ewma", "f8")]
    )

    def servers(self) -> np.ndarray:
        """One record per present server (a copy), in index order."""
        with self._locked():
            if self._dirty:
                self._relayout()
            n = int(self._header[st.H_N_SERVERS])
            present = self._t["server_i"][st.SV_PRESENT, :n] != 0
            every = bool(present.all())
            return self._server_rows(np.arange(n) if every else np.nonzero(present)[0], every)

    def _server_rows(self, idx: np.ndarray, every: bool) -> np.ndarray:
        """The ``servers()`` records of the servers ``idx`` (``every``: all of them,
        0 .. n-1), built a column at a time: names, zones, pools and images by
        index into their lists, power and mode by index into their names, and one
        frozenset per distinct tag set (shared by the rows that carry it). Lock
        held, layout current."""
        srv, srvf = self._t["server_i"], self._t["server_f"]
        rows = slice(0, len(idx)) if every else idx
        out = np.zeros(len(idx), dtype=self.SERVER_DTYPE)
        out["index"] = idx
        out["name"] = _pick(self._server_names, idx, every)
        out["zone"] = _names_at(self._zone_names, srv[st.SV_ZONE, rows])
        out["pool"] = _names_at(self._pool_names, srv[st.SV_POOL, rows])
        out["tags"] = _frozensets(_pick(self._server_tagsets, idx, every))
        out["image"] = _pick(self._server_images, idx, every)
        for f in ("max_sessions", "weight", "sessions", "pending", "load_index", "picks", "logons"):
            out[f] = srv[st.SERVER_INT_FIELDS.index(f), rows]
        out["registered"] = srv[st.SV_REGISTERED, rows] != 0
        out["sinbinned"] = srv[st.SV_SINBIN, rows] != 0
        bits = srv[st.SV_KEY_BITS, rows]
        out["place_last"] = (bits & st.PLACE_LAST_BIT) != 0
        out["slow"] = (bits & st.SLOW_BIT) != 0
        out["logon_ewma"] = srvf[st.SF_LOGON_EWMA, rows]
        out["power"] = _POWER_NAMES[srv[st.SV_POWER, rows]]
        out["mode"] = _MODE_NAMES[srv[st.SV_MODE, rows]]
        for f in st.SERVER_FLOAT_FIELDS[:4]:
            out[f] = srvf[st.SERVER_FLOAT_FIELDS.index(f), rows]
        return out

    def server(self, name: str | int) -> dict[str, Any]:
        """One server's state as a dict (its ``servers()`` record)."""
        with self._locked():
            i = self._server_index(name)
            if self._dirty:
                self._relayout()
            row = self._server_rows(np.array([i]), False)[0]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in row.dtype.names}  # type: ignore[union-attr]  # a structured dtype

    SESSION_DTYPE = np.dtype(
        [("id", "i8"), ("user", "O"), ("server", "O"), ("pool", "O"), ("state", "U12"),
         ("endpoint", "O"), ("apps", "O"), ("t_launch", "f8"), ("t_state", "f8"), ("pending", "?")]
    )

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
            return self._session_rows(np.nonzero(self._t["session_i"][st.SE_STATE] != SessionState.FREE)[0])

    def _session_rows(self, idx: np.ndarray) -> np.ndarray:
        """The ``sessions()`` records of the session slots ``idx``: names and states
        by index into their lists a column at a time, the apps of each session from
        its instance list. Lock held."""
        ses, sesf = self._t["session_i"], self._t["session_f"]
        out = np.zeros(len(idx), dtype=self.SESSION_DTYPE)
        out["id"] = (ses[st.SE_GEN, idx] << 32) | idx
        out["user"] = _names_at(self._user_names, ses[st.SE_USER, idx])
        out["server"] = _names_at(self._server_names, ses[st.SE_SERVER, idx])
        out["pool"] = _names_at(self._pool_names, ses[st.SE_POOL, idx])
        out["state"] = _SESSION_STATE_NAMES[ses[st.SE_STATE, idx]]
        out["endpoint"] = _optional_names_at(self._endpoint_names, ses[st.SE_ENDPOINT, idx])
        out["apps"] = [self._session_apps(x) for x in idx.tolist()]
        out["t_launch"] = sesf[st.SEF_T_LAUNCH, idx]
        out["t_state"] = sesf[st.SEF_T_STATE, idx]
        out["pending"] = ses[st.SE_PENDING, idx] != 0
        return out

    def session(self, id: int) -> dict[str, Any]:
        """One live session as a dict (UnknownSession / SessionEnded otherwise)."""
        sid = _v.session_id("session", id)
        slot, gen = sid & _SLOT_MASK, sid >> 32
        with self._locked():
            ses = self._t["session_i"]
            if slot >= ses.shape[1] or gen < 1 or gen > ses[st.SE_GEN, slot] or (
                gen == ses[st.SE_GEN, slot] and ses[st.SE_STATE, slot] == SessionState.FREE
            ):
                raise_for_status(1, "session", id)
            if gen < ses[st.SE_GEN, slot]:
                raise_for_status(2, "session", id)
            row = self._session_rows(np.array([slot]))[0]
        return {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in row.dtype.names}  # type: ignore[union-attr]  # a structured dtype

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
        id = _check_name("id", id)
        with self._locked():
            u = self._find_user(id)
            if u < 0:
                raise UnknownUser("id", id, "no such user")
            hz = int(self._t["user"][st.US_HOME_ZONE, u])
            return dict(id=id, home_zone=None if hz < 0 else self._zone_names[hz], apps=sorted(self._user_apps[u]))
