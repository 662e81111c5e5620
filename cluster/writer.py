"""The journal writer of a leader: records appended to PostgreSQL with group commit.

Design: the same contract as ``usher.journal.JournalWriter`` (``append`` returns a
ticket; ``wait``/``wait_async`` until it is durable; ``error`` once a write failed), so
``usher.journal.Journal`` uses either. :meth:`PgWriter.append` only puts records into
a buffer under a short lock; a flusher thread takes everything waiting at once and
inserts it with one fenced statement — one transaction, one commit (one WAL flush) —
for however many requests' records it holds; records that arrive during a commit make
the next one. A commit that fails (the epoch was deposed: :class:`NotLeader`, or the
database went away) stops the writer: no ticket past it is ever acknowledged.
"""

from __future__ import annotations

import asyncio
import threading
import time

from usher.cluster import store
from usher.errors import InvalidArgument
from usher.journal.writer import Tickets

__all__ = ["PgWriter"]


class PgWriter(Tickets):
    """Appends records (bytes of ``usher.journal.records.encode``) at positions
    ``first + 1, ...`` under ``epoch``, on its own connection to ``dsn``."""

    fsync = "always"

    def __init__(self, dsn, epoch, first, on_flush=None, conn=None):
        self.epoch = int(epoch)
        self.on_flush = on_flush
        self._conn = conn if conn is not None else store.connect(dsn)
        self._buffer: list[bytes] = []
        self._appended = int(first)
        self._durable = int(first)
        self._cond = threading.Condition()
        self._waiters: list = []
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="usher-pg-journal", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ callers
    def append(self, records) -> int:
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise InvalidArgument("journal", "postgresql", "is closed")
            self._buffer.extend(records)
            self._appended += len(records)
            self._cond.notify_all()
            return self._appended

    def commit_now(self) -> None:
        """Nothing to do: the flusher commits as soon as records wait."""

    @property
    def error(self):
        return self._error

    @property
    def durable(self) -> int:
        return self._durable

    def wait(self, ticket: int, timeout=None) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._durable >= ticket or self._error is not None, timeout)
            if self._durable < ticket and self._error is not None:
                raise self._error

    async def wait_async(self, ticket: int) -> None:
        if self._durable >= ticket:
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._durable >= ticket or self._error is not None:
                future.set_result(None)
            else:
                self._waiters.append((ticket, loop, future))
        await future
        if self._durable < ticket and self._error is not None:
            raise self._error

    def flush(self) -> None:
        with self._cond:
            ticket = self._appended
        self.wait(ticket)

    def close(self) -> None:
        """Commit what waits, stop the flusher and close the connection."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._conn.close()

    # ------------------------------------------------------------ flusher
    def _take(self):
        with self._cond:
            self._cond.wait_for(lambda: self._buffer or self._closed)
            records, self._buffer = self._buffer, []
            return records, self._appended - len(records), self._closed

    def _run(self):
        while True:
            records, first, closed = self._take()
            if records:
                started = time.perf_counter()
                try:
                    store.append(self._conn, self.epoch, first, records)
                except BaseException as e:
                    self._fail(e if isinstance(e, store.NotLeader) else
                               store.NotLeader("store", None, f"the journal append failed: {type(e).__name__}: {e}"))
                    return
                self._flushed(first + len(records), len(records), time.perf_counter() - started, None)
            if closed:
                return
