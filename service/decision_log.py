"""The JSON decision log: one line per launch decision, through ``logging``.

Design: the log goes to the logger ``usher.decisions`` at INFO, one log record per
applied request that holds the JSON lines of all its launch decisions, encoded in one
msgspec call (``DecisionLog.on_applied``). A record carries them in ``decision_lines``
(bytes, one JSON object per line) and ``decisions`` (the same as dicts, decoded only
when a handler asks for them); :class:`JsonFormatter` writes it as those lines, so an
operator routes the log with the standard machinery (a file, stdout, syslog, a central
collector) and sees one JSON object per line. The library attaches no handler: the log
is off until someone configures one (``usher serve --log-decisions`` does, to stdout).

:func:`configure` installs a :class:`BackgroundHandler`: the request path only
appends the record's bytes to a bounded queue; a writer thread takes everything
waiting at once and writes it with one ``write``. When the queue is full (the reader
of the log is slower than the decisions) the request path waits for room: no line is
ever dropped, and memory stays bounded.

Fields of a line: ``time`` (UTC, ISO 8601: when the request was answered), ``level``,
``logger``, then the decision: ``request_id``, ``t``, ``id``, ``user``, ``app``,
``location``, ``outcome``, ``reason``, ``server``, ``zone``, ``session``,
``load_index``, ``latency_ms`` (request received -> acknowledged) and ``explanation``
when the request asked for one.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import threading
import time

import msgspec
from msgspec import UNSET, UnsetType

from usher.formats.trace import LaunchDecision

__all__ = ["LOGGER", "JsonFormatter", "DecisionLog", "BackgroundHandler", "configure", "QUEUE_RECORDS"]

LOGGER = "usher.decisions"
QUEUE_RECORDS = 10_000  # log records (requests) waiting for the writer thread, at most
_ENCODER = msgspec.json.Encoder(enc_hook=str)  # what JSON cannot hold is written as its str()
_MAIN = threading.main_thread().ident
WRITE_INTERVAL = 0.005  # seconds the writer thread lets records gather between two writes


class DecisionLine(msgspec.Struct, omit_defaults=True, gc=False):
    """One line of the decision log (field order = the line's)."""

    time: str
    level: str
    logger: str
    request_id: str | None
    t: float
    id: object
    user: object
    app: object
    location: object
    outcome: str
    reason: str | None
    server: str | None
    zone: str | None
    session: object
    load_index: int | None
    latency_ms: float | None
    explanation: dict | UnsetType = UNSET


_SECOND: list = [None, ""]  # the last whole second formatted by _iso, and its text


def _iso(created: float) -> str:
    """``created`` (seconds since the epoch) as UTC ISO 8601 with microseconds; the
    whole second's text is formatted once per second."""
    second = int(created)
    if _SECOND[0] != second:
        _SECOND[1] = _dt.datetime.fromtimestamp(second, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND[0] = second
    micro = min(999_999, int((created - second) * 1e6))
    return f"{_SECOND[1]}.{micro:06d}+00:00"


class JsonFormatter(logging.Formatter):
    """A log record as JSON lines: a record of :class:`DecisionLog` as its decision
    lines; any other record as one line of time, level, logger and message."""

    def format(self, record):
        lines = getattr(record, "decision_lines", None)
        if lines is not None:
            return lines[:-1].decode()
        return _ENCODER.encode({"time": _iso(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}).decode()


class _Record(logging.LogRecord):
    """A decision-log record: the message is the lines, decoded only when asked.
    Built without ``LogRecord.__init__``'s look-ups (caller, process name) on the
    request path; it has every attribute a formatter reads."""

    def __init__(self, name, lines: bytes):  # noqa: D107 - see the class
        self.name = name
        self.msg = "decisions"
        self.args = None
        self.levelname = "INFO"
        self.levelno = logging.INFO
        self.pathname = __file__
        self.filename = "decision_log.py"
        self.module = "decision_log"
        self.exc_info = self.exc_text = self.stack_info = None
        self.lineno = 0
        self.funcName = "on_applied"
        self.created = time.time()
        self.msecs = int((self.created - int(self.created)) * 1000) + 0.0
        self.relativeCreated = (self.created - logging._startTime) * 1000  # type: ignore[attr-defined]
        self.thread = threading.get_ident()
        self.threadName = "MainThread" if self.thread == _MAIN else threading.current_thread().name
        self.processName = "MainProcess"
        self.process = os.getpid()
        self.taskName = None
        self.decision_lines = lines

    @property
    def decisions(self) -> list[dict]:
        """The record's decisions, one dict per line."""
        return [msgspec.json.decode(x) for x in self.decision_lines.splitlines()]

    def getMessage(self):  # noqa: N802 - logging's name
        return self.decision_lines[:-1].decode()


class DecisionLog:
    """A sink that logs the launch decisions of every applied request (one record
    per request; see the module's design)."""

    def __init__(self, logger=None):
        self.logger = logger if logger is not None else logging.getLogger(LOGGER)

    def on_applied(self, ops, outputs, request_id=None, seconds=None) -> None:
        log = self.logger
        if not log.isEnabledFor(logging.INFO):
            return
        created = time.time()
        latency = None if seconds is None else round(seconds * 1000.0, 3)
        now = _iso(created)
        lines = [DecisionLine(now, "info", log.name, request_id, out.t, out.id, op.user, op.app, op.location,
                              out.outcome, out.reason, out.server, out.zone, out.session, out.load_index,
                              latency, out.explanation)
                 for op, out in zip(ops, outputs) if out.__class__ is LaunchDecision]
        if not lines:
            return
        record = _Record(log.name, _ENCODER.encode_lines(lines))
        record.created = created
        log.handle(record)


class BackgroundHandler(logging.Handler):
    """Writes formatted records to a binary or text ``stream`` from a thread of its
    own: :meth:`emit` queues the text (at most ``capacity`` records; beyond, it waits
    for room), the thread writes all that waits with one ``write`` and flushes."""

    def __init__(self, stream, capacity=QUEUE_RECORDS, close_stream=False):
        super().__init__()
        self.stream = stream
        self._binary = getattr(stream, "buffer", None)
        self._close_stream = close_stream
        self.capacity = int(capacity)
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._busy = False  # the thread holds taken records it has not written yet
        self.failure: Exception | None = None  # the last write that failed (its lines are lost)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="usher-decision-log", daemon=True)
        self._thread.start()

    def emit(self, record):
        try:
            data = getattr(record, "decision_lines", None) if self.formatter.__class__ is JsonFormatter else None
            if data is None:
                data = self.format(record).encode() + b"\n"
        except Exception:  # a record that cannot be formatted: logging's own report
            self.handleError(record)
            return
        with self._cond:
            while len(self._queue) >= self.capacity and not self._closed and self._thread.is_alive():
                self._cond.wait(0.1)
            if self._closed:
                return
            self._queue.append(data)
            if len(self._queue) == 1 or len(self._queue) * 2 >= self.capacity:
                self._cond.notify_all()

    def _run(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue and self._closed:
                    return
                taken = list(self._queue)
                self._queue.clear()
                self._busy = True
                self._cond.notify_all()  # room for waiting emitters
            data = b"".join(taken)
            try:
                if self._binary is not None:
                    self.stream.flush()  # text written before, by others, goes first
                    self._binary.write(data)
                    self._binary.flush()
                elif hasattr(self.stream, "encoding"):
                    self.stream.write(data.decode())
                    self.stream.flush()
                else:
                    self.stream.write(data)
                    self.stream.flush()
            except Exception as e:  # a closed or broken stream must not stop the service
                self.failure = e
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                if not self._closed:  # let records gather: fewer wake-ups, fewer writes
                    self._cond.wait_for(lambda: self._closed or len(self._queue) * 2 >= self.capacity,
                                        WRITE_INTERVAL)

    def flush(self):
        """Wait until everything queued so far is written."""
        with self._cond:
            self._cond.wait_for(lambda: (not self._queue and not self._busy) or not self._thread.is_alive())

    def close(self):
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        if self._close_stream:
            self.stream.close()
        super().close()


def configure(stream=None, path=None, logger=None, capacity=QUEUE_RECORDS) -> logging.Handler:
    """Send the decision log to ``stream`` (or appended to a file at ``path``) as JSON
    lines, written by a background thread (:class:`BackgroundHandler`); returns the
    handler."""
    import sys

    if path is not None:
        handler = BackgroundHandler(open(path, "ab"), capacity, close_stream=True)
    else:
        handler = BackgroundHandler(stream if stream is not None else sys.stderr, capacity)
    handler.setFormatter(JsonFormatter())
    log = logger if logger is not None else logging.getLogger(LOGGER)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler
