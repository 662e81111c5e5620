"""``Scheduler``'s servers: adding, changing and removing session hosts, and
their telemetry (a mixin of :class:`usher.Scheduler`; see scheduler.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from usher import _engine
from usher import validate as _v
from usher._common import (
    _ZEROS,
    _as_names,
    _check_bool,
    _check_int,
    _check_name,
    _Host,
    _serialised,
    _telemetry_column,
)
from usher.core import config
from usher.core import kernels as _kernels
from usher.core import state as st
from usher.core.codes import (
    Mode,
    Power,
    parse_enum,
)
from usher.errors import (
    DuplicateName,
    InvalidArgument,
    ServerBusy,
    UnknownPool,
    UnknownServer,
)


_FLOAT64 = np.dtype(np.float64)


def _column(field, values, n):
    """``_telemetry_column(field, values, n)``: a contiguous 1-D float64 ndarray of
    length n is that column as it is (what the general check returns for it);
    anything else through the general check."""
    if (type(values) is np.ndarray and values.dtype == _FLOAT64 and values.ndim == 1
            and values.shape[0] == n and values.flags.c_contiguous):
        return values
    return _telemetry_column(field, values, n)


def _enum_codes(enum_cls) -> dict[str, int]:
    """``{lower-case member name: code}``: the names ``parse_enum`` reads most."""
    return {m.name.lower(): int(m) for m in enum_cls}


_POWER_CODES, _MODE_CODES = _enum_codes(Power), _enum_codes(Mode)
_POWER_OFF = int(Power.OFF)


def _code(codes: dict[str, int], enum_cls, field: str, value) -> int:
    """``int(parse_enum(enum_cls, field, value))``: a member, or its lower-case
    name, without the general parse; any other value (and every error) through
    ``parse_enum``."""
    if type(value) is str:
        code = codes.get(value)
        if code is not None:
            return code
    elif type(value) is enum_cls:
        return value._value_
    return int(parse_enum(enum_cls, field, value))


class _Servers(_Host):
    """Servers: add, power, registration, mode, place-last, image, removal, telemetry."""

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
                "sinbin": 0, "key_bits": 0, "picks": 0, "logons": 0,
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

    def _present_index(self, server) -> int:
        """``_server_index(server)``, with a name (a ``str``) or an ``int`` index of a
        present server resolved inline; anything else (and every error) through
        ``_server_index``. Lock held."""
        if type(server) is str:
            i = self._servers.get(server)
            if i is not None:
                return i
        elif type(server) is int:
            names = self._server_names
            if 0 <= server < len(names) and self._servers.get(names[server]) == server:
                return server
        return self._server_index(server)

    def _server_change(self, server, op, value, now, sessions=False):
        """One server-state kernel call: ``now`` checked, then under the lock the
        server (an unknown one is the error), the layout, the kernel (which checks
        the clock). ``sessions``: the call may end the server's sessions (sizes
        the buffer of their ids). Returns the ended sessions' ids."""
        if now is not None and not (type(now) is float and -_v.MAX_TIME <= now <= _v.MAX_TIME):
            now = _v.time("now", now)
        self._lock_acquire()
        try:
            i = self._present_index(server)
            if self._dirty:
                self._relayout()
            n = int(self._t["server_i"][st.SV_SESSIONS, i]) if sessions else 0
            return self._server_call(i, op, value, now, n)
        finally:
            self._lock_release()

    def set_power(self, server: str | int, state: str | Power, now: float | None = None) -> list[int]:
        """Set the power state. Powering off ends every session on the server;
        returns the ids of those lost sessions."""
        code = _code(_POWER_CODES, Power, "state", state)
        return self._server_change(server, _kernels.OP_POWER, code, now, code == _POWER_OFF)

    def set_registered(self, server: str | int, registered: bool, now: float | None = None) -> None:
        """An unregistered server keeps its sessions but takes no new session
        and no reconnect until it registers again."""
        registered = _check_bool("registered", registered)
        self._server_change(server, _kernels.OP_REGISTERED, int(registered), now)

    def set_mode(self, server: str | int, mode: str | Mode, now: float | None = None) -> None:
        """``enabled``, ``drain`` (no new sessions, reconnects allowed) or
        ``maintenance`` (reconnects only where the pool allows them)."""
        self._server_change(server, _kernels.OP_MODE, _code(_MODE_CODES, Mode, "mode", mode), now)

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
            servers = _v.sequence("servers", servers)
        flag = _v.flag("flag", flag)
        if now is not None:
            now = _v.time("now", now)
        self._lock_acquire()
        try:  # every server resolved (the first bad one is the error) before any change
            idx = self._marked_indices(servers)
            if now is not None:
                self._time_check(now)
            if self._dirty:
                self._relayout()
            self._server_calls(np.array(idx, dtype=np.int64), _kernels.OP_PLACE_LAST, int(flag), now)
        finally:
            self._lock_release()

    def _marked_indices(self, servers) -> list[int]:
        """The indices of ``set_place_last``'s servers, in order, in one pass: names
        by one dict probe each, Python ints by one range and presence test each;
        a value of any other kind, and the first bad one, through
        ``_server_index`` (field ``servers``, as one by one). Lock held."""
        n_names, names, get = len(self._server_names), self._server_names, self._servers.get
        if isinstance(servers, np.ndarray) and servers.dtype.kind in "iu":
            srv = self._t["server_i"]
            n = int(self._header[st.H_N_SERVERS])
            inside = (servers >= 0) & (servers < n)
            if inside.all() and srv[st.SV_PRESENT, servers].all():
                return servers.tolist()  # present servers (SV_PRESENT: as the names say)
        out = []
        for x in servers:
            if type(x) is int:
                if 0 <= x < n_names and get(names[x]) == x:
                    out.append(x)
                    continue
            elif type(x) is str:
                i = get(x)
                if i is not None:
                    out.append(i)
                    continue
            out.append(self._server_index(x, "servers"))
        return out

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
        if self._telemetry_indexed(servers, cpu, mem, disk_queue, custom, now):
            return  # indices and float64 columns as they are: the kernel checks every row
        servers = _v.sequence("servers", servers)
        if now is not None:
            now = _v.time("now", now)
        self._lock_acquire()
        try:  # the servers first (an unknown one is the error), then the columns
            idx = self._server_indices(servers)
            n = idx.shape[0]
            zeros = _ZEROS if n <= _ZEROS.shape[0] else np.zeros(n)
            c_cpu = zeros if cpu is None else _column("cpu", cpu, n)
            c_mem = zeros if mem is None else _column("mem", mem, n)
            c_disk = zeros if disk_queue is None else _column("disk_queue", disk_queue, n)
            c_custom = zeros if custom is None else _column("custom", custom, n)
            mask = ((cpu is not None) * _kernels.T_CPU | (mem is not None) * _kernels.T_MEM
                    | (disk_queue is not None) * _kernels.T_DISK_QUEUE | (custom is not None) * _kernels.T_CUSTOM)
            if self._dirty:
                self._relayout()
            self._telemetry_arrays(idx, c_cpu, c_mem, c_disk, c_custom, mask, now)
        finally:
            self._lock_release()

    def server_indices(self, servers: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices of present servers named by ``servers`` (names), as an int64
        array (for ``telemetry_many`` and the server operations; a server keeps its
        index until it is removed). An unknown server raises UnknownServer naming
        ``servers[k]``; a value that is not a name, InvalidArgument."""
        servers = _v.sequence("servers", servers)
        k = _engine.first_not_id(servers)
        if k >= 0:
            raise InvalidArgument(f"servers[{k}]", servers[k], "must be a non-empty string")
        self._lock_acquire()
        try:
            return self._server_indices(servers)
        finally:
            self._lock_release()

    def _server_indices(self, servers) -> np.ndarray:
        """Server indices of a batch (names, or an integer array; the kernel
        checks each index is a present server). Lock held.

        Names: one compiled pass of type tests and one of dict probes
        (``_engine.first_not_id``, ``_engine.rows_from_names``); a batch with a
        value that is not a known name (an unknown or empty name, an index, None)
        goes row by row through ``_server_index``, which names the first bad row."""
        if isinstance(servers, np.ndarray):
            if servers.dtype.kind in "iu":
                return _v.index_array("servers", servers)
            if servers.dtype == object:
                servers = servers.tolist()  # the same objects, read faster
        if _engine.first_not_id(servers) < 0:  # names (non-empty strs) only
            out = np.empty(len(servers), dtype=np.int64)
            if _engine.rows_from_names(servers, self._servers, out, -1, -1) < 0:
                return out
        return np.array([self._server_index(x, f"servers[{k}]") for k, x in enumerate(servers)],
                        dtype=np.int64)
