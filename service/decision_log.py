"""The JSON decision log: one line per launch decision, through ``logging``.

Records go to the logger ``usher.decisions`` at INFO, each with a ``decision`` dict
attached; :class:`JsonFormatter` writes a record as one JSON object per line, so an
operator routes the log with the standard machinery (a file, stdout, syslog, a
central collector). The library attaches no handler: the log is off until someone
configures one (``usher serve --log-decisions`` does, to stdout).

Fields of a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, then the decision:
``request_id``, ``t``, ``id``, ``user``, ``app``, ``location``, ``outcome``,
``reason``, ``server``, ``zone``, ``session``, ``load_index``, ``latency_ms`` (request
received -> acknowledged) and ``explanation`` when the request asked for one.
"""

from __future__ import annotations

import datetime as _dt
import logging

import msgspec
from msgspec import UNSET

from usher.formats.trace import LaunchDecision

__all__ = ["LOGGER", "JsonFormatter", "DecisionLog", "configure"]

LOGGER = "usher.decisions"
_ENCODER = msgspec.json.Encoder(enc_hook=str)  # what JSON cannot hold is written as its str()


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time, level, logger, and the record's
    ``decision`` dict (or its message)."""

    def format(self, record):
        line = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        decision = getattr(record, "decision", None)
        if decision is not None:
            line.update(decision)
        else:
            line["message"] = record.getMessage()
        return _ENCODER.encode(line).decode()


class DecisionLog:
    """A sink that logs every launch decision of an applied request."""

    def __init__(self, logger=None):
        self.logger = logger if logger is not None else logging.getLogger(LOGGER)

    def on_applied(self, ops, outputs, request_id=None, seconds=None) -> None:
        log = self.logger
        if not log.isEnabledFor(logging.INFO):
            return
        latency = None if seconds is None else round(seconds * 1000.0, 3)
        for op, out in zip(ops, outputs):
            if out.__class__ is not LaunchDecision:
                continue
            decision = dict(request_id=request_id, t=out.t, id=out.id, user=op.user, app=op.app,
                            location=op.location, outcome=out.outcome, reason=out.reason, server=out.server,
                            zone=out.zone, session=out.session, load_index=out.load_index, latency_ms=latency)
            if out.explanation is not UNSET:
                decision["explanation"] = out.explanation
            log.info("decision", extra={"decision": decision})


def configure(stream=None, path=None, logger=None) -> logging.Handler:
    """Send the decision log to ``stream`` (or a file at ``path``) as JSON lines;
    returns the handler."""
    handler = logging.FileHandler(path) if path is not None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logger if logger is not None else logging.getLogger(LOGGER)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler
