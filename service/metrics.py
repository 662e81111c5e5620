"""Prometheus metrics of a journalled scheduler, for the service and for embedders.

Design: metrics go through a sink (:class:`Metrics`) that the caller registers, into the
``prometheus_client`` registry the caller chooses (``registry=``), so a broker that
embeds usher exposes them beside its own. Counters and histograms are fed once per
applied request (:meth:`Metrics.on_applied`) and per group commit
(:meth:`Metrics.on_flush`); gauges of the state (sessions, pending logons, servers)
are read from the scheduler when the registry is scraped (:class:`_StateCollector`),
so nothing is computed on the launch path for them.

Logon duration is launch -> ``logon_done`` of the session the launch created (the
response time a user feels); a launch's start is remembered until its session logs
on, logs off or fails (at most ``MAX_PENDING`` of them; the oldest are forgotten).
"""

from __future__ import annotations

import time
from collections import Counter as _Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from usher.formats.trace import LaunchDecision, LaunchFailedOp, LogoffOp, LogonDoneOp, RemoveServerOp, ServerOp

__all__ = ["Metrics", "MAX_PENDING"]

MAX_PENDING = 1_000_000
_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_LOGON_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300)


class Metrics:
    """The metrics of one journalled scheduler (``usher.journal.Journal``).

    Args:
        journal: the journal (its scheduler is read at scrape time).
        registry: where the metrics go (a new ``CollectorRegistry`` if None).
    """

    def __init__(self, journal, registry=None):
        self.journal = journal
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter("usher_decisions", "Launch decisions by outcome and reason.",
                                 ["outcome", "reason"], registry=r)
        self.errors = Counter("usher_op_errors", "Operations refused (error lines) by error class.",
                              ["error"], registry=r)
        self.launch_latency = Histogram("usher_launch_latency_seconds",
                                        "Request received -> its launch decisions durable and answered.",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.logon_duration = Histogram("usher_logon_duration_seconds",
                                        "Launch -> logon_done of the session it created.",
                                        ["pool", "zone"], buckets=_LOGON_BUCKETS, registry=r)
        self.journal_append = Histogram("usher_journal_append_seconds", "One group commit's write.",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.journal_fsync = Histogram("usher_journal_fsync_seconds", "One group commit's fsync.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.journal_records = Counter("usher_journal_records", "Records written to the journal.", registry=r)
        snapshot_age = Gauge("usher_snapshot_age_seconds", "Seconds since the latest snapshot (-1: none yet).",
                             registry=r)
        snapshot_age.set_function(self._snapshot_age)
        r.register(_StateCollector(journal))
        self._launched: dict = {}  # launch id -> (t, server, zone), until the session logs on
        self._pool_of: dict = {}  # server name -> pool
        self._decision_counters: dict = {}  # (outcome, reason) -> its child counter (labels() takes a lock)
        self._error_counters: dict = {}  # error class -> its child counter

    def _snapshot_age(self) -> float:
        last = self.journal.last_snapshot
        return -1.0 if last is None else time.time() - last

    # ------------------------------------------------------------ sinks
    def on_flush(self, records, write_seconds, fsync_seconds) -> None:
        """A group commit (``usher.journal.open(on_flush=...)``)."""
        self.journal_records.inc(records)
        self.journal_append.observe(write_seconds)
        if fsync_seconds is not None:
            self.journal_fsync.observe(fsync_seconds)

    def on_applied(self, ops, outputs, request_id=None, seconds=None) -> None:
        """One applied request: ``ops`` and ``outputs`` as ``Journal.submit`` returns
        them; ``seconds`` from receipt to acknowledgement."""
        tally: dict = {}
        errors: dict = {}
        launched = self._launched
        for op, out in zip(ops, outputs):
            cls = out.__class__
            if cls is LaunchDecision:
                key = (out.outcome, out.reason or "")
                tally[key] = tally.get(key, 0) + 1
                if out.outcome == "placed":
                    launched[out.id] = (out.t, out.server, out.zone)
            elif out is not None:
                errors[out.error] = errors.get(out.error, 0) + 1
            elif op.__class__ is LogonDoneOp:
                self._logged_on(op)
            elif op.__class__ in (LogoffOp, LaunchFailedOp):
                launched.pop(op.session, None)
            elif op.__class__ in (ServerOp, RemoveServerOp):
                self._pool_of.clear()
        counters = self._decision_counters
        for key, n in tally.items():
            child = counters.get(key)
            if child is None:
                child = counters[key] = self.decisions.labels(*key)
            child.inc(n)
        for error, n in errors.items():
            child = self._error_counters.get(error)
            if child is None:
                child = self._error_counters[error] = self.errors.labels(error)
            child.inc(n)
        if tally and seconds is not None:
            self.launch_latency.observe(seconds)
        while len(launched) > MAX_PENDING:
            del launched[next(iter(launched))]

    def _logged_on(self, op) -> None:
        started = self._launched.pop(op.session, None)
        if started is None:
            return
        t0, server, zone = started
        pool = self._pool_of.get(server)
        if pool is None:
            self._pool_of = {str(s["name"]): str(s["pool"]) for s in self.journal.scheduler.servers()}
            pool = self._pool_of.get(server, "")
        self.logon_duration.labels(pool, zone).observe(max(0.0, op.t - t0))


class _StateCollector:
    """Gauges read from the scheduler at scrape time."""

    def __init__(self, journal):
        self.journal = journal

    def describe(self):
        return []

    def collect(self):
        s = self.journal.scheduler
        servers = s.servers()
        sessions = GaugeMetricFamily("usher_sessions", "Live sessions per pool and zone.", labels=["pool", "zone"])
        pending = GaugeMetricFamily("usher_pending_logons", "Sessions launched and not yet logged on, per pool and zone.",
                                    labels=["pool", "zone"])
        by_state = GaugeMetricFamily("usher_servers", "Servers per pool, zone, power state and mode.",
                                     labels=["pool", "zone", "power", "mode"])
        live: _Tally = _Tally()
        waiting: _Tally = _Tally()
        count: _Tally = _Tally()
        for row in servers:
            key = (str(row["pool"]), str(row["zone"]))
            live[key] += int(row["sessions"])
            waiting[key] += int(row["pending"])
            count[(*key, str(row["power"]), str(row["mode"]))] += 1
        for key, n in live.items():
            sessions.add_metric(list(key), n)
            pending.add_metric(list(key), waiting[key])
        for key, n in count.items():
            by_state.add_metric(list(key), n)
        licences = GaugeMetricFamily("usher_licences_in_use", "Users holding a licence.", value=s.licences_in_use)
        return [sessions, pending, by_state, licences]
