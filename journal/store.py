"""A journalled scheduler: apply operations, journal them, snapshot, recover.

Design: the state a broker relies on is the scheduler *and* the names of its
sessions (a trace names a session by the id of the launch that created it), which is
exactly what a :class:`usher.formats.replay.Replayer` holds. :class:`Journal` applies
operations through a Replayer, so a request gives the decision and error lines that
``usher replay`` writes for the same lines, and it appends every applied operation
(with ``t`` filled in) and its decision to the journal (``records``): the journal is a
trace, and recovery is a replay of it through the same Replayer. An operation that
fails changes nothing and is not journalled.

A directory holds::

    snapshot-<seq>.pickle   the whole state after <seq> records (scheduler, session names, clock)
    journal-<seq>.log       records <seq>, <seq>+1, ... (records.py)

A snapshot is taken at a segment boundary: the journal is flushed, the snapshot written
atomically, a new segment started, and the older files removed. Recovery reads the
latest snapshot (or starts from an empty ``Scheduler()`` when there is none) and
replays the segments from its ``seq`` on; a torn last record is dropped (and cut off
the file, so that new records follow good ones).
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import re
import signal
import threading
import time

import msgspec
from msgspec import UNSET

from usher import validate
from usher.formats.replay import Replayer
from usher.formats.trace import BLANK, OP_CLASSES, OP_DECODER, BadLine, LaunchOp, decode_item
from usher.journal import records as rec
from usher.journal import snapshot as snap
from usher.journal.records import JournalError
from usher.journal.writer import JournalWriter

__all__ = ["Journal", "open", "in_memory", "recover", "has_state", "SNAPSHOT_FORMAT"]

SNAPSHOT_FORMAT = 1
SNAPSHOT_NICE = 10  # added to the niceness of the child that writes an automatic snapshot
log = logging.getLogger(__name__)
_FILE = re.compile(r"^(snapshot|journal)-(\d{16})\.(pickle|log)$")
_ENCODER = msgspec.json.Encoder()
_OP_SET = frozenset(OP_CLASSES)


def _files(directory):
    """({seq: snapshot path}, {seq: segment path}) of a directory."""
    snapshots, segments = {}, {}
    for name in os.listdir(directory):
        m = _FILE.match(name)
        if m:
            (snapshots if m.group(1) == "snapshot" else segments)[int(m.group(2))] = os.path.join(directory, name)
    return snapshots, segments


def _name(kind, seq):
    return f"{kind}-{seq:016d}.{'pickle' if kind == 'snapshot' else 'log'}"


def has_state(directory) -> bool:
    """Whether ``directory`` holds a snapshot or a journal segment."""
    if not os.path.isdir(directory):
        return False
    snapshots, segments = _files(directory)
    return bool(snapshots or segments)


class Recovered(msgspec.Struct):
    """What :func:`recover` found: the replayer holding the state, the number of
    records it holds, the last segment and where its good records end (None when
    there is no segment), and the records dropped as torn (0 or 1)."""

    replayer: "Replayer"
    seq: int
    segment: str | None
    good_bytes: int | None
    torn: int


def _replayer_of(state) -> Replayer:
    r = Replayer(state["scheduler"], keep=True)
    r.names.update(state["names"])
    r.creator.update(state["creator"])
    r.last_t = state["last_t"]
    return r


def recover(directory) -> Recovered:
    """The state a journal directory holds: the latest snapshot, then the journal
    records after it replayed. Changes no file. Raises JournalError for a damaged
    segment, a gap between segments, or a replayed decision that differs from the
    journalled one."""
    from usher.scheduler import Scheduler

    snapshots, segments = _files(directory)
    if snapshots:
        base = max(snapshots)
        state = snap.read(snapshots[base])
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT or state.get("seq") != base:
            raise JournalError("snapshot", snapshots[base], "is not an usher journal snapshot of this format")
        r = _replayer_of(state)
    else:
        base = 0
        r = Replayer(Scheduler(), keep=True)
    starts = sorted(s for s in segments if s >= base)
    seq, last_path, good, torn = base, None, None, 0
    for k, start in enumerate(starts):
        if start != seq:
            raise JournalError("journal", segments[start], f"starts at record {start}, expected {seq}")
        with builtins.open(segments[start], "rb") as f:
            data = f.read()
        is_last = k == len(starts) - 1
        records, good = rec.scan(data, segments[start], last=is_last)
        torn = int(is_last and good < len(data))
        _replay(r, records, segments[start])
        seq += len(records)
        last_path = segments[start]
    return Recovered(r, seq, last_path, good, torn)


def _replay(r: Replayer, records, path) -> None:
    if not records:
        return
    r.lines = 0
    r.feed([op for op, _ in records])
    if r.errors:
        e = r.errors[0]
        raise JournalError("journal", path, f"record {e.line} does not apply again: {e.error}: {e.message}")
    journalled = [d for _, d in records if d]
    if len(journalled) != len(r.decisions):
        raise JournalError("journal", path, "replay gives a different number of decisions")
    for k, (line, d) in enumerate(zip(journalled, r.decisions)):
        if line != _ENCODER.encode(d):
            raise JournalError("journal", path, f"decision {k + 1} differs on replay: {line!r}")
    r.decisions.clear()


def open(directory, scheduler=None, fsync="batch", snapshot_every=100_000, clock=time.time,
         on_flush=None, batch_seconds=0.005, batch_records=1000, background_snapshots=False,
         snapshot_share=None) -> "Journal":
    """Open (or create) a journal directory and recover its state.

    Args:
        directory: the directory (created if missing).
        scheduler: the initial state of a *new* directory (written as its first
            snapshot); None for an empty ``Scheduler()``. JournalError if the
            directory already holds state.
        fsync: ``"always"``, ``"batch"`` (default) or ``"off"`` (see writer.py).
        snapshot_every: records between automatic snapshots (None: only on demand).
        clock: the time (seconds) given to an operation without ``t``; never
            earlier than the last operation's.
        on_flush: ``on_flush(records, write_seconds, fsync_seconds)`` after each group commit.
        background_snapshots: write the automatic snapshots from a forked child process
            (POSIX), so that the operation that triggers one waits only for the fork
            (see :meth:`Journal._snapshot_in_child`); False: written in line.
        snapshot_share: the largest share of the time that automatic snapshots take
            (0 < share <= 1; None: no limit). After a snapshot that took ``D`` seconds
            the next automatic one waits until ``D * (1 / share - 1)`` seconds have
            passed since it ended; records keep counting, and it is taken at the first
            operation after that. Under a heavy load snapshots then come less often than
            every ``snapshot_every`` records (recovery replays more), never more often
            than the share allows.
    """
    if snapshot_share is not None:
        snapshot_share = validate.real("snapshot_share", snapshot_share, 0.0, 1.0, lo_open=True)
    os.makedirs(directory, exist_ok=True)
    if scheduler is not None and has_state(directory):
        raise JournalError("directory", os.fspath(directory), "already holds a journal: open it without a scheduler")
    found = recover(directory)
    if found.segment is not None and found.torn:
        with builtins.open(found.segment, "r+b") as f:
            f.truncate(found.good_bytes)
            f.flush()
            os.fsync(f.fileno())
    j = Journal(directory, found.replayer, found.seq, fsync, snapshot_every, clock, on_flush,
                batch_seconds, batch_records, segment=found.segment)
    j.background_snapshots = bool(background_snapshots) and hasattr(os, "fork")
    j.snapshot_share = snapshot_share
    j.torn_records = found.torn
    if scheduler is not None:
        j.replayer = Replayer(scheduler, keep=True)
        j.snapshot()
    return j


class Journal:
    """A scheduler whose applied operations are journalled (see the module's design).

    Attributes:
        replayer: the ``Replayer`` holding the state (``replayer.scheduler``, the
            session names ``replayer.names``).
        seq: records in the journal (snapshot included).
        torn_records: records dropped as torn when the directory was opened (0 or 1).
        last_snapshot: ``time.time()`` of the latest snapshot (None before the first).
    """

    def __init__(self, directory, replayer, seq, fsync, snapshot_every, clock, on_flush,
                 batch_seconds, batch_records, segment=None):
        self.directory = None if directory is None else os.fspath(directory)
        self.replayer = replayer
        self.seq = seq
        self.fsync = fsync
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.torn_records = 0
        self.last_snapshot = None
        # (ticket, the decision lines) of the latest submit whose every item gave a
        # launch decision, unexplained: its answer as replay writes it, encoded once
        self.answer_lines: tuple[int, bytes] | None = None
        self._since_snapshot = 0
        self.background_snapshots = False  # automatic snapshots from a forked child (``open``)
        self.snapshot_share: float | None = None  # the largest share of the time snapshots take (``open``)
        self._snapshot_seconds = 0.0  # how long the latest snapshot took
        self._snapshot_ended = -math.inf  # when it ended (``_monotonic``)
        self._monotonic = time.monotonic
        self._child: int | None = None  # the pid of the child writing a snapshot
        self._writer_args = dict(fsync=fsync, batch_seconds=batch_seconds, batch_records=batch_records,
                                 on_flush=on_flush)
        self._lock = threading.Lock()
        if directory is None:  # in memory: nothing is written
            self._writer = _NoWriter()
            return
        self._writer = JournalWriter(segment or os.path.join(self.directory, _name("journal", seq)),
                                     first=seq, **self._writer_args)

    def set_on_flush(self, on_flush) -> None:
        """Call ``on_flush(records, write_seconds, fsync_seconds)`` after each group
        commit from now on (metrics: ``usher.service.metrics.Metrics.on_flush``)."""
        self._writer_args["on_flush"] = on_flush
        self._writer.on_flush = on_flush

    @property
    def healthy(self) -> bool:
        """False once a journal write has failed (no decision is acknowledged after)."""
        return self._writer.error is None

    @property
    def scheduler(self):
        return self.replayer.scheduler

    def session_id(self, name):
        """The engine session id of the session a launch id names (KeyError: no such
        launch; None: that launch was rejected)."""
        return self.replayer.names[name]

    # ------------------------------------------------------------ apply
    def submit(self, items, explain=False):
        """Apply operations in order; journal the applied ones.

        Args:
            items: op Structs, or dicts in the trace format (``t`` optional: the
                clock's time, never earlier than the last operation's).
            explain: add each launch's explanation to its decision line.

        Returns:
            ``(ops, outputs, ticket)``: the op of each item (None when it could not be
            decoded), ``outputs[k]`` the ``LaunchDecision`` or ``LineError`` of item
            ``k`` (None for an operation applied without a decision line: line
            numbers count the items from 1), and the writer's ticket: the records are
            durable once ``wait(ticket)`` returns. When every item gave a launch
            decision (and ``explain`` is false), ``answer_lines`` is then ``(ticket,
            lines)``: the decision lines as one ``encode_lines`` bytes (the journal's
            own encoding of them), else None.
        """
        with self._lock:
            self.answer_lines = None
            r = self.replayer
            ops, fed, blanks = self._decode(items, r)
            r.lines = 0
            explained, r.explain, r.batch = r.explain, bool(explain), not explain
            try:
                r.apply(fed, blanks)
            finally:
                r.explain, r.batch = explained, not explained
            outputs, records, lines = _outputs_and_records(ops, r.errors, r.decisions, explain, blanks)
            r.errors.clear()
            r.decisions.clear()
            ticket = self._writer.append(records) if records else self._writer.durable
            self.answer_lines = None if lines is None else (ticket, lines)
            self.seq += len(records)
            self._since_snapshot += len(records)
            if self.snapshot_every is not None and self._since_snapshot >= self.snapshot_every \
                    and self._snapshot_due():
                if self.background_snapshots and self.directory is not None:
                    self._snapshot_in_child()
                else:
                    self._snapshot_locked()
        return ops, outputs, ticket

    def _snapshot_due(self) -> bool:
        """Whether an automatic snapshot may start now (``snapshot_share``)."""
        share = self.snapshot_share
        if share is None:
            return True
        return self._monotonic() >= self._snapshot_ended + self._snapshot_seconds * (1.0 / share - 1.0)

    def _decode(self, items, r):
        """``(ops, fed, blanks)`` of :meth:`submit`'s items: the op of each (None when
        it could not be decoded), what the replayer is given for each (the op, or the
        ``BadLine`` that reports it) and the number of blank lines. Op Structs (a
        typed body) are taken as they are: the trace format's decoder made them."""
        ops = items if items.__class__ is list else list(items)
        if all(map(_OP_SET.__contains__, map(type, ops))):
            return ops, ops, 0
        items, ops, fed, blanks = ops, [], [], 0
        now = None
        for item in items:
            if item.__class__ is dict and "t" not in item:
                if now is None:
                    now = max(self.clock(), r.last_t)
                item = {**item, "t": now}
            op = decode_item(OP_DECODER, item)
            fed.append(op)
            if op.__class__ is BadLine or op is BLANK:
                blanks += op is BLANK
                op = None
            ops.append(op)
        return ops, fed, blanks

    def now(self) -> float:
        """The time an operation without ``t`` gets now: the clock's, never earlier
        than the last operation's."""
        return max(self.clock(), self.replayer.last_t)

    def apply(self, items, explain=False):
        """:meth:`submit`, then wait until its records are durable; returns the outputs."""
        _, outputs, ticket = self.submit(items, explain)
        self.wait(ticket)
        return outputs

    def wait(self, ticket) -> None:
        self._writer.wait(ticket)

    def commit_now(self) -> None:
        """End the group-commit window now (``fsync="batch"``): no more records are coming soon."""
        self._writer.commit_now()

    async def wait_async(self, ticket) -> None:
        await self._writer.wait_async(ticket)

    # ------------------------------------------------------------ snapshots
    def snapshot(self) -> str:
        """Write a snapshot of the whole state now; returns its path."""
        if self.directory is None:
            raise JournalError("directory", None, "an in-memory journal takes no snapshot")
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> str:
        started = self._monotonic()
        r = self.replayer
        self._writer.close()
        state = dict(format=SNAPSHOT_FORMAT, seq=self.seq, scheduler=r.scheduler, names=r.names,
                     creator=r.creator, last_t=r.last_t if math.isfinite(r.last_t) else -math.inf)
        path = os.path.join(self.directory, _name("snapshot", self.seq))
        snap.write_atomic(path, state)
        segment = os.path.join(self.directory, _name("journal", self.seq))
        self._writer = JournalWriter(segment, first=self.seq, **self._writer_args)
        snap.fsync_directory(self.directory)
        snapshots, segments = _files(self.directory)
        for seq, old in [*snapshots.items(), *segments.items()]:
            if seq < self.seq:
                os.unlink(old)
        self._since_snapshot = 0
        self.last_snapshot = time.time()
        self._snapshot_ended = self._monotonic()
        self._snapshot_seconds = self._snapshot_ended - started
        return path

    def close(self, snapshot_timeout: float = 120.0) -> None:
        """Make every record durable, close the segment, and wait (at most
        ``snapshot_timeout`` seconds) for a snapshot being written by a child; a child
        still running then is killed (the previous snapshot and every segment after it
        are still there)."""
        with self._lock:
            self._writer.close()
        if not self.wait_snapshot(snapshot_timeout):
            child = self._child
            if child is not None:
                log.warning("the child writing a snapshot (pid %d) did not finish in %.0f s: killed", child,
                            snapshot_timeout)
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait_snapshot()

    def wait_snapshot(self, timeout: float | None = None) -> bool:
        """Wait until no snapshot is being written by a child process (at most
        ``timeout`` seconds); returns whether none is."""
        reaper = self._reaper
        if reaper is not None:
            reaper.join(timeout)
            return not reaper.is_alive()
        return True

    _reaper: threading.Thread | None = None

    def _snapshot_in_child(self) -> None:
        """The automatic snapshot, written by a forked child (lock held).

        Design: ``fork`` gives the child the state as it is between two operations
        (copy-on-write: the parent goes on at once). The parent starts the new segment
        at ``seq`` first, so that whatever happens to the child, the directory holds the
        previous snapshot and every segment after it (recovery replays them in order);
        the child writes ``snapshot-<seq>`` atomically and exits, and a reaper thread
        deletes the older files once the child reports success. The child runs no
        Python beyond the pickle and the file calls, and leaves with ``os._exit``, so
        locks held by the parent's other threads at the fork are never needed. While a
        child is writing, no other is started (the snapshot is taken at a later
        operation). The child runs at a lower priority (:data:`SNAPSHOT_NICE`): on
        a machine with few cores its pickle takes a core only when the serving
        process does not want it."""
        if self._child is not None:
            return
        started = self._monotonic()
        r = self.replayer
        self._writer.close()
        seq = self.seq
        self._writer = JournalWriter(os.path.join(self.directory, _name("journal", seq)), first=seq,
                                     **self._writer_args)
        snap.fsync_directory(self.directory)
        state = dict(format=SNAPSHOT_FORMAT, seq=seq, scheduler=r.scheduler, names=r.names,
                     creator=r.creator, last_t=r.last_t if math.isfinite(r.last_t) else -math.inf)
        path = os.path.join(self.directory, _name("snapshot", seq))
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.nice(SNAPSHOT_NICE)  # background work: the serving process goes first for a core
                snap.write_atomic(path, state)
                code = 0
            finally:
                os._exit(code)
        self._child = pid
        self._since_snapshot = 0
        self._reaper = threading.Thread(target=self._reap, args=(pid, seq, started), name="usher-snapshot",
                                        daemon=True)
        self._reaper.start()

    def _reap(self, pid, seq, started) -> None:
        """Wait for the child writing ``snapshot-<seq>`` (started at ``started``); on
        success drop the older files."""
        _, status = os.waitpid(pid, 0)
        self._snapshot_ended = self._monotonic()
        self._snapshot_seconds = self._snapshot_ended - started
        try:
            if os.waitstatus_to_exitcode(status) != 0:
                log.warning("the snapshot at record %d was not written (child exit status %d); "
                            "the journal keeps the previous snapshot and every segment after it",
                            seq, os.waitstatus_to_exitcode(status))
                return
            snapshots, segments = _files(self.directory)
            for old_seq, old in [*snapshots.items(), *segments.items()]:
                if old_seq < seq:
                    try:
                        os.unlink(old)
                    except FileNotFoundError:
                        pass
            self.last_snapshot = time.time()
        finally:
            self._child = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _outputs_and_records(ops, errors, decisions, explain, blanks):
    """``(outputs, records, answer)`` of a submit: ``outputs[k]`` the ``LaunchDecision``
    or ``LineError`` of ``ops[k]`` (None for an op applied without a line), the
    journal records of the applied ops (each with its decision line, made without
    the explanation), encoded in bulk, and the decision lines as one bytes when
    every op gave a launch decision and none was explained (else None)."""
    n = len(ops)
    if errors or blanks:
        outputs = [None] * n
        for e in errors:
            outputs[e.line - 1] = e
        applied = [op for op, out in zip(ops, outputs) if out is None and op is not None]
        if not applied:
            return outputs, [], None
    else:
        outputs = None
        applied = ops
    launched = decisions
    if explain:
        launched = [d if d.explanation is UNSET else msgspec.structs.replace(d, explanation=UNSET) for d in launched]
    op_text = _ENCODER.encode_lines(applied)
    if not decisions:  # no launch
        lines = [b""] * len(applied)
        if outputs is None:
            outputs = [None] * n
    else:
        encoded = _ENCODER.encode_lines(launched)
        if outputs is None and len(decisions) == n:  # an array of launches, all applied
            return list(decisions), rec.encode_texts(op_text, encoded), None if explain else encoded
        # decisions to the launches applied; b"" for an op without a decision
        if outputs is None:
            outputs = [None] * n
        at = [k for k, op in enumerate(ops) if outputs[k] is None and op.__class__ is LaunchOp]
        for k, d in zip(at, decisions):
            outputs[k] = d
        it = iter(encoded.split(b"\n"))
        lines = [next(it) if op.__class__ is LaunchOp else b"" for op in applied]
    return outputs, rec.encode_many(op_text.split(b"\n")[:-1], lines), None


def in_memory(scheduler=None, clock=time.time) -> Journal:
    """A :class:`Journal` that writes nothing: the same applying, naming and outputs,
    for a service run without ``--journal`` (its state dies with the process)."""
    from usher.scheduler import Scheduler

    r = Replayer(scheduler if scheduler is not None else Scheduler(), keep=True)
    return Journal(None, r, 0, "off", None, clock, None, 0.0, 1)


class _NoWriter:
    """The writer of an in-memory journal: every ticket is durable at once."""

    on_flush = None

    durable = 0
    error = None

    def append(self, records):
        return 0

    def wait(self, ticket, timeout=None):
        return None

    def commit_now(self):
        return None

    async def wait_async(self, ticket):
        return None

    def close(self):
        return None
