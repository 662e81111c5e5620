"""Where the day's metrics go: one sink interface for the time series and the KPIs.

Design: the day loop does not assemble files or arrays; it hands each KPI sample
to its sinks (``sample``), and the KPIs of the whole day once at the end
(``kpis``). What a sample holds is declared once here (:data:`SERIES_COLUMNS`,
:data:`ZONE_COLUMNS`). Sinks that ship with the simulator:

- :class:`SeriesSink`: the samples as numpy columns (``DayResult.series`` and
  ``DayResult.zones``);
- :class:`KpiSink`: the KPIs as a flat dict (``DayResult.kpis``);
- :class:`CsvSink`: ``timeseries.csv`` and ``zones.csv`` in a folder, written row
  by row.

A new destination (a Prometheus registry of gauges, a live dashboard) is a new
class with the same four methods; ``simulate_day(sinks=[...])`` feeds it along
with the built-in ones, and a running broker can feed the same interface.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from usher.core.codes import Reason

__all__ = ["MetricSink", "SeriesSink", "KpiSink", "CsvSink", "SERIES_COLUMNS", "ZONE_COLUMNS", "REASONS",
           "feed"]

REASONS = [str(r) for r in Reason if r != Reason.NONE]

#: columns of a fleet-wide sample (one row per ``day.sample_seconds``; docs/SCENARIOS.md)
SERIES_COLUMNS = (
    "t", "sessions", "pending", "licences", "servers_on", "servers_booting", "servers_powered",
    "capacity", "launches", "placed", "reconnected", "shared", "rejected",
    *[f"rejected_{r}" for r in REASONS], "lost", "failed",
    "sessions_max", "sessions_p99", "sessions_mean", "li_p50", "li_p99", "li_max", "li_mean",
    "pending_max", "watts", "target",
)
#: columns of a per-zone sample (one row per sample and zone)
ZONE_COLUMNS = ("t", "zone", "servers_on", "sessions", "sessions_mean", "sessions_max",
                "sessions_p99", "li_mean", "li_p99", "li_max", "imbalance")


@runtime_checkable
class MetricSink(Protocol):
    """Receives the metrics of a day (or of a running broker).

    ``open(zones, n_samples)``: before the first sample; ``zones`` are the zone
    names, ``n_samples`` how many samples to expect (0 = unknown).
    ``sample(row, zone_rows)``: one sample; ``row`` a tuple in
    :data:`SERIES_COLUMNS` order, ``zone_rows`` one tuple per zone in
    ``ZONE_COLUMNS[2:]`` order (NaN = not defined).
    ``kpis(kpis)``: the flat KPI dict, once, at the end.
    ``close()``: nothing more will come.
    """

    def open(self, zones: Sequence[str], n_samples: int) -> None: ...

    def sample(self, row: tuple, zone_rows: Sequence[tuple]) -> None: ...

    def kpis(self, kpis: dict) -> None: ...

    def close(self) -> None: ...


class SeriesSink:
    """The samples as float64 columns: ``series`` (column -> ndarray of shape
    (n_samples,)) and ``zones`` (zone -> column -> ndarray), zero past the last
    sample received."""

    def __init__(self):
        self._rows: list = []
        self._zone_rows: list = []
        self._zones: list = []
        self._n = 0
        self.series: dict = {}
        self.zones: dict = {}

    def open(self, zones, n_samples):
        self._zones, self._n = list(zones), int(n_samples)

    def sample(self, row, zone_rows):
        self._rows.append(row)
        self._zone_rows.append(zone_rows)

    def kpis(self, kpis):
        pass

    def close(self):
        rows, n = self._rows, max(self._n, len(self._rows))
        arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(SERIES_COLUMNS))
        self.series = {c: np.zeros(n) for c in SERIES_COLUMNS}
        for col, c in enumerate(SERIES_COLUMNS):
            self.series[c][: len(rows)] = arr[:, col]
        zcols = ZONE_COLUMNS[2:]
        self.zones = {z: {c: np.zeros(n) for c in zcols} for z in self._zones}
        if self._zone_rows:
            zarr = np.array(self._zone_rows, dtype=np.float64)  # (samples, zones, columns)
            for zi, z in enumerate(self._zones):
                for col, c in enumerate(zcols):
                    self.zones[z][c][: len(self._zone_rows)] = zarr[:, zi, col]


class KpiSink:
    """The KPIs as a flat dict (``kpis``)."""

    def __init__(self):
        self.values: dict = {}

    def open(self, zones, n_samples):
        pass

    def sample(self, row, zone_rows):
        pass

    def kpis(self, kpis):
        self.values = dict(kpis)

    def close(self):
        pass


def cell(x) -> str:
    """A CSV cell: integers without a decimal point, others with up to 3 decimals,
    empty for NaN."""
    x = float(x)
    if not math.isfinite(x):
        return ""
    if x == int(x):
        return str(int(x))
    return f"{x:.3f}".rstrip("0")


class CsvSink:
    """``timeseries.csv`` (one row per sample, :data:`SERIES_COLUMNS`) and
    ``zones.csv`` (one row per sample and zone, :data:`ZONE_COLUMNS`) in ``folder``,
    written as the samples come. ``paths``: the two files."""

    def __init__(self, folder):
        self.folder = folder
        self.paths = (os.path.join(folder, "timeseries.csv"), os.path.join(folder, "zones.csv"))
        self._fh: list = []
        self._zones: list = []

    def open(self, zones, n_samples):
        os.makedirs(self.folder, exist_ok=True)
        self._zones = list(zones)
        self._fh = [open(p, "w", newline="") for p in self.paths]
        self._ts, self._zs = (csv.writer(fh) for fh in self._fh)
        self._ts.writerow(SERIES_COLUMNS)
        self._zs.writerow(ZONE_COLUMNS)

    def sample(self, row, zone_rows):
        self._ts.writerow([cell(x) for x in row])
        t = cell(row[0])
        for z, zr in zip(self._zones, zone_rows):
            self._zs.writerow([t, z, *[cell(x) for x in zr]])

    def kpis(self, kpis):
        pass

    def close(self):
        for fh in self._fh:
            fh.close()
        self._fh = []


SinkT = TypeVar("SinkT", bound=MetricSink)


def feed(sink: SinkT, series: dict, zones: dict, kpis: dict | None = None) -> SinkT:
    """Give a finished day's columns (as in ``DayResult``) to ``sink``, sample by
    sample (rows of Python floats), then its KPIs; returns the sink, closed."""
    n = len(series["t"])
    sink.open(list(zones), n)
    cols = [np.asarray(series[c], dtype=np.float64).tolist() for c in SERIES_COLUMNS]
    zcols = [[np.asarray(zs[c], dtype=np.float64).tolist() for c in ZONE_COLUMNS[2:]] for zs in zones.values()]
    for j in range(n):
        sink.sample(tuple([c[j] for c in cols]), [tuple([c[j] for c in zc]) for zc in zcols])
    if kpis is not None:
        sink.kpis(kpis)
    sink.close()
    return sink
