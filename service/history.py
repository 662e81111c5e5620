"""The dashboard's history: a ring of time buckets over the last hours.

Design: a bucket is ``bucket_seconds`` of *operation time* (the ``t`` of the ops
applied, so a simulated day replayed at 60x fills one 60-second bucket per wall
second, and a broker on the wall clock one per minute). Each bucket holds what
happened in it (launch decisions by outcome and rejection reason, logon durations
per zone, fleet actions) and the fleet's gauges as last sampled in it (sessions,
licences, pending logons, powered servers, servers per image). The ring keeps the
newest ``buckets`` of them (360 x 60 s = 6 hours); older ones fall off. It is fed
by the dashboard's sampler (``usher.service.dashboard``), never by a request
handler, and knows nothing of HTTP.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Bucket", "History", "percentiles"]

MAX_DURATIONS = 5_000  # logon durations kept per zone and bucket (the first ones)


def percentiles(values, qs=(50.0, 95.0)) -> list:
    """The ``qs`` percentiles of ``values`` (linear interpolation), rounded to
    0.1; None for each when there are no values."""
    if not len(values):
        return [None for _ in qs]
    return [round(float(v), 1) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


@dataclass
class Bucket:
    """What happened in ``[start, start + bucket_seconds)`` of operation time.

    Attributes:
        start: the bucket's first second (operation time).
        outcomes: launch decisions per outcome (``placed``, ``reconnected``, ``shared``, ``rejected``).
        rejected: rejected launches per reason (``full``, ``licence_exhausted`` ...).
        logons: per zone, the logon durations (launch -> logon_done, seconds) that ended here.
        actions: fleet actions (power, mode, image ... ops) applied here.
        gauges: the fleet as last sampled here (None until sampled): ``sessions``,
            ``licences``, ``pending``, ``servers_on``, ``servers``, ``images`` (image -> servers).
    """

    start: float
    outcomes: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    logons: dict = field(default_factory=dict)
    actions: int = 0
    gauges: dict | None = None
    closed: dict | None = field(default=None, repr=False)  # the JSON, once a newer bucket exists

    def add_logon(self, zone: str, seconds: float) -> None:
        durations = self.logons.setdefault(zone, [])
        if len(durations) < MAX_DURATIONS:
            durations.append(seconds)

    def as_json(self) -> dict:
        """The bucket as the dashboard's JSON: logon durations as p50/p95 per zone."""
        return {
            "t": self.start,
            "launches": sum(self.outcomes.values()),
            "outcomes": dict(self.outcomes),
            "rejected": dict(self.rejected),
            "logon": {z: dict(zip(("n", "p50", "p95"), (len(d), *percentiles(d)))) for z, d in self.logons.items()},
            "actions": self.actions,
            "gauges": self.gauges,
        }


class History:
    """The newest ``buckets`` buckets of ``bucket_seconds`` each, by operation time.

    Args:
        bucket_seconds: the width of a bucket, in seconds of operation time (> 0).
        buckets: how many buckets are kept (>= 1).
    """

    def __init__(self, bucket_seconds: float = 60.0, buckets: int = 360):
        if not (bucket_seconds > 0 and math.isfinite(bucket_seconds)):
            raise ValueError(f"bucket_seconds must be a positive number, not {bucket_seconds!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, not {buckets!r}")
        self.bucket_seconds = float(bucket_seconds)
        self.size = int(buckets)
        self._ring: dict[int, Bucket] = {}  # bucket number -> bucket, in increasing order
        self.newest = -math.inf  # the newest bucket number seen

    def key(self, t: float) -> int:
        return math.floor(t / self.bucket_seconds)

    def at(self, t: float) -> Bucket | None:
        """The bucket of time ``t`` (made when needed); None when ``t`` falls
        before the ring (older than the oldest bucket kept) or is not finite."""
        if not math.isfinite(t):
            return None
        k = self.key(t)
        b = self._ring.get(k)
        if b is not None:
            return b
        if k <= self.newest - self.size:
            return None
        b = Bucket(k * self.bucket_seconds)
        self._ring[k] = b
        if k > self.newest:
            self.newest = k
            if len(self._ring) > self.size:
                self._drop_old()
        else:  # a late bucket between kept ones: keep the order
            self._ring = dict(sorted(self._ring.items()))
        return b

    def _drop_old(self) -> None:
        oldest = self.newest - self.size
        for k in [k for k in self._ring if k <= oldest]:
            del self._ring[k]

    def buckets(self, since: float | None = None) -> list[Bucket]:
        """The buckets kept, oldest first; with ``since``, those from the bucket of
        ``since`` on."""
        if since is None:
            return list(self._ring.values())
        k0 = self.key(since)
        return [b for k, b in self._ring.items() if k >= k0]

    def as_json(self, since: float | None = None) -> list[dict]:
        """The buckets as JSON (``Bucket.as_json``). Operation time never goes back,
        so every bucket but the newest is closed: its JSON is made once and kept."""
        out = []
        k0 = None if since is None else self.key(since)
        for k, b in self._ring.items():
            if k0 is not None and k < k0:
                continue
            if k < self.newest:
                if b.closed is None:
                    b.closed = b.as_json()
                out.append(b.closed)
            else:
                out.append(b.as_json())
        return out

    def logon_percentiles(self, last: int = 15) -> dict:
        """Per zone, ``n``, ``p50`` and ``p95`` of the logon durations of the ``last``
        buckets kept."""
        pooled: dict = {}
        for b in list(self._ring.values())[-last:]:
            for zone, d in b.logons.items():
                pooled.setdefault(zone, []).extend(d)
        return {z: dict(zip(("n", "p50", "p95"), (len(d), *percentiles(d)))) for z, d in sorted(pooled.items())}
