"""The decision loop of a broker in a cluster: lead while the lease is ours, else follow.

Design (Patroni's ``ha.py`` in small): one thread per broker runs :meth:`Broker._run`,
on its own connection. As the *leader* it renews the lease every ``ttl / 3`` seconds
and steps down when a renewal finds another epoch or when its writer failed (a fenced
append, a lost database). As a *standby* it waits for a journal notification (at most
``poll`` seconds), reads the rows after its position and applies them to its replica,
then tries to take the lease: the database grants it when it has expired or when the
holder's lease connection is gone (a killed leader's sessions end at once, so a kill -9
is taken over within ``poll`` seconds; a paused or cut-off leader within ``ttl``). A
new leader reads every row left (none can be added once its epoch is in the lease),
applies them, and only then takes writes. A leader whose append failed (deposed, or
its writer's connection cut) notices within ``poll`` seconds, gives the lease up and
follows; a leader whose lease connection the server ends (a restart, a terminated
session) notices within ``poll`` seconds and follows, the lease free at once (the
database sees that holder gone); one cut off silently loses the lease after ``ttl``. A deposed leader reloads its state from the database: its memory may
hold operations that were never journalled; it may take the lease again, with a new
epoch.

Every change to the state runs on the event loop that serves the requests
(``loop``), so requests and replication never touch the state at once; without a loop
(embedding, tests) the thread applies under the journal's lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time

from usher.cluster import store
from usher.cluster.replica import ClusterJournal, recover
from usher.cluster.writer import PgWriter

__all__ = ["Broker", "open_broker"]

log = logging.getLogger("usher.cluster")


def open_broker(dsn, url, seed=None, ttl=3.0, poll=0.2, snapshot_every=100_000, clock=time.time) -> "Broker":
    """Connect to the store at ``dsn``, create its tables if missing, recover the state
    it holds (latest snapshot + rows after it) and return a standby :class:`Broker`
    (call :meth:`Broker.start`). ``seed``: the scheduler a leader writes as the first
    snapshot of an empty store; ``url``: the address other brokers send writes to."""
    conn = store.connect(dsn)
    try:
        store.ensure_schema(conn)
        replayer, seq = recover(conn)
        found = store.latest_snapshot(conn)
    finally:
        conn.close()
    journal = ClusterJournal(dsn, replayer, seq, snapshot_every=snapshot_every, clock=clock)
    journal.snapshot_pos = None if found is None else found[0]
    return Broker(dsn, url, journal, seed=seed, ttl=ttl, poll=poll)


class Broker:
    """Leadership and replication of one broker over ``journal`` (a :class:`ClusterJournal`).

    Attributes:
        role: ``"leader"`` or ``"standby"``.
        leader: the advertised URL of the current leader (as the lease names it).
        failovers: ``(epoch, seconds from the lease becoming free to taking writes)`` of each takeover.
    """

    def __init__(self, dsn, url, journal, seed=None, ttl=3.0, poll=0.2):
        self.dsn = dsn
        self.url = url
        self.journal = journal
        self.seed = seed
        self.ttl = float(ttl)
        self.poll = float(poll)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{url}"
        self.leader = None
        self.on_flush = None
        self.failovers: list = []
        self._loop = None
        self._conn = None
        self._stop = threading.Event()
        self._loaded = True
        self._thread = threading.Thread(target=self._run, name="usher-cluster", daemon=True)

    @property
    def role(self) -> str:
        return "leader" if self.journal.leading else "standby"

    def start(self, loop=None) -> "Broker":
        """Run the decision loop; state changes go through ``loop`` when given."""
        self._loop = loop
        self._thread.start()
        return self

    def stop(self, release=True) -> None:
        """Stop the loop; a leader commits what waits and gives the lease up."""
        self._stop.set()
        self._thread.join()
        epoch = self.journal.epoch
        self.journal.follow(self.leader).close()
        if release and epoch is not None:
            try:
                conn = store.connect(self.dsn)
                store.release_lease(conn, epoch)
                conn.close()
            except Exception as e:
                log.warning("lease of epoch %s not released: %s", epoch, e)

    def middleware(self, app):
        """The ASGI gate over the service's ``app`` (``create_app(journal, role=broker)``)."""
        from usher.cluster.gate import ClusterGate

        return ClusterGate(app, self)

    def status(self, digest=False) -> dict:
        """What /v1/cluster answers (on the state's thread); ``digest``: add the
        state's :func:`~usher.cluster.replica.state_digest`."""
        from usher.cluster.replica import state_digest

        out = {"role": self.role, "epoch": self.journal.epoch, "position": self.journal.seq,
               "leader": self.url if self.journal.leading else self.leader, "url": self.url}
        if digest:
            out["digest"] = state_digest(self.journal.replayer)
        return out

    # ------------------------------------------------------------ the loop
    def _on_state(self, fn, *args):
        """Run ``fn(*args)`` where the state lives (the event loop) and return its result."""
        if self._loop is None:
            return fn(*args)

        async def call():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def _run(self):
        while not self._stop.is_set():
            try:
                if self._conn is None:
                    self._conn = store.connect(self.dsn)
                    self._conn.execute(f"LISTEN {store.CHANNEL}")
                if self.journal.leading:
                    self._lead_step()
                else:
                    self._follow_step()
            except Exception as e:  # the database went away, or a row could not be applied
                log.warning("cluster: %s: %s", type(e).__name__, e)
                self._drop_connection()
                if self.journal.leading:
                    self._step_down("the lease could not be renewed")
                self._stop.wait(self.poll)
        self._drop_connection()

    def _drop_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _lead_step(self):
        renew_at = time.monotonic() + self.ttl / 3
        while self.journal.healthy and time.monotonic() < renew_at:
            if self._stop.is_set():
                return
            # waiting on the lease connection: a session the server ends (restart, terminated) raises at once
            for _ in self._conn.notifies(timeout=min(self.poll, self.ttl / 3), stop_after=1):
                pass
        if not self.journal.healthy:
            self._step_down("a journal append failed")
        elif not store.renew_lease(self._conn, self.journal.epoch, self.ttl):
            self._step_down("another broker holds the lease")

    def _step_down(self, why):
        epoch = self.journal.epoch
        log.warning("cluster: epoch %s steps down: %s", epoch, why)
        old = self._on_state(self.journal.follow, self.leader)
        threading.Thread(target=old.close, daemon=True).start()
        self._loaded = False  # memory may hold operations that were never journalled
        if self._conn is not None:  # free the lease now (its epoch appends no more): any broker may take it
            try:
                store.release_lease(self._conn, epoch)
            except Exception as e:
                log.warning("lease of epoch %s not released: %s", epoch, e)

    def _follow_step(self):
        for _ in self._conn.notifies(timeout=self.poll, stop_after=1):
            pass
        self._catch_up()
        current = store.lease(self._conn)
        self.leader = current["url"]
        self.journal.set_leader(self.leader)
        epoch = store.take_lease(self._conn, self.holder, self.url, self.ttl)
        if epoch is not None:
            self._promote(epoch, time.monotonic())

    def _catch_up(self):
        """Apply the rows after the replica's position; reload from the latest snapshot
        when they do not follow it (pruned rows, or a deposed leader's memory)."""
        while True:
            rows = store.rows_after(self._conn, self.journal.seq, limit=10_000)
            if not self._loaded or not self._on_state(self.journal.apply_rows, rows):
                replayer, seq = recover(self._conn)
                self._on_state(self.journal.reset, replayer, seq)
                self._loaded = True
                continue
            if len(rows) < 10_000:
                return

    def _promote(self, epoch, started):
        self._catch_up()  # no row can be added after our epoch took the lease: this reads them all
        if not store.has_state(self._conn) and self.seed is not None:
            from usher.formats.replay import Replayer

            self._on_state(self.journal.reset, Replayer(self.seed, keep=True), 0)
        writer = PgWriter(self.dsn, epoch, self.journal.seq, on_flush=self.on_flush)
        self._on_state(self.journal.lead, epoch, writer)
        if self.journal.seq == 0 and self.journal.snapshot_pos is None:
            self._on_state(self.journal.snapshot)  # the seed (or empty) state as the first snapshot
        self.leader = self.url
        self.failovers.append((epoch, time.monotonic() - started))
        log.warning("cluster: leading with epoch %d at record %d", epoch, self.journal.seq)
