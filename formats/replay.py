"""Replay of broker traces: ``usher replay`` and :func:`replay`.

A trace (``usher.formats.trace``, docs/TRACE_FORMAT.md) is applied line by line to a
scheduler through ``usher.formats.dispatch``. Every launch gives one decision line; a
line that cannot be applied gives one error line and changes nothing.

Design: the replay is a loop over the public API, so parsing and dispatch are kept
small next to the engine's own cost:

- *decode in bulk*: ``TraceSource`` decodes blocks of lines at once into op Structs.
- *batch where the semantics allow*: a long run of consecutive launches goes through
  ``Scheduler.launch_many`` with per-row ``now`` (it gives exactly the decisions of the
  same launches one by one), a run of consecutive telemetry lines reporting the same
  fields goes through ``telemetry_many`` (no operation can observe the server state
  between them, and the clock ends at the run's last ``t``), a run of ``user`` lines
  through ``add_users``. The batch calls check every row before applying any; if one
  raises, nothing was applied and the run is replayed line by line, which reports the
  bad line exactly.
- *runs of session lines in one compiled call*: from a logon_done, logoff, disconnect
  or launch_failed line, ``Scheduler.session_run`` gathers the run of such lines up
  to the first that names no session (a rejected or unknown launch id) or goes back in
  time, and applies it with the all-or-nothing kernel of ``session_ops_many`` (the
  same as the lines one by one); a run that would fail is replayed line by line, and a
  line left out of a run goes the one-by-one way, so every error line is the same.
- *the hot ops inline*: launch, logon_done, logoff, disconnect and launch_failed (two
  thirds of a broker day) are applied in the loop itself, with their own checks (time
  order, fresh launch id, known session) and the methods of
  ``dispatch.SESSION_METHODS``; any other op, and a hot op that fails, goes through
  :func:`usher.formats.dispatch.apply_op` (a failed operation changed nothing, so
  trying it twice is safe). Every decision line, inline, batched or explained, is made
  by one object (``usher.formats._replayloop.DecisionMaker``).
- *the loop compiled*: the loop over a block is ``usher.formats._replayloop.process``,
  in Cython (op classes compared by pointer, fields read at their slots, a telemetry
  run's columns filled as float64 arrays, a fresh launch id found and taken in
  ``names`` by one probe, a launch's decision written by the engine into a C row and
  its line made from the row, a session run given to the engine as C arrays, a
  telemetry run's names and columns given to the engine's C entry, which looks the
  servers up and calls the kernel under one lock with ``telemetry_many``'s rules). The
  loop is written once here; its plain-Python reference
  (tests/replay_reference.py) is checked against it on random traces, with the
  compiled loop's cache of session names at its size and tiny.
- *encode in bulk*: decision and error lines are encoded a few dozen at a time with
  ``Encoder.encode_lines`` (while they are still in the CPU caches) and written in
  chunks of a megabyte.

Session names: a session is named by the id of every launch that placed, reconnected
or shared into it; a decision reports the session by the id of the launch that
created it (or, for a session that existed before the replay, the first launch of
the replay that joined it).
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import IO, TYPE_CHECKING, Any
from operator import le

import msgspec
from msgspec import Struct

from usher.core.codes import Outcome
from usher.errors import DuplicateName, InvalidArgument, TimeWentBackwards, UsherError
from usher.formats import dispatch
from usher.formats._replayloop import NAME_CACHE_SLOTS, DecisionMaker
from usher.formats._replayloop import process as _process_compiled
from usher.formats.trace import (
    BLANK,
    BLOCK_BYTES,
    OPS,
    OUTCOME_NAMES,
    REASON_NAMES,
    BadLine,
    LaunchDecision,
    LaunchOp,
    LineError,
    Op,
    TelemetryOp,
    TraceError,
    TraceFileError,
    TraceSource,
    UserOp,
)

if TYPE_CHECKING:
    from usher.scheduler import Scheduler

#: what ``replay`` and ``Replayer.feed`` read: a path, bytes, a file or an iterable of lines
TraceInput = str | os.PathLike[str] | bytes | IO[Any] | Iterable[Any]

__all__ = [
    "replay",
    "Replayer",
    "ReplayResult",
    "LaunchDecision",
    "LineError",
    "TraceError",
    "TraceFileError",
    "OPS",
    "Op",
    "BLOCK_BYTES",
]

_INF = math.inf
_FLUSH = 64  # output lines encoded at once (few: encoded while still in the CPU caches)
_WRITE = 1 << 20  # bytes of encoded output written at once
_MAX_RUN = 8192  # longest launch / telemetry run given to one batch call
# Shorter runs go one by one: a batch call has a fixed cost per call and a launch_many
# row costs more than a launch() call (the row's general-path checks), so a launch batch
# only pays on long storms; a telemetry batch pays from a few rows
# (benchmarks/bench_replay.py measures both).
_MIN_LAUNCH_RUN = 1024
_MIN_TELEMETRY_RUN = 16
_MIN_USER_RUN = 16  # a user directory: add_users is all or nothing, so a bad line falls back

_REJECTED = int(Outcome.REJECTED)
_REASON_BITS = 4  # the outcome tally: (outcome << 4) + reason -> count
_REASON_SLOTS = 1 << _REASON_BITS
_PENDING = object()  # a launch id taken by a launch of the batch being placed
# exceptions that mean "a value the scheduler cannot take", reported as InvalidArgument
_VALUE_ERRORS = (OverflowError, ValueError, TypeError)
_MESSAGE_CHARS = 1000  # an error line's message is cut to this (a name can be a megabyte long)


def _tally_key(code: int) -> str:
    o, r = divmod(code, _REASON_SLOTS)
    return OUTCOME_NAMES[o] if o != _REJECTED else f"{OUTCOME_NAMES[o]}:{REASON_NAMES[r]}"


def _error_class(exc: BaseException) -> tuple[str, str]:
    """(error class, message) of an error line: an UsherError as itself; an error a
    scheduler let through for a value it cannot take (an integer beyond 64 bits...)
    as InvalidArgument. A message is cut to ``_MESSAGE_CHARS`` characters."""
    if isinstance(exc, UsherError) or not isinstance(exc, _VALUE_ERRORS):
        error, message = type(exc).__name__, str(exc)
    else:
        error, message = "InvalidArgument", f"line: a value the scheduler cannot take ({type(exc).__name__}: {exc})"
    if len(message) > _MESSAGE_CHARS:
        message = message[:_MESSAGE_CHARS - 3] + "..."
    return error, message


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


class _LineWriter:
    """Decision and error lines to a binary or text file: encoded ``_FLUSH`` at a
    time, written ``_WRITE`` bytes at a time."""

    def __init__(self, out):
        self.out = out
        self.text = isinstance(out, io.TextIOBase)
        self.pending: list = []  # lines not yet encoded
        self._encoder = msgspec.json.Encoder()
        self._encoded: list = []  # encoded lines not yet written
        self._encoded_size = 0

    def write(self, flush=True):
        """Encode the pending lines; write the encoded output if ``flush`` or once
        there is ``_WRITE`` bytes of it."""
        if self.pending:
            try:
                data = self._encoder.encode_lines(self.pending)
            except UnicodeEncodeError:  # a lone surrogate in a name given in-process
                data = b"".join(self._encode_escaped(rec) for rec in self.pending)
            self.pending.clear()
            self._encoded.append(data)
            self._encoded_size += len(data)
        if self._encoded and (flush or self._encoded_size >= _WRITE):
            data = b"".join(self._encoded)
            self._encoded.clear()
            self._encoded_size = 0
            self.out.write(data.decode("utf-8") if self.text else data)

    def _encode_escaped(self, rec) -> bytes:
        try:
            return self._encoder.encode(rec) + b"\n"
        except UnicodeEncodeError:
            return json.dumps(msgspec.to_builtins(rec), separators=(",", ":")).encode() + b"\n"


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
        name_cache_slots: the slots of the compiled loop's cache of session names
            (a power of two; a class attribute that tests set tiny, so that launch
            ids share slots).
        names: launch id -> engine session id (None when the launch was rejected).
        creator: engine session id -> id of the launch that created the session.
        last_t: ``t`` of the last line applied.
        ops, lines: lines replayed (blank lines not counted) / read.
    """

    name_cache_slots = NAME_CACHE_SLOTS

    def __init__(self, scheduler: Scheduler | None = None, out: IO[Any] | None = None, explain: bool = False,
                 keep: bool = True, batch: bool = True) -> None:
        if scheduler is None:
            from usher.scheduler import Scheduler

            scheduler = Scheduler()
        self.scheduler = scheduler
        self.explain = bool(explain)
        self.keep = keep
        self.batch = batch and not self.explain
        self._writer = None if out is None else _LineWriter(out)
        self._decoder = msgspec.json.Decoder(Op)
        self.names: dict = {}
        self.creator: dict = {}
        self.decisions: list = []
        self.errors: list = []
        self.ops = 0
        self.lines = 0  # lines read so far (line numbers go on from one feed to the next)
        self.seconds = 0.0
        now = scheduler.now
        self.last_t = -_INF if now is None else now
        self._decide = self._decision_maker()
        self._session_calls = None  # (scheduler, op class -> its bound session method)

    # ------------------------------------------------------------ public
    def feed(self, lines_or_path: TraceInput, progress: Callable[[int, int], None] | None = None) -> Replayer:
        """Replay a path ('-' = stdin, ``.gz`` read through gzip), bytes, a file, or
        an iterable of lines (str/bytes JSON, dicts or op Structs).

        ``progress(bytes_read, total_bytes)`` is called after each block of a file.
        Raises :class:`TraceFileError` when the file cannot be read to its end (the
        lines read before are replayed and their output written).

        The cyclic garbage collector is paused while the replay runs: a replay makes
        millions of small acyclic objects (ops, decisions), and collections triggered
        by them cost as much as the decoding itself. It is restored afterwards."""
        source = TraceSource(lines_or_path)
        started = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        consumed = 0
        try:
            try:
                for first, ops, blanks in source.blocks(self._decoder):
                    self.ops += len(ops) - blanks
                    self._process(self.lines + first, ops)
                    consumed = first + len(ops) - 1
                    if progress is not None:
                        progress(source.position(), source.size)
            finally:
                if self._writer is not None:
                    self._writer.write()
        finally:
            self.lines += consumed
            if gc_was_enabled:
                gc.enable()
            self.seconds += time.perf_counter() - started
            source.close()
        return self

    def apply(self, ops: list, blanks: int = 0) -> Replayer:
        """Replay ops already decoded: a list of op Structs (a line that could not be
        decoded as its ``BadLine``, a blank one as ``BLANK``: ``blanks`` of them),
        numbered on from the lines read so far. The same as :meth:`feed` of the same
        lines, without a source to set up and read (a service's request: an array of
        ops, or one)."""
        started = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            try:
                self.ops += len(ops) - blanks
                self._process(self.lines + 1, ops)
            finally:
                if self._writer is not None:
                    self._writer.write()
        finally:
            self.lines += len(ops)
            if gc_was_enabled:
                gc.enable()
            self.seconds += time.perf_counter() - started
        return self

    def result(self) -> ReplayResult:
        return ReplayResult(
            scheduler=self.scheduler, ops=self.ops, launches=self.launches, outcomes=self.outcomes,
            errors=self.errors, decisions=self.decisions, seconds=self.seconds,
        )

    @property
    def outcomes(self) -> dict:
        return {_tally_key(k): n for k, n in enumerate(self._decide.counts()) if n}

    @property
    def launches(self) -> int:
        return sum(self._decide.counts())

    def session_id(self, name):
        """The engine session id that a launch id names (None if rejected)."""
        return self.names[name]

    # ------------------------------------------------------------ decisions
    def _decision_maker(self) -> DecisionMaker:
        """``decide(t, rid, oc, rc, sid, server, zone, load_index)``: make, count and
        emit the decision line of launch ``rid`` at ``t`` (outcome code ``oc``, reason
        code ``rc``, engine session ``sid``) and take ``rid`` as a name of its session;
        returns the line. The one place a decision line is made."""
        return DecisionMaker(self.names, self.creator, self.decisions if self.keep else None,
                             self._writer.pending if self._writer is not None else None,
                             self.name_cache_slots)

    def _launch(self, op):
        """A launch line, one by one (with the explanation when asked)."""
        rid = op.id
        if rid in self.names:
            raise DuplicateName("id", rid, "an earlier launch of the trace has this id")
        d = dispatch.launch(self.scheduler, op, self.explain)
        rec = self._decide(op.t, rid, d.outcome_code, d.reason_code, d.session_id, d.server, d.zone,
                           d.load_index)
        if d.explanation is not None:  # (the line is encoded later, at the next flush)
            rec.explanation = d.explanation.to_dict()

    # ------------------------------------------------------------ loop
    def _process(self, first, ops):
        """Apply one block of ops (``ops[k]`` is line ``first + k``) with the compiled
        loop (``usher.formats._replayloop.process``: the hot ops inline, the replay's
        own checks — time order, fresh launch id, known session — made there, the rest
        left to the engine; a failure goes to :meth:`_one`)."""
        _process_compiled(self, first, ops if ops.__class__ is list else list(ops),
                          _MIN_LAUNCH_RUN, _MAX_RUN, _FLUSH, _MIN_TELEMETRY_RUN)

    def _one(self, lineno, op):
        """Apply one op; a failure becomes an error line and changes nothing."""
        cls = op.__class__
        if op is BLANK:
            return
        t = op.t
        try:
            if cls is BadLine:
                raise op.error
            if not (self.last_t <= t < _INF):
                if t != t or t in (_INF, -_INF):
                    raise InvalidArgument("t", t, "must be a finite number of seconds")
                raise TimeWentBackwards("t", t, f"earlier than the previous line (t={self.last_t})")
            if cls is LaunchOp:
                self._launch(op)
            else:
                dispatch.apply_op(self.scheduler, op, self.names)
        except Exception as e:  # every failure is reported on its line; the replay goes on
            self._error(lineno, t, e)
        else:
            self.last_t = t

    def _error(self, lineno, t, exc):
        error, message = _error_class(exc)
        rec = LineError(t, lineno, error, message)
        self.errors.append(rec)
        if self._writer is not None:
            self._writer.pending.append(rec)

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

    def _by_line(self, first, ops, i, end):
        """Apply ``ops[i:end]`` one by one (a run that could not be batched)."""
        for m in range(i, end):
            self._one(first + m, ops[m])
        return end

    def _launch_run(self, first, ops, i, j):
        """Place launches ``ops[i:j]`` with one ``launch_many``; returns where to go on."""
        k = self._valid_prefix(ops, i, j, True)
        run = ops[i:k]
        b = None
        if len(run) >= _MIN_LAUNCH_RUN:
            try:
                b = dispatch.launch_many(self.scheduler, run)
            except Exception:  # nothing was applied: the run goes line by line
                b = None
        if b is None:
            names = self.names
            for o in run:
                del names[o.id]
            return self._by_line(first, ops, i, max(k, i + 1))
        decide = self._decide
        server_names, zone_names = b.names[0], b.names[1]  # the scheduler's (append-only) name lists
        for o, oc, rc, sv, zn, sid, li in zip(run, b.outcome.tolist(), b.reason.tolist(),
                                             b.server.tolist(), b.zone.tolist(),
                                             b.session.tolist(), b.load_index.tolist()):
            if oc == _REJECTED:
                decide(o.t, o.id, oc, rc, None, None, None, None)
            else:
                decide(o.t, o.id, oc, rc, sid, server_names[sv], zone_names[zn], li)
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
            try:
                dispatch.telemetry_many(self.scheduler, run[:k],
                                        *(None if col[0] is None else col[:k] for col in columns))
                self.last_t = run[k - 1].t
                return i + k, i + k
            except Exception:  # nothing was applied: the run goes line by line
                pass
        end = self._by_line(first, ops, i, i + max(k, 1))
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
                dispatch.add_users(self.scheduler, run)
                self.last_t = run[-1].t
                return k, k
            except Exception:  # nothing was applied: the run goes line by line
                pass
        end = self._by_line(first, ops, i, max(k, i + 1))
        return end, end


def replay(lines_or_path: TraceInput, scheduler: Scheduler | None = None, out: IO[Any] | None = None,
           explain: bool = False, keep: bool | None = None, batch: bool = True,
           progress: Callable[[int, int], None] | None = None) -> ReplayResult:
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

    Raises:
        TraceFileError: the trace file cannot be opened or read to its end.
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
