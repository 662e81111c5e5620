"""Replay of broker traces: ``usher replay`` and :func:`replay`.

A trace is JSON Lines, one operation per line, each naming a ``usher.Scheduler``
method (``op``) with that method's keyword names, at time ``t``. Every launch gives
one decision line; a line that cannot be applied gives one error line and changes
nothing. The formats are specified in docs/TRACE_FORMAT.md.

Design: the replay is a loop over the public API, so parsing and dispatch are kept
small next to the engine's own cost:

- *decode in bulk*: the input is read in blocks of whole lines and each block is
  decoded at once by msgspec into typed Structs (a tagged union on ``op``, unknown
  fields forbidden). Only a block holding a bad or blank line is decoded again line
  by line, so that each error names its own line.
- *batch where the semantics allow*: a long run of consecutive launches goes through
  ``Scheduler.launch_many`` with per-row ``now`` (it gives exactly the decisions of the
  same launches one by one), a run of consecutive telemetry lines reporting the same
  fields goes through ``telemetry_many`` (no operation can observe the server state
  between them, and the clock ends at the run's last ``t``), a run of ``user`` lines
  through ``add_users``. The batch calls check every row before applying any; if one raises, nothing was applied and the run is
  replayed line by line, which reports the bad line exactly.
- *encode in bulk*: decisions and errors are msgspec Structs, encoded a few dozen at
  a time with ``Encoder.encode_lines`` (while they are still in the CPU caches) and
  written in chunks of a megabyte.

Session names: a session is named by the id of every launch that placed, reconnected
or shared into it; a decision reports the session by the id of the launch that
created it (or, for a session that existed before the replay, the first launch of
the replay that joined it).
"""

from __future__ import annotations

import gc
import gzip
import io
import math
import os
import re
import sys
import time
from collections.abc import Iterable
from itertools import islice
from operator import le

import msgspec
import numpy as np
from msgspec import UNSET, Struct, UnsetType

from usher.errors import DuplicateName, InvalidArgument, TimeWentBackwards, UnknownSession, UsherError
from usher.formats.fleet import AppSpec, PoolSpec, ServerSpec, SettingsSpec, UserSpec, spec_kwargs

__all__ = [
    "replay",
    "Replayer",
    "ReplayResult",
    "LaunchDecision",
    "LineError",
    "TraceError",
    "OPS",
]

_INF = math.inf
BLOCK_BYTES = 1 << 20  # bytes read and decoded at once
_FLUSH = 64  # output records encoded at once (few: encoded while still in the CPU caches)
_WRITE = 1 << 20  # bytes of encoded output written at once
_MAX_RUN = 8192  # longest launch / telemetry run given to one batch call
# Shorter runs go one by one. Measured (600 servers, 3 zones; benchmarks/bench_replay.py):
# launch_many costs ~45 us per call plus ~1.8 us per row, launch() ~1.6 us, so a launch
# batch only breaks even on long storms; telemetry_many costs ~7 us per call plus
# ~0.25 us per row against ~1.0 us for telemetry().
_MIN_LAUNCH_RUN = 1024
_MIN_TELEMETRY_RUN = 16
_MIN_USER_RUN = 16  # a user directory: add_users is all or nothing, so a bad line falls back


class TraceError(InvalidArgument):
    """A trace line that is not a valid operation: malformed JSON, not an object,
    unknown ``op``, unknown or missing field, or a value of the wrong type."""

    def __str__(self):
        if self.value is None:
            return f"{self.field}: {self.detail}"
        return super().__str__()


# ---------------------------------------------------------------- operations
_OPCFG = dict(kw_only=True, forbid_unknown_fields=True, tag_field="op", gc=False)


class SettingsOp(SettingsSpec, tag="settings", **_OPCFG):
    t: float


class LicencesOp(Struct, tag="licences", **_OPCFG):
    t: float
    cap: int | None


class PoolOp(PoolSpec, tag="pool", **_OPCFG):
    t: float


class AppOp(AppSpec, tag="app", **_OPCFG):
    t: float


class UserOp(UserSpec, tag="user", **_OPCFG):
    t: float


class ServerOp(ServerSpec, tag="server", **_OPCFG):
    t: float


class RemoveServerOp(Struct, tag="remove_server", **_OPCFG):
    t: float
    server: str
    force: bool = False


class PowerOp(Struct, tag="power", **_OPCFG):
    t: float
    server: str
    state: str


class RegisterOp(Struct, tag="register", **_OPCFG):
    t: float
    server: str
    registered: bool


class ModeOp(Struct, tag="mode", **_OPCFG):
    t: float
    server: str
    mode: str


class TelemetryOp(Struct, tag="telemetry", **_OPCFG):
    t: float
    server: str
    cpu: float | None = None
    mem: float | None = None
    disk_queue: float | None = None
    custom: float | None = None


class LaunchOp(Struct, tag="launch", **_OPCFG):
    t: float
    id: str | int
    user: str | int
    app: str
    location: str | None = None
    endpoint: str | None = None
    external: bool = False


class LogonDoneOp(Struct, tag="logon_done", **_OPCFG):
    t: float
    session: str | int


class DisconnectOp(Struct, tag="disconnect", **_OPCFG):
    t: float
    session: str | int


class LogoffOp(Struct, tag="logoff", **_OPCFG):
    t: float
    session: str | int


class CloseAppOp(Struct, tag="close_app", **_OPCFG):
    t: float
    session: str | int
    app: str


class LaunchFailedOp(Struct, tag="launch_failed", **_OPCFG):
    t: float
    session: str | int


_OP_CLASSES = (SettingsOp, LicencesOp, PoolOp, AppOp, UserOp, ServerOp, RemoveServerOp, PowerOp,
               RegisterOp, ModeOp, TelemetryOp, LaunchOp, LogonDoneOp, DisconnectOp, LogoffOp,
               CloseAppOp, LaunchFailedOp)
Op = SettingsOp | LicencesOp | PoolOp | AppOp | UserOp | ServerOp | RemoveServerOp | PowerOp | \
    RegisterOp | ModeOp | TelemetryOp | LaunchOp | LogonDoneOp | DisconnectOp | LogoffOp | \
    CloseAppOp | LaunchFailedOp
#: op name -> its Struct
OPS = {cls.__struct_config__.tag: cls for cls in _OP_CLASSES}


class _BadLine:
    """A line that could not be decoded (stands in for an op in a block)."""

    __slots__ = ("t", "error")

    def __init__(self, t, error):
        self.t = t
        self.error = error


class _Blank:
    """An empty line: skipped, not counted."""


_BLANK = _Blank()


# ---------------------------------------------------------------- output records
class LaunchDecision(Struct, gc=False):
    """One decision line. ``session`` is the id of the launch that created the
    session; ``explanation`` is present only with ``explain``."""

    t: float
    id: str | int
    outcome: str
    server: str | None
    zone: str | None
    session: str | int | None
    reason: str | None
    load_index: int | None
    explanation: dict | UnsetType = UNSET


class LineError(Struct, gc=False):
    """One error line: the line was not applied (the state is unchanged)."""

    t: float | None
    line: int
    error: str
    message: str


_OUTCOMES = ("placed", "reconnected", "shared", "rejected")
_REASONS = (None, "not_entitled", "external_denied", "licence_exhausted", "user_limit", "app_limit",
            "no_server", "full", "logon_tolerance")


def _tally_key(code: int) -> str:
    o, r = divmod(code, 16)
    return _OUTCOMES[o] if o != 3 else f"rejected:{_REASONS[r]}"


class ReplayResult(Struct):
    """What a replay did.

    Attributes:
        scheduler: the scheduler after the replay.
        ops: lines replayed (applied or failed; blank lines are not counted).
        launches: launch lines applied (= decision lines).
        outcomes: ``{"placed": n, "reconnected": n, "shared": n, "rejected:<reason>": n}``.
        errors: one :class:`LineError` per line that failed, in line order.
        decisions: the :class:`LaunchDecision` of every launch, in line order
            (empty when the replay was asked not to keep them).
        seconds: wall time of the replay; ops_per_second: ops / seconds.
    """

    scheduler: object
    ops: int
    launches: int
    outcomes: dict
    errors: list
    decisions: list
    seconds: float

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_counts(self) -> dict:
        out: dict = {}
        for e in self.errors:
            out[e.error] = out.get(e.error, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------- errors of decoding
_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`")
_NAMED = re.compile(r"field `([^`]+)`")


def _loose(raw):
    """The line as a plain object, if it is JSON at all (for error details)."""
    if isinstance(raw, dict):
        return raw
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, TypeError, ValueError):
        return None


def _line_t(obj):
    t = obj.get("t") if isinstance(obj, dict) else None
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) else None


def _trace_error(exc: Exception, raw) -> _BadLine:
    """A _BadLine holding the TraceError for a line msgspec refused."""
    obj = _loose(raw)
    msg = str(exc)
    if not isinstance(exc, msgspec.ValidationError) or obj is None:
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray, memoryview)) else str(raw)
        text = text.strip()
        value = text if len(text) <= 60 else text[:57] + "..."
        return _BadLine(None, TraceError("line", value, f"malformed JSON ({msg})"))
    m = _AT.search(msg)
    path = m.group(1) if m else ""
    detail = msg.split(" - at `")[0]
    field = re.split(r"[.\[]", path)[0] if path else None
    named = _NAMED.search(detail)
    if named:
        field = named.group(1) if not path else f"{path}.{named.group(1)}"
        field = field.split(".")[0] if not path else field
    if not isinstance(obj, dict):
        return _BadLine(None, TraceError("line", obj, f"must be a JSON object ({detail})"))
    op = obj.get("op")
    value = obj.get(field) if field else None
    if field == "op" and "missing required field" not in detail:
        detail = f"unknown op; expected one of: {', '.join(OPS)}"
    elif detail.startswith("Object contains unknown field"):
        detail = f"unknown field for op {op!r}"
        field = named.group(1) if named else field
        value = obj.get(field)
    elif detail.startswith("Object missing required field"):
        detail = "required field is missing" + (f" (op {op!r})" if isinstance(op, str) else "")
        field = named.group(1) if named else field
    return _BadLine(_line_t(obj), TraceError(field or "line", value, detail))


# ---------------------------------------------------------------- sources
class _Source:
    """A trace input: yields blocks (first line number, list of ops) in order."""

    def __init__(self, src):
        self.size = None
        self.position = lambda: 0
        self._close = None
        self._stream = None
        self._items = None
        if isinstance(src, (str, os.PathLike)):
            path = os.fspath(src)
            if path == "-":
                self._stream = sys.stdin.buffer
            else:
                raw = open(path, "rb")
                self._close = raw
                self.size = os.fstat(raw.fileno()).st_size
                self.position = raw.tell
                self._stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        elif isinstance(src, (bytes, bytearray, memoryview)):
            self._stream = io.BytesIO(bytes(src))
        elif hasattr(src, "read"):
            self._stream = src.buffer if isinstance(src, io.TextIOBase) and hasattr(src, "buffer") else src
        elif isinstance(src, Iterable):
            self._items = src
        else:
            raise InvalidArgument("lines_or_path", src, "must be a path, '-', bytes, a file or an iterable of lines")

    def close(self):
        if self._close is not None:
            self._close.close()

    def blocks(self, decoder):
        if self._items is not None:
            yield from self._item_blocks(decoder)
            return
        first = 1
        rest = b""
        read = self._stream.read
        while True:
            data = read(BLOCK_BYTES)
            if isinstance(data, str):
                data = data.encode("utf-8")
            if not data:
                break
            data = rest + data if rest else data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            ops, blanks = _decode_block(decoder, memoryview(data)[: cut + 1])  # (a view: no copy)
            yield first, ops, blanks
            first += len(ops)
        if rest:
            yield first, *_decode_block(decoder, rest)

    def _item_blocks(self, decoder):
        first = 1
        ops = []
        blanks = 0
        for item in self._items:
            op = _decode_item(decoder, item)
            ops.append(op)
            blanks += op is _BLANK
            if len(ops) >= 4096:
                yield first, ops, blanks
                first += len(ops)
                ops, blanks = [], 0
        if ops:
            yield first, ops, blanks


def _decode_block(decoder, block) -> tuple[list, int]:
    """(one op per line of ``block`` (bytes or a memoryview), number of blank lines).
    Decoded at once when every line is a valid op, else line by line (``_BadLine`` /
    ``_BLANK`` in place). msgspec skips blank lines and reads two values on one line,
    so the lines are counted (by numpy: bytes.count is a byte-at-a-time loop)."""
    ends = np.frombuffer(block, np.uint8) == 10
    n_lines = int(np.count_nonzero(ends)) + (0 if len(ends) and ends[-1] else 1)
    try:
        ops = decoder.decode_lines(block)
        if len(ops) == n_lines:
            return ops, 0
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    block = bytes(block)
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    ops = [_decode_item(decoder, line) for line in lines]
    return ops, sum(1 for o in ops if o is _BLANK)



def _decode_item(decoder, item):
    if isinstance(item, _OP_CLASSES):
        return item
    if isinstance(item, dict):
        try:
            return msgspec.convert(item, Op)
        except msgspec.ValidationError as e:
            return _trace_error(e, item)
    if isinstance(item, str):
        item = item.encode("utf-8")
    if not isinstance(item, (bytes, bytearray, memoryview)):
        return _BadLine(None, TraceError("line", repr(item)[:60], "must be a JSON text, a dict or an op"))
    if not item.strip():
        return _BLANK
    try:
        return decoder.decode(item)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return _trace_error(e, item)


# ---------------------------------------------------------------- the replayer
_PENDING = object()  # a launch id taken by a launch of the batch being placed


class Replayer:
    """Replays trace lines against a scheduler, keeping the session names between
    calls of :meth:`feed` (a stream can be fed in pieces).

    Args:
        scheduler: the scheduler to drive (a new ``usher.Scheduler()`` if None).
        out: binary or text file for the decision/error lines, or None.
        explain: attach ``Decision.explanation.to_dict()`` to each decision line.
        keep: keep every decision in :attr:`decisions`.
        batch: use ``launch_many`` / ``telemetry_many`` / ``add_users`` for runs (same decisions).

    Attributes:
        names: launch id -> engine session id (None when the launch was rejected).
        creator: engine session id -> id of the launch that created the session.
        last_t: ``t`` of the last line applied.
        ops, lines: lines replayed (blank lines not counted) / read.
    """

    def __init__(self, scheduler=None, out=None, explain=False, keep=True, batch=True):
        if scheduler is None:
            from usher.scheduler import Scheduler

            scheduler = Scheduler()
        self.scheduler = scheduler
        self.explain = bool(explain)
        self.keep = keep
        self.batch = batch and not self.explain
        self._out = out
        self._text_out = isinstance(out, io.TextIOBase)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Op)
        self._pending_out: list = []  # output records not yet encoded
        self._encoded: list = []  # encoded output not yet written
        self._encoded_size = 0
        self.names: dict = {}
        self.creator: dict = {}
        self.decisions: list = []
        self.errors: list = []
        self.ops = 0
        self.lines = 0  # lines read so far (line numbers go on from one feed to the next)
        self._tally = [0] * 64  # outcome * 16 + reason -> count
        self.seconds = 0.0
        now = scheduler.now
        self.last_t = -_INF if now is None else now
        self._handlers = {
            SettingsOp: self._settings, LicencesOp: self._licences, PoolOp: self._pool,
            AppOp: self._app, UserOp: self._user, ServerOp: self._server,
            RemoveServerOp: self._remove_server, PowerOp: self._power, RegisterOp: self._register,
            ModeOp: self._mode, TelemetryOp: self._telemetry, LaunchOp: self._launch,
            LogonDoneOp: self._logon_done, DisconnectOp: self._disconnect, LogoffOp: self._logoff,
            CloseAppOp: self._close_app, LaunchFailedOp: self._launch_failed,
        }

    # ------------------------------------------------------------ public
    def feed(self, lines_or_path, progress=None):
        """Replay a path ('-' = stdin, ``.gz`` read through gzip), bytes, a file, or
        an iterable of lines (str/bytes JSON, dicts or op Structs).

        ``progress(bytes_read, total_bytes)`` is called after each block of a file.

        The cyclic garbage collector is paused while the replay runs: a replay makes
        millions of small acyclic objects (ops, decisions), and collections triggered
        by them cost as much as the decoding itself. It is restored afterwards."""
        source = _Source(lines_or_path)
        started = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        consumed = 0
        try:
            for first, ops, blanks in source.blocks(self._decoder):
                self.ops += len(ops) - blanks
                self._process(self.lines + first, ops)
                consumed = first + len(ops) - 1
                if progress is not None:
                    progress(source.position(), source.size)
            self._write()
        finally:
            self.lines += consumed
            if gc_was_enabled:
                gc.enable()
            self.seconds += time.perf_counter() - started
            source.close()
        return self

    def result(self) -> ReplayResult:
        return ReplayResult(
            scheduler=self.scheduler, ops=self.ops, launches=self.launches, outcomes=self.outcomes,
            errors=self.errors, decisions=self.decisions, seconds=self.seconds,
        )

    @property
    def outcomes(self) -> dict:
        return {_tally_key(k): n for k, n in enumerate(self._tally) if n}

    @property
    def launches(self) -> int:
        return sum(self._tally)

    def session_id(self, name):
        """The engine session id that a launch id names (None if rejected)."""
        return self.names[name]

    # ------------------------------------------------------------ loop
    def _process(self, first, ops):
        """Apply one block of ops (``ops[k]`` is line ``first + k``).

        The hot ops (launch, logon_done, logoff, disconnect: two thirds of a broker
        day) are applied inline, with what they use bound to locals and the time of
        the last line applied kept in a local (``self.last_t`` is written back before
        any call that reads it). Inline, the replay makes its own checks (time order,
        fresh launch id, known session) and leaves the rest to the engine (a time
        that is not finite, an unknown app...). Any other op, and a hot op that
        fails, goes through :meth:`_one`, which reports the error (a failed operation
        changed nothing, so trying it twice is safe)."""
        s = self.scheduler
        names, creator, tally = self.names, self.creator, self._tally
        batch = self.batch
        one = self._one
        # with explanations, launches go through _launch (it attaches them)
        launch = None if self.explain else s.launch
        session_call = {LogonDoneOp: s.logon_complete, LogoffOp: s.logoff, DisconnectOp: s.disconnect}.get
        keep = self.keep
        keep_decision = self.decisions.append
        pending = self._pending_out
        emit = pending.append if self._out is not None else None
        outcomes, reasons = _OUTCOMES, _REASONS
        n = len(ops)
        i = 0
        scanned = 0  # ops before this index were found to be in a run too short to batch
        last = self.last_t
        while i < n:
            op = ops[i]
            cls = op.__class__
            if cls is LaunchOp:
                if batch and i >= scanned:
                    j = i + 1
                    while j < n and ops[j].__class__ is LaunchOp:
                        j += 1
                    if j - i >= _MIN_LAUNCH_RUN:
                        self.last_t = last
                        i = self._launch_run(first, ops, i, min(j, i + _MAX_RUN))
                        last = self.last_t
                        continue
                    scanned = j  # a short run: its launches go one by one
                t = op.t
                rid = op.id
                if launch is not None and last <= t and rid not in names:
                    try:
                        d = launch(op.user, op.app, op.location, op.endpoint, op.external, t)
                    except Exception:
                        pass
                    else:  # the decision line, as _launch makes it
                        oc = d.outcome_code
                        if oc == 3:
                            names[rid] = None
                            rc = d.reason_code
                            tally[48 + rc] += 1
                            rec = LaunchDecision(t, rid, "rejected", None, None, None, reasons[rc], None)
                        else:
                            sid = d.session_id
                            names[rid] = sid
                            tally[oc << 4] += 1
                            if oc == 0:
                                creator[sid] = rid
                                sname = rid
                            else:
                                sname = creator.setdefault(sid, rid)
                            rec = LaunchDecision(t, rid, outcomes[oc], d.server, d.zone, sname, None,
                                                 d.load_index)
                        if keep:
                            keep_decision(rec)
                        if emit is not None:
                            emit(rec)
                            if len(pending) >= _FLUSH:
                                self._write(False)
                        last = t
                        i += 1
                        continue
            else:
                call = session_call(cls)
                if call is not None:
                    t = op.t
                    name = op.session
                    sid = names.get(name)
                    if sid is not None and last <= t:
                        try:
                            call(sid, t)
                            last = t
                            i += 1
                            continue
                        except Exception:
                            pass
                elif batch and i >= scanned and (cls is TelemetryOp or cls is UserOp):
                    self.last_t = last
                    if cls is TelemetryOp:
                        end, scanned = self._telemetry_run(first, ops, i)
                    else:
                        end, scanned = self._user_run(first, ops, i)
                    last = self.last_t
                    if end > i:  # the run was applied (or replayed line by line)
                        i = end
                        continue
            self.last_t = last
            one(first + i, op)
            last = self.last_t
            i += 1
        self.last_t = last
        if len(self._pending_out) >= _FLUSH:
            self._write(False)

    def _one(self, lineno, op):
        """Apply one op; a failure becomes an error line and changes nothing."""
        cls = op.__class__
        if cls is _Blank:
            return
        t = op.t
        try:
            if cls is _BadLine:
                raise op.error
            if not (self.last_t <= t < _INF):
                if t != t or t in (_INF, -_INF):
                    raise InvalidArgument("t", t, "must be a finite number of seconds")
                raise TimeWentBackwards("t", t, f"earlier than the previous line (t={self.last_t})")
            self._handlers[cls](op)
        except Exception as e:  # every failure is reported on its line; the replay goes on
            self._error(lineno, t, e)
        else:
            self.last_t = t

    def _error(self, lineno, t, exc):
        rec = LineError(t, lineno, type(exc).__name__, str(exc))
        self.errors.append(rec)
        if self._out is not None:
            self._pending_out.append(rec)

    def _write(self, flush=True):
        """Encode the pending output records; write the encoded output if ``flush``
        or once there is ``_WRITE`` bytes of it."""
        out = self._out
        if out is None:
            return
        if self._pending_out:
            data = self._encoder.encode_lines(self._pending_out)
            self._pending_out.clear()
            self._encoded.append(data)
            self._encoded_size += len(data)
        if self._encoded and (flush or self._encoded_size >= _WRITE):
            data = b"".join(self._encoded)
            self._encoded.clear()
            self._encoded_size = 0
            out.write(data.decode("utf-8") if self._text_out else data)

    # ------------------------------------------------------------ batches
    def _valid_prefix(self, ops, i, j, check_ids):
        """End of the longest run ``ops[i:j]`` that passes the replay's own checks
        (time order, fresh launch ids); the ids of that run are taken in ``names``."""
        last = self.last_t
        if not check_ids:
            # the common case, a run in time order, checked at C speed
            ts = [o.t for o in ops[i:j]]
            if last <= ts[0] and ts[-1] < _INF and all(map(le, ts, islice(ts, 1, None))):
                return j
        names = self.names
        k = i
        while k < j:
            o = ops[k]
            t = o.t
            if not (last <= t < _INF):
                break
            if check_ids:
                if o.id in names:
                    break
                names[o.id] = _PENDING
            last = t
            k += 1
        return k

    def _launch_run(self, first, ops, i, j):
        """Place launches ``ops[i:j]`` with one ``launch_many``; returns where to go on."""
        k = self._valid_prefix(ops, i, j, True)
        run = ops[i:k]
        b = None
        if len(run) >= _MIN_LAUNCH_RUN:
            try:
                b = self.scheduler.launch_many(
                    [o.user for o in run], [o.app for o in run], [o.location for o in run],
                    [o.endpoint for o in run], [o.external for o in run], now=[o.t for o in run],
                )
            except Exception:  # nothing was applied: the run goes line by line
                b = None
        if b is None:
            names = self.names
            for o in run:
                del names[o.id]
            end = max(k, i + 1)
            for m in range(i, end):
                self._one(first + m, ops[m])
            return end
        names, creator, tally = self.names, self.creator, self._tally
        server_names, zone_names = b.names[0], b.names[1]  # the scheduler's (append-only) name lists
        keep, out = self.keep, self._out is not None
        pending, decisions = self._pending_out, self.decisions
        for o, oc, rc, sv, zn, sid, li in zip(run, b.outcome.tolist(), b.reason.tolist(),
                                             b.server.tolist(), b.zone.tolist(),
                                             b.session.tolist(), b.load_index.tolist()):
            rid = o.id
            if oc == 3:
                names[rid] = None
                tally[48 + rc] += 1
                rec = LaunchDecision(o.t, rid, "rejected", None, None, None, _REASONS[rc], None)
            else:
                names[rid] = sid
                tally[oc << 4] += 1
                if oc == 0:
                    creator[sid] = rid
                    sname = rid
                else:
                    sname = creator.setdefault(sid, rid)
                rec = LaunchDecision(o.t, rid, _OUTCOMES[oc], server_names[sv], zone_names[zn], sname, None, li)
            if keep:
                decisions.append(rec)
            if out:
                pending.append(rec)
        self.last_t = run[-1].t
        return k

    def _telemetry_run(self, first, ops, i):
        """Apply the run of telemetry lines from ``ops[i]`` that report the same
        fields with one ``telemetry_many`` at the run's last ``t``.

        Returns (where to go on, end of the run): where to go on is ``i`` when the
        run is too short to batch (its lines then go one by one)."""
        n = min(len(ops), i + _MAX_RUN)
        j = i + 1
        while j < n and ops[j].__class__ is TelemetryOp:
            j += 1
        run = ops[i:j]
        # (list comprehensions: faster than map(attrgetter) on Structs)
        columns = ([o.cpu for o in run], [o.mem for o in run], [o.disk_queue for o in run],
                   [o.custom for o in run])
        # the run ends where a field goes from reported (not None) to not, or back
        end = len(run)
        for col in columns:
            if col[0] is None:
                if col.count(None) != len(col):
                    end = min(end, next(k for k, v in enumerate(col) if v is not None))
            elif None in col:
                end = min(end, col.index(None))
        if end < _MIN_TELEMETRY_RUN:
            return i, i + end
        k = self._valid_prefix(ops, i, i + end, False) - i
        if k >= _MIN_TELEMETRY_RUN:
            cpu, mem, disk_queue, custom = (None if col[0] is None else col[:k] for col in columns)
            try:
                self.scheduler.telemetry_many(
                    [o.server for o in run[:k]], cpu=cpu, mem=mem, disk_queue=disk_queue,
                    custom=custom, now=run[k - 1].t,
                )
                self.last_t = run[k - 1].t
                return i + k, i + k
            except Exception:  # nothing was applied: the run goes line by line
                pass
        end = i + max(k, 1)
        for m in range(i, end):
            self._one(first + m, ops[m])
        return end, end

    def _user_run(self, first, ops, i):
        """Add the users of the run of user lines from ``ops[i]`` (a directory) with
        one ``add_users``. Returns (where to go on, end of the run): where to go on
        is ``i`` when the run is too short to batch."""
        n = min(len(ops), i + _MAX_RUN)
        j = i + 1
        while j < n and ops[j].__class__ is UserOp:
            j += 1
        if j - i < _MIN_USER_RUN:
            return i, j
        k = self._valid_prefix(ops, i, j, False)
        run = ops[i:k]
        if len(run) >= _MIN_USER_RUN:
            try:
                self.scheduler.add_users(
                    [o.id for o in run],
                    home_zones=[None if o.home_zone is UNSET else o.home_zone for o in run],
                    apps=[() if o.apps is UNSET else o.apps for o in run],
                )
                self.last_t = run[-1].t
                return k, k
            except Exception:  # nothing was applied: the run goes line by line
                pass
        end = max(k, i + 1)
        for m in range(i, end):
            self._one(first + m, ops[m])
        return end, end

    # ------------------------------------------------------------ handlers
    def _settings(self, op):
        self.scheduler.settings(**spec_kwargs(op, skip=("t",)))

    def _licences(self, op):
        self.scheduler.set_licences(op.cap)

    def _pool(self, op):
        self.scheduler.add_pool(**spec_kwargs(op, skip=("t",)))

    def _app(self, op):
        self.scheduler.add_app(**spec_kwargs(op, skip=("t",)))

    def _user(self, op):
        self.scheduler.add_user(**spec_kwargs(op, skip=("t",)))

    def _server(self, op):
        self.scheduler.add_server(**spec_kwargs(op, skip=("t",)), now=op.t)

    def _remove_server(self, op):
        self.scheduler.remove_server(op.server, op.force, now=op.t)

    def _power(self, op):
        self.scheduler.set_power(op.server, op.state, now=op.t)

    def _register(self, op):
        self.scheduler.set_registered(op.server, op.registered, now=op.t)

    def _mode(self, op):
        self.scheduler.set_mode(op.server, op.mode, now=op.t)

    def _telemetry(self, op):
        self.scheduler.telemetry(op.server, op.cpu, op.mem, op.disk_queue, op.custom, now=op.t)

    def _launch(self, op):
        rid = op.id
        if rid in self.names:
            raise DuplicateName("id", rid, "an earlier launch of the trace has this id")
        d = self.scheduler.launch(op.user, op.app, op.location, op.endpoint, op.external, op.t,
                                  self.explain)
        oc = d.outcome_code
        if oc == 3:
            self.names[rid] = None
            rc = d.reason_code
            self._tally[48 + rc] += 1
            rec = LaunchDecision(op.t, rid, "rejected", None, None, None, _REASONS[rc], None)
        else:
            sid = d.session_id
            self.names[rid] = sid
            self._tally[oc << 4] += 1
            if oc == 0:
                self.creator[sid] = rid
                sname = rid
            else:
                sname = self.creator.setdefault(sid, rid)
            rec = LaunchDecision(op.t, rid, _OUTCOMES[oc], d.server, d.zone, sname, None, d.load_index)
        if d.explanation is not None:
            rec.explanation = d.explanation.to_dict()
        if self.keep:
            self.decisions.append(rec)
        if self._out is not None:
            self._pending_out.append(rec)

    def _session_op(self, method, op, *args):
        name = op.session
        sid = self.names.get(name, _Blank)
        if sid is _Blank:
            raise UnknownSession("session", name, "no launch of the trace has this id")
        if sid is None:
            raise UnknownSession("session", name, "that launch was rejected: it names no session")
        try:
            method(sid, *args, op.t)
        except UsherError as e:
            if e.field == "session" and e.value == sid:  # name the session as the trace does
                raise type(e)("session", name, e.detail) from None
            raise

    def _logon_done(self, op):
        self._session_op(self.scheduler.logon_complete, op)

    def _disconnect(self, op):
        self._session_op(self.scheduler.disconnect, op)

    def _logoff(self, op):
        self._session_op(self.scheduler.logoff, op)

    def _close_app(self, op):
        self._session_op(self.scheduler.close_app, op, op.app)

    def _launch_failed(self, op):
        self._session_op(self.scheduler.launch_failed, op)


def replay(lines_or_path, scheduler=None, out=None, explain=False, keep=None, batch=True,
           progress=None) -> ReplayResult:
    """Replay a trace against ``scheduler`` (a new ``usher.Scheduler()`` if None).

    Args:
        lines_or_path: a path (``.jsonl`` or ``.jsonl.gz``; ``"-"`` = stdin), bytes,
            a binary or text file, or an iterable of lines (JSON text, dicts or op Structs).
        scheduler: the scheduler to drive; it is changed in place.
        out: where to write the decision and error lines: a path (``.gz`` compressed),
            a binary or text file, or None.
        explain: attach the explanation to each decision.
        keep: keep the decisions in the result (default: when ``out`` is None).
        batch: batch runs of launches/telemetry/users (same decisions; False for debugging).
        progress: ``progress(bytes_read, total_bytes_or_None)`` after each block.

    Returns:
        :class:`ReplayResult`. A line that fails is reported in ``errors`` (and on
        ``out``) and the replay goes on; nothing is raised for trace content.
    """
    if keep is None:
        keep = out is None
    close = None
    if isinstance(out, (str, os.PathLike)):
        path = os.fspath(out)
        close = out = gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb")
    try:
        r = Replayer(scheduler, out=out, explain=explain, keep=keep, batch=batch)
        r.feed(lines_or_path, progress=progress)
    finally:
        if close is not None:
            close.close()
    return r.result()
