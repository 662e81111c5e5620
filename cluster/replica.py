"""A journal whose records live in PostgreSQL: the leader's writer, or a hot replica.

Design: :class:`ClusterJournal` is a ``usher.journal.Journal`` (the same applying,
naming and outputs through a ``Replayer``) whose writer is either a
:class:`~usher.cluster.writer.PgWriter` (the leader: fenced appends with group commit)
or :class:`_Refusing` (a standby: every append raises :class:`NotLeader`). A standby
applies the rows it reads (:meth:`ClusterJournal.apply_rows`) through its replayer and
checks each decision against the journalled one, so its state is the leader's at the
same position. Recovery (:func:`recover`) is the latest snapshot plus the rows after
it, replayed — the directory journal's recovery with the database as the directory.
"""

from __future__ import annotations

import logging
import math
import time

import msgspec

from usher.cluster import store
from usher.cluster.store import NotLeader, StoreError
from usher.formats.replay import Replayer
from usher.journal import Journal
from usher.journal.store import SNAPSHOT_FORMAT

__all__ = ["ClusterJournal", "recover", "replayer_of", "state_of_replayer", "state_digest"]

_ENCODER = msgspec.json.Encoder()
_CHUNK = 50_000
log = logging.getLogger("usher.cluster")


def replayer_of(state) -> Replayer:
    """The replayer of a snapshot's state (the directory journal's snapshot format)."""
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
        raise StoreError("usher_snapshot", None, "is not an usher journal snapshot of this format")
    r = Replayer(state["scheduler"], keep=True)
    r.names.update(state["names"])
    r.creator.update(state["creator"])
    r.last_t = state["last_t"]
    return r


def state_of_replayer(r: Replayer, seq: int) -> dict:
    """The snapshot of a replayer's state after ``seq`` records."""
    return dict(format=SNAPSHOT_FORMAT, seq=seq, scheduler=r.scheduler, names=r.names, creator=r.creator,
                last_t=r.last_t if math.isfinite(r.last_t) else -math.inf)


def state_digest(r: Replayer) -> str:
    """A SHA-256 of what a replica must equal: sessions, servers, counters, session
    names, clock (two brokers at the same position give the same digest)."""
    import hashlib

    s = r.scheduler
    state = [[tuple(row.tolist()) for row in s.sessions()], [tuple(row.tolist()) for row in s.servers()],
             s.licences_in_use, s.live_sessions, s.now, sorted(r.names.items(), key=repr),
             sorted(r.creator.items(), key=repr), r.last_t]
    return hashlib.sha256(repr(state).encode()).hexdigest()


def replay_rows(r: Replayer, rows) -> None:
    """Apply journal rows ``(pos, epoch, op, decision)`` to ``r``; StoreError when an op
    does not apply again or its decision differs from the journalled one."""
    if not rows:
        return
    r.lines = 0
    r.feed([row[2].encode() for row in rows])
    if r.errors:
        e = r.errors[0]
        raise StoreError("usher_journal", rows[e.line - 1][0], f"does not apply again: {e.error}: {e.message}")
    journalled = [(row[0], row[3]) for row in rows if row[3]]
    if len(journalled) != len(r.decisions):
        raise StoreError("usher_journal", rows[0][0], "replay gives a different number of decisions")
    for (pos, line), d in zip(journalled, r.decisions):
        if line.encode() != _ENCODER.encode(d):
            raise StoreError("usher_journal", pos, f"decision differs on replay: {line!r}")
    r.decisions.clear()


def recover(conn):
    """``(replayer, seq)``: the latest snapshot (or an empty ``Scheduler()``) and the
    rows after it replayed."""
    from usher.scheduler import Scheduler

    found = store.latest_snapshot(conn)
    if found is None:
        seq, r = 0, Replayer(Scheduler(), keep=True)
    else:
        seq, r = found[0], replayer_of(found[1])
    while True:
        rows = store.rows_after(conn, seq, limit=_CHUNK)
        if rows and rows[0][0] != seq + 1:
            raise StoreError("usher_journal", rows[0][0], f"the rows after the snapshot start at {rows[0][0]}, "
                                                          f"expected {seq + 1}")
        replay_rows(r, rows)
        if rows:
            seq = rows[-1][0]
        if len(rows) < _CHUNK:
            return r, seq


class _Refusing:
    """The writer of a standby: no append is ever accepted."""

    on_flush = None
    error = None
    fsync = "always"

    def __init__(self, durable, leader=None):
        self.durable = durable
        self.leader = leader

    def append(self, records):
        raise NotLeader("leader", self.leader, "this broker is a standby: writes go to the leader")

    def wait(self, ticket, timeout=None):
        return None

    async def wait_async(self, ticket):
        return None

    def commit_now(self):
        return None

    def close(self):
        return None


class ClusterJournal(Journal):
    """A journal kept in PostgreSQL at ``dsn`` (see the module's design). Starts as a
    standby at ``seq`` records (``replayer`` holding their state)."""

    def __init__(self, dsn, replayer, seq, snapshot_every=100_000, clock=time.time):
        super().__init__(None, replayer, seq, "always", snapshot_every, clock, None, 0.0, 1)
        self.dsn = dsn
        self.epoch = None
        self.snapshot_pos = None  # the latest snapshot this broker knows of
        self._writer = _Refusing(seq)

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def submit(self, items, explain=False):
        """``Journal.submit`` on the leader; NotLeader on a standby, before anything is applied."""
        if self.epoch is None:
            raise NotLeader("leader", getattr(self._writer, "leader", None),
                            "this broker is a standby: writes go to the leader")
        return super().submit(items, explain)

    # ------------------------------------------------------------ roles (called on the state's thread)
    def lead(self, epoch, writer) -> None:
        """Become the leader of ``epoch`` (the state is caught up with every row)."""
        with self._lock:
            self._writer = writer
            self.epoch = epoch
            self._since_snapshot = 0

    def follow(self, leader=None):
        """Become a standby; returns the writer it had (to be closed off the event loop)."""
        with self._lock:
            old, self._writer = self._writer, _Refusing(self.seq, leader)
            self.epoch = None
            return old

    def set_leader(self, url) -> None:
        if isinstance(self._writer, _Refusing):
            self._writer.leader = url

    def reset(self, replayer, seq) -> None:
        """Replace the state by ``replayer`` after ``seq`` records (a reload)."""
        with self._lock:
            self.replayer = replayer
            self.seq = seq
            self._since_snapshot = 0

    def apply_rows(self, rows) -> bool:
        """Apply rows that follow the state's position; False (nothing applied) when
        they do not start right after it."""
        with self._lock:
            if not rows:
                return True
            if rows[0][0] != self.seq + 1 or self.epoch is not None:
                return False
            replay_rows(self.replayer, rows)
            self.seq = rows[-1][0]
            return True

    # ------------------------------------------------------------ snapshots
    def snapshot(self) -> str:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> str:
        if self.epoch is None:
            raise NotLeader("leader", None, "only the leader writes snapshots")
        self._since_snapshot = 0
        try:
            self._writer.flush()
            conn = store.connect(self.dsn)
            try:
                store.write_snapshot(conn, self.epoch, self.seq, state_of_replayer(self.replayer, self.seq),
                                     keep_rows_from=self.snapshot_pos)
            finally:
                conn.close()
        except Exception as e:  # the request that crossed the threshold is not failed by it
            log.warning("snapshot at record %d not written: %s", self.seq, e)
            return ""
        self.snapshot_pos = self.seq
        self.last_snapshot = time.time()
        return f"usher_snapshot:{self.seq}"
