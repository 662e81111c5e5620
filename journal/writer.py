"""The journal writer: appends records to a segment file with group commit.

Design: :meth:`JournalWriter.append` only puts encoded records into a buffer under a
short lock and returns a ticket (the number of records appended so far); a flusher
thread takes the whole buffer at once, writes it with one ``write`` and, by policy,
one ``fsync``, then marks every ticket up to there durable. Callers that must not
acknowledge before their records are durable wait on their ticket
(:meth:`wait`, or :meth:`wait_async` from an event loop). So the launch path holds the
journal's lock only for a list append, and a thousand concurrent requests share one
``fsync``.

Policies (``fsync``):

- ``always``: the flusher writes and fsyncs as soon as records are waiting; a ticket
  is durable after the fsync that covers it.
- ``batch`` (default): the flusher gathers records for at most ``batch_seconds``
  (5 ms) or ``batch_records`` (1,000), then writes and fsyncs once. A caller that
  knows no more records are coming soon (``usher serve``: every request it holds has
  submitted its operations) ends the window at once with :meth:`commit_now`, so a
  quiet or closed-loop load does not wait out the window for records that will not
  come; under load the records that arrive during one fsync make the next group.
- ``off``: records are written (to the operating system) without fsync; a ticket is
  acknowledged once written. A process crash loses nothing written, a power loss may.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from usher.errors import InvalidArgument

_log = logging.getLogger("usher.journal")

__all__ = ["JournalWriter", "FSYNC_POLICIES"]

FSYNC_POLICIES = ("always", "batch", "off")


class Tickets:
    """A group-commit writer's acknowledgements: ``_durable`` (the last durable ticket),
    ``_waiters`` (``(ticket, loop, future)`` of ``wait_async``), ``_error`` (what stopped
    the flusher), all under ``_cond``; the flusher calls :meth:`_done` after each group
    and :meth:`_fail` when it stops on an error (every waiter is woken either way)."""

    _cond: threading.Condition
    _durable: int
    _waiters: list
    _error: BaseException | None
    on_flush: Any

    def _flushed(self, ticket, records, write_seconds, fsync_seconds):
        """A group of ``records`` is durable up to ``ticket``: ``on_flush`` first, so a
        client that has its answer finds its group counted (metrics), then the
        acknowledgements. An error of ``on_flush`` is logged and stops nothing."""
        if self.on_flush is not None:
            try:
                self.on_flush(records, write_seconds, fsync_seconds)
            except Exception:  # noqa: BLE001 - the metrics never stop acknowledgements
                _log.exception("journal: on_flush failed")
        self._done(ticket)

    def _done(self, ticket):
        with self._cond:
            self._durable = ticket
            ready = [w for w in self._waiters if w[0] <= ticket]
            self._waiters = [w for w in self._waiters if w[0] > ticket]
            self._cond.notify_all()
        _wake(ready)

    def _fail(self, exc):
        with self._cond:
            self._error = exc
            waiters, self._waiters = self._waiters, []
            self._cond.notify_all()
        _wake(waiters)


class JournalWriter(Tickets):
    """Appends records to ``path`` (opened for append; created if missing).

    Args:
        path: the segment file.
        fsync: ``"always"``, ``"batch"`` or ``"off"``.
        batch_seconds, batch_records: the group-commit window of ``batch``.
        on_flush: ``on_flush(records, write_seconds, fsync_seconds)`` after each group
            (metrics); called on the flusher thread.
        first: the number of the first record (tickets count on from there, so a
            ticket of an earlier segment is durable in this one).
    """

    def __init__(self, path, fsync="batch", batch_seconds=0.005, batch_records=1000, on_flush=None, first=0):
        if fsync not in FSYNC_POLICIES:
            raise InvalidArgument("fsync", fsync, f"must be one of {', '.join(FSYNC_POLICIES)}")
        self.path = os.fspath(path)
        self.fsync = fsync
        self.batch_seconds = float(batch_seconds)
        self.batch_records = int(batch_records)
        self.on_flush = on_flush
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._buffer: list[bytes] = []
        self._appended = int(first)  # records appended (tickets handed out)
        self._durable = int(first)  # records written (and fsynced, by policy)
        self._cond = threading.Condition()
        self._waiters: list = []  # (ticket, loop, future) of wait_async
        self._closed = False
        self._now = False  # commit_now: end the batch window early
        self._waiting = False  # the flusher waits for records or for the window's end
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="usher-journal", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ callers
    def append(self, records) -> int:
        """Queue encoded records (bytes each); returns the ticket that covers them."""
        with self._cond:
            if self._closed:
                raise InvalidArgument("journal", self.path, "is closed")
            self._buffer.extend(records)
            self._appended += len(records)
            ticket = self._appended
            # wake the flusher only when it has something to do: a group to start, or
            # a full batch; a busy flusher takes what waits when it is done
            if self._waiting and (self.fsync != "batch" or len(self._buffer) == len(records)
                                  or len(self._buffer) >= self.batch_records):
                self._cond.notify_all()
        return ticket

    def commit_now(self) -> None:
        """End the current ``batch`` window: write (and fsync) what is waiting now."""
        with self._cond:
            self._now = True
            if self._waiting:
                self._cond.notify_all()

    @property
    def error(self):
        """The exception that stopped the flusher (a failed write), or None."""
        return self._error

    @property
    def durable(self) -> int:
        """Records durable so far (by the policy's meaning)."""
        return self._durable

    def wait(self, ticket: int, timeout=None) -> None:
        """Block until the records up to ``ticket`` are durable (raises the flusher's
        write error, if it had one)."""
        with self._cond:
            self._cond.wait_for(lambda: self._durable >= ticket or self._error is not None, timeout)
            if self._error is not None:
                raise self._error

    async def wait_async(self, ticket: int) -> None:
        """:meth:`wait` for an event loop: resolves when ``ticket`` is durable."""
        if self._durable >= ticket and self._error is None:
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._durable >= ticket or self._error is not None:
                future.set_result(None)
            else:
                self._waiters.append((ticket, loop, future))
        await future
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Make everything appended so far durable (fsync whatever the policy)."""
        with self._cond:
            ticket = self._appended
        self.wait(ticket)
        os.fsync(self._fd)

    def close(self) -> None:
        """Flush, fsync and stop the flusher thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is None:
            os.fsync(self._fd)
        os.close(self._fd)

    # ------------------------------------------------------------ flusher
    def _take(self):
        """Wait for records (and, with ``batch``, for the window to fill); take them."""
        with self._cond:
            self._waiting = True
            self._cond.wait_for(lambda: self._buffer or self._closed)
            if self.fsync == "batch" and not self._closed:
                deadline = time.monotonic() + self.batch_seconds
                while len(self._buffer) < self.batch_records and not self._closed and not self._now:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self._waiting = False
            records, self._buffer = self._buffer, []
            self._now = False
            return records, self._appended, self._closed

    def _run(self):
        while True:
            records, ticket, closed = self._take()
            if records:
                try:
                    started = time.perf_counter()
                    data = b"".join(records)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self._fd, view):]
                    written = time.perf_counter()
                    if self.fsync != "off":
                        os.fsync(self._fd)
                    synced = time.perf_counter()
                except BaseException as e:  # a full disk: no ticket past here is ever acknowledged
                    self._fail(e)
                    return
                self._flushed(ticket, len(records), written - started,
                              synced - written if self.fsync != "off" else None)
            if closed:
                return


def _wake(waiters):
    """Resolve the futures of ``(ticket, loop, future)`` waiters: one wake-up per event
    loop, however many requests of it the group covered."""
    by_loop: dict = {}
    for _, loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures):
    for future in futures:
        if not future.done():
            future.set_result(None)
