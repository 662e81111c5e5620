"""The day loop of ``usher simulate``: a hospital group's day through ``usher.Scheduler``.

Design: the loop is event-driven over logical time in 1-second ticks. Events are
kept in per-tick buckets (a calendar queue: a dict from tick to a list, in the
order they were scheduled), which is cheaper than a heap for ~10^5-10^6 events
on a fixed grid. Each tick applies, in this order:

1. server events: boots that finish, shutdowns that finish, faults (crash,
   zone outage) and recoveries;
2. session events: logons that complete or fail, disconnects, apps that close,
   sessions that end (in the order they were scheduled);
3. the power policy (every ``power.policy_interval_seconds``);
4. the launches of the tick (new logons, retries, second apps, reconnects,
   users coming back after a lost session), placed by ``Scheduler.launch_many``
   when the tick holds at least ``day.launch_batch_min`` of them (a storm), else
   one by one: measured on this engine, launch_many costs ~40 us per call plus
   ~1.2 us per row against ~1.9 us for one launch(), so batching only pays for
   large ticks;
5. every ``day.sample_seconds``: telemetry for every powered server through one
   ``telemetry_many`` call, then a KPI sample (the time series rows).

Speed: the loop is one function with the hot paths inline (new visits, the
launches and their consequences, the session events) and reads the engine's
server columns through live read-only views taken once (``server_field`` is a
view, and the simulator never adds a server). The per-sample arithmetic over the
fleet (telemetry values, watts, sums, maxima and percentiles, fleet-wide and per
zone) and the power policy's index lists are small numba kernels
(``_telemetry_rows``, ``_fleet_stats``, ``_power_moves``) that do exactly what the
numpy expressions did (same float operations in the same order, integers
otherwise; tests/test_simulator.py checks them against numpy), so a seed gives the
same day bit for bit. The cyclic garbage collector is paused during the day (its
~10^6 events and visits hold no cycles).

Every decision comes from the one engine; the simulator never decides a
placement itself. Every operation it applies can be written as a trace line
(docs/TRACE_FORMAT.md), in the order applied, so ``usher replay`` of the trace
reproduces the same decisions.

Books: the simulator keeps its own ledger of live sessions (session id ->
visit, server). A fault checks that the engine's lost sessions are exactly the
booked ones on that server; at the end the ledger must equal the engine's
sessions server by server. Mismatches are reported as KPIs (``books.*``), never
hidden.

Power is a pluggable policy (:class:`PowerPolicy`): every interval it is shown
the fleet (:class:`FleetView`) and answers which servers it wants powered. The
loop carries the wish out: an off server boots (``booting`` for
``power.boot_seconds``, then ``on``), an unwanted server is drained, and shut
down (``shutting_down`` for ``power.shutdown_seconds``, then ``off``) once empty.
"""

from __future__ import annotations

import gc
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from numba import njit

from usher.core.codes import Mode, Outcome, Power, Reason
from usher.core import state as st
from usher.core.kernels import _numba_cache_in, cache_dir
from usher.sim.scenario import (
    APP_LABS,
    APP_PACS,
    APP_RECORD,
    POOLS,
    Scenario,
    build_scheduler,
    clock_seconds,
    clock_text,
    demand_curves,
    fleet_layout,
    fleet_ops,
)

__all__ = [
    "PowerPolicy",
    "FixedSchedule",
    "FleetView",
    "DayResult",
    "TraceWriter",
    "simulate_day",
    "SERIES_COLUMNS",
    "ZONE_COLUMNS",
]

PLACED, RECONNECTED, SHARED, REJECTED = (int(Outcome.PLACED), int(Outcome.RECONNECTED),
                                         int(Outcome.SHARED), int(Outcome.REJECTED))
OFF, BOOTING, ON, SHUTTING_DOWN = int(Power.OFF), int(Power.BOOTING), int(Power.ON), int(Power.SHUTTING_DOWN)
ENABLED, DRAIN = int(Mode.ENABLED), int(Mode.DRAIN)
REASONS = [str(r) for r in Reason if r != Reason.NONE]

# launch kinds
L_NEW, L_SECOND, L_RECONNECT = 0, 1, 2
# session event kinds
E_LOGON, E_FAIL, E_DISCONNECT, E_CLOSE, E_END = 0, 1, 2, 3, 4
# server event kinds
S_BOOTED, S_OFF, S_CRASH, S_ZONE_DARK, S_RECOVER = 0, 1, 2, 3, 4
# visit kinds
K_RECORDS, K_IMAGING, K_EXTERNAL = 0, 1, 2


# ---------------------------------------------------------------- power
@dataclass
class FleetView:
    """What a power policy sees. Arrays are read-only views of shape (n_servers,)
    (index = server index), valid during the call only.

    Attributes:
        now: seconds since midnight.
        power, mode: codes of :class:`usher.Power` / :class:`usher.Mode`.
        sessions, pending, load_index, max_sessions: int64, from the engine.
        zone, pool: int64 indices into ``zone_names`` / ``pool_names``.
        down: bool, True while a fault keeps the server off (wishes are ignored).
        want_on: bool, the policy's previous answer.
        scenario: the :class:`usher.sim.scenario.Scenario` being run.
    """

    now: float
    power: np.ndarray
    mode: np.ndarray
    sessions: np.ndarray
    pending: np.ndarray
    load_index: np.ndarray
    max_sessions: np.ndarray
    zone: np.ndarray
    pool: np.ndarray
    down: np.ndarray
    want_on: np.ndarray
    zone_names: list
    pool_names: list
    scenario: Scenario


@runtime_checkable
class PowerPolicy(Protocol):
    """Decides which servers should be powered; the simulator carries it out.

    ``interval_seconds``: how often ``plan`` is called. ``initial(view)`` is called
    once at 00:00 (after the fleet is built) and returns the servers wanted on
    now; ``plan(view)`` returns a bool array of shape (n_servers,) (True = wanted
    powered) or None for "no change". Wanted on: an ``off`` server boots, a
    draining one is enabled again. Not wanted: an ``on`` server is drained and
    shut down once it holds no session. Servers that a fault keeps down are left
    alone whatever the answer.
    """

    interval_seconds: int

    def initial(self, view: FleetView) -> np.ndarray: ...

    def plan(self, view: FleetView) -> np.ndarray | None: ...


class FixedSchedule:
    """The scenario's fixed schedule: the servers marked ``night_off`` (a share of
    each pool in each zone, ``power.night_off_*``) are wanted off from
    ``power.off_at`` to ``power.on_at``; every server is wanted on otherwise."""

    def __init__(self, scenario: Scenario, night_off: np.ndarray):
        self.interval_seconds = int(scenario.power.policy_interval_seconds)
        self.off_at = clock_seconds(scenario.power.off_at) % 86_400
        self.on_at = clock_seconds(scenario.power.on_at) % 86_400
        self.night_off = np.asarray(night_off, dtype=bool)

    def is_night(self, now: float) -> bool:
        t = now % 86_400
        if self.off_at <= self.on_at:
            return self.off_at <= t < self.on_at
        return t >= self.off_at or t < self.on_at

    def initial(self, view: FleetView) -> np.ndarray:
        return self.plan(view)

    def plan(self, view: FleetView) -> np.ndarray:
        if self.is_night(view.now):
            return ~self.night_off
        return np.ones(len(self.night_off), dtype=bool)


# ---------------------------------------------------------------- trace
class TraceWriter:
    """Writes the simulated day as a replay trace (JSON Lines, docs/TRACE_FORMAT.md).

    ``telemetry``: ``"rules"`` writes telemetry only for servers whose pool's load
    rules read cpu or memory (the only telemetry that can change a decision; the
    file stays ~10x smaller), ``"all"`` for every powered server.
    """

    def __init__(self, path_or_file, telemetry: str = "rules"):
        import msgspec

        if telemetry not in ("rules", "all"):
            raise ValueError("telemetry must be 'rules' or 'all'")
        self.telemetry = telemetry
        self._own = isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, "__fspath__")
        self._fh = open(path_or_file, "wb") if self._own else path_or_file
        self._enc = msgspec.json.Encoder()
        self._buf: list = []
        self.lines = 0
        self.append = self._buf.append

    def flush(self):
        if self._buf:
            data = self._enc.encode_lines(self._buf)
            if hasattr(self._fh, "encoding"):  # a text file
                self._fh.write(data.decode())
            else:
                self._fh.write(data)
            self.lines += len(self._buf)
            self._buf.clear()

    def maybe_flush(self):
        if len(self._buf) >= 65_536:
            self.flush()

    def close(self):
        self.flush()
        if self._own:
            self._fh.close()


# ---------------------------------------------------------------- results
SERIES_COLUMNS = (
    "t", "sessions", "pending", "licences", "servers_on", "servers_booting", "servers_powered",
    "capacity", "launches", "placed", "reconnected", "shared", "rejected",
    *[f"rejected_{r}" for r in REASONS], "lost", "failed",
    "sessions_max", "sessions_p99", "sessions_mean", "li_p50", "li_p99", "li_max", "li_mean",
    "pending_max", "watts", "target",
)
ZONE_COLUMNS = ("t", "zone", "servers_on", "sessions", "sessions_mean", "sessions_max",
                "sessions_p99", "li_mean", "li_p99", "li_max", "imbalance")


@dataclass
class DayResult:
    """A simulated day.

    Attributes:
        kpis: flat dict of KPIs (keys documented in docs/SCENARIOS.md).
        series: dict column -> ndarray of shape (n_samples,), columns SERIES_COLUMNS.
        zones: dict zone -> dict column -> ndarray (n_samples,), columns ZONE_COLUMNS[2:].
        decisions: when asked for, dict of arrays over every launch in order:
            ``id`` (str), ``outcome``, ``reason``, ``server``, ``load_index`` (int codes /
            indices, -1 = none), ``session`` (str: id of the launch that created it, or None).
        scheduler: the engine at the end of the day.
    """

    kpis: dict
    series: dict
    zones: dict
    scenario: Scenario
    decisions: dict | None = None
    scheduler: object = None
    server_names: list = field(default_factory=list)
    #: (start, end, label) of each fault, in seconds of the day
    fault_windows: list = field(default_factory=list)


class _Visit:
    """One user's stay: from the first launch to the planned logoff."""

    __slots__ = ("a", "user", "uname", "kind", "app", "loc", "ext", "ep", "end", "gen", "sid",
                 "tries", "fail", "extras", "first", "h", "role", "labs")


def _pctl(sorted_values, q):
    n = len(sorted_values)
    if n == 0:
        return 0.0
    return float(sorted_values[min(n - 1, int(math.ceil(q * n)) - 1)])


# ---------------------------------------------------------------- sample statistics
#: layout of the int64 row that :func:`_fleet_stats` fills (then per zone: _Z_* at 12 + 10 z)
(_N_ON, _PEND_SUM, _PEND_MAX_ON, _CAPACITY, _S_MAX, _S_P99, _S_SUM, _L_P50, _L_P99, _L_MAX, _L_SUM,
 _PEND_MAX) = range(12)
(_Z_N, _Z_S_SUM, _Z_S_MAX, _Z_S_P99, _Z_L_SUM, _Z_L_P99, _Z_L_MAX, _Z_M_N, _Z_M_SUM, _Z_M_MAX) = range(10)
_STATS_HEAD, _STATS_ZONE = 12, 10


# the kernels below cache where the engine's do (never next to the installed module,
# where a folder left by an uninstall would shadow a later editable install)
_cache = _numba_cache_in(cache_dir())
_cache.__enter__()


@njit(cache=True, nogil=True)
def _pctl_index(n, q):  # as _pctl: index of the q-quantile among n sorted values
    return min(n - 1, int(math.ceil(q * n)) - 1)


@njit(cache=True, nogil=True)
def _kth(values, k):
    """values[k] once sorted (ascending), values unchanged: the (n - k) largest are kept
    in a small sorted buffer, so a quantile near the top costs one pass."""
    n = values.shape[0]
    r = n - k
    buf = np.empty(r, np.int64)
    c = 0
    for i in range(n):
        x = values[i]
        if c < r:
            j = c
            while j > 0 and buf[j - 1] > x:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = x
            c += 1
        elif x > buf[0]:
            j = 1
            while j < r and buf[j] < x:
                buf[j - 1] = buf[j]
                j += 1
            buf[j - 1] = x
    return buf[0]


@njit(cache=True, nogil=True)
def _fleet_stats(power, sessions, li, pending, zone, main, max_sessions, nz, on_code, out):
    """Integer statistics of one KPI sample: counts, sums, maxima and the order
    statistics (as ``_pctl`` on the sorted values) of the servers that are on, fleet-wide
    and per zone. Integers only, so exactly what sorting and summing in numpy gives."""
    n = power.shape[0]
    out[:] = 0
    cnt = np.zeros(nz, np.int64)
    pend_max = 0
    for i in range(n):
        p = pending[i]
        out[_PEND_SUM] += p
        if p > pend_max:
            pend_max = p
        if power[i] == on_code:
            cnt[zone[i]] += 1
    out[_PEND_MAX] = pend_max
    n_on = 0
    for z in range(nz):
        n_on += cnt[z]
    out[_N_ON] = n_on
    if n_on == 0:
        return
    start = np.zeros(nz + 1, np.int64)
    for z in range(nz):
        start[z + 1] = start[z] + cnt[z]
    fill = start[:nz].copy()
    ses = np.empty(n_on, np.int64)  # grouped by zone
    lis = np.empty(n_on, np.int64)
    pend_on = 0
    cap = 0
    for i in range(n):
        if power[i] == on_code:
            z = zone[i]
            k = fill[z]
            fill[z] = k + 1
            s = sessions[i]
            x = li[i]
            ses[k] = s
            lis[k] = x
            if pending[i] > pend_on:
                pend_on = pending[i]
            cap += max_sessions[i]
            b = _STATS_HEAD + _STATS_ZONE * z
            out[b + _Z_S_SUM] += s
            out[b + _Z_L_SUM] += x
            if k == start[z] or s > out[b + _Z_S_MAX]:
                out[b + _Z_S_MAX] = s
            if k == start[z] or x > out[b + _Z_L_MAX]:
                out[b + _Z_L_MAX] = x
            if main[i]:
                out[b + _Z_M_N] += 1
                out[b + _Z_M_SUM] += x
                if out[b + _Z_M_N] == 1 or x > out[b + _Z_M_MAX]:
                    out[b + _Z_M_MAX] = x
    out[_PEND_MAX_ON] = pend_on
    out[_CAPACITY] = cap
    for z in range(nz):
        a, e = start[z], start[z + 1]
        b = _STATS_HEAD + _STATS_ZONE * z
        out[b + _Z_N] = e - a
        if e > a:
            k99 = _pctl_index(e - a, 0.99)
            out[b + _Z_S_P99] = _kth(ses[a:e], k99)
            out[b + _Z_L_P99] = _kth(lis[a:e], k99)
            out[_S_SUM] += out[b + _Z_S_SUM]
            out[_L_SUM] += out[b + _Z_L_SUM]
            if out[b + _Z_S_MAX] > out[_S_MAX]:
                out[_S_MAX] = out[b + _Z_S_MAX]
            if out[b + _Z_L_MAX] > out[_L_MAX]:
                out[_L_MAX] = out[b + _Z_L_MAX]
    k99 = _pctl_index(n_on, 0.99)
    out[_S_P99] = _kth(ses, k99)
    out[_L_P99] = _kth(lis, k99)
    k50 = _pctl_index(n_on, 0.50)
    out[_L_P50] = np.partition(lis, k50)[k50]


@njit(cache=True, nogil=True)
def _powered(power, off_code, idx):
    """Indices of the servers that are not off, into ``idx``; returns how many."""
    m = 0
    for i in range(power.shape[0]):
        if power[i] != off_code:
            idx[m] = i
            m += 1
    return m


@njit(cache=True, nogil=True)
def _telemetry_rows(idx, power, sessions, pending, factor, coef, noise, boot_code, w, cpu, mem, watts):
    """The telemetry of the powered servers ``idx``, element by element as numpy does
    it (same operations in the same order, no fused multiply-add):
    ``round(clip(idle + per_session * sessions * factor + per_logon * pending
    + noise_sd * noise, 0, 100), 1)`` for cpu (``coef[0:4]``, normals ``noise[:m]``),
    likewise for mem (``coef[4:8]``, factor 1, ``noise[m:]``); and each server's
    watts (booting, or idle + span * cpu / 100). Returns how many are booting."""
    m = idx.shape[0]
    c_idle, c_ps, c_pl, c_sd, m_base, m_ps, m_pl, m_sd = (
        coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7])
    w_boot, w_idle, w_span = w[0], w[1], w[2]
    n_boot = 0
    for k in range(m):
        i = idx[k]
        s = float(sessions[i])
        p = float(pending[i])
        c = c_idle + c_ps * s * factor[i] + c_pl * p + c_sd * noise[k]
        c = c if c > 0.0 else 0.0  # np.clip: max then min, NaN aside
        c = c if c < 100.0 else 100.0
        c = np.rint(c * 10.0) / 10.0  # np.round(x, 1)
        x = m_base + m_ps * s + m_pl * p + m_sd * noise[m + k]
        x = x if x > 0.0 else 0.0
        x = x if x < 100.0 else 100.0
        mem[k] = np.rint(x * 10.0) / 10.0
        cpu[k] = c
        if power[i] == boot_code:
            watts[k] = w_boot
            n_boot += 1
        else:
            watts[k] = w_idle + w_span * c / 100.0
    return n_boot


@njit(cache=True, nogil=True)
def _power_moves(want, power, mode, down, sessions, out):
    """What the power policy's wish asks for, as index lists (ascending) in the rows
    of ``out``; returns their lengths. 0: off, wanted and not down -> boot; 1: on,
    wanted, draining and not down -> enable; 2: on, unwanted, enabled -> drain; 3: on,
    unwanted, draining or about to be (row 2) and empty -> shut down."""
    nb = ne = nd = ns = 0
    for i in range(power.shape[0]):
        p = power[i]
        if want[i]:
            if down[i]:
                continue
            if p == OFF:
                out[0, nb] = i
                nb += 1
            elif p == ON and mode[i] == DRAIN:
                out[1, ne] = i
                ne += 1
        elif p == ON:
            md = mode[i]
            if md == ENABLED:
                out[2, nd] = i
                nd += 1
            if (md == ENABLED or md == DRAIN) and sessions[i] == 0:
                out[3, ns] = i
                ns += 1
    return nb, ne, nd, ns


_cache.__exit__(None, None, None)


# ---------------------------------------------------------------- the day
def simulate_day(
    scenario: Scenario | None = None,
    *,
    power_policy: PowerPolicy | None = None,
    trace: TraceWriter | None = None,
    keep_decisions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DayResult:
    """Run one day of ``scenario`` (default: the embedded hospital day).

    Args:
        scenario: the day; its ``day.policy`` sets every pool's load balancing,
            ``day.seed`` seeds everything, ``faults.enabled`` switches faults on.
        power_policy: a :class:`PowerPolicy`; default :class:`FixedSchedule`.
        trace: a :class:`TraceWriter` to write the day as a replay trace.
        keep_decisions: keep every launch decision in ``DayResult.decisions``.
        progress: called as ``progress(seconds_done, seconds_total)`` now and then.
    """
    sc = (scenario or Scenario()).copy().validate()
    # The day allocates ~10^6 small objects (visits, events, trace lines) that live for
    # hours of simulated time and hold no reference cycles: the cyclic collector would
    # scan them again and again (~15 % of the run) and find nothing. Paused for the day.
    gc_on = gc.isenabled()
    gc.disable()
    try:
        return _Day(sc, power_policy, trace, keep_decisions, progress).run()
    finally:
        if gc_on:
            gc.enable()


class _Day:
    def __init__(self, sc, power_policy, trace, keep_decisions, progress):
        self.sc = sc
        self.trace = trace
        self.keep = keep_decisions
        self.progress = progress
        t0 = time.perf_counter()
        self.layout = fleet_layout(sc)
        ops = fleet_ops(sc, self.layout)
        self.s = build_scheduler(ops)
        if trace is not None:
            for op in ops:
                trace.append(op)
            trace.maybe_flush()
        self.build_seconds = time.perf_counter() - t0
        self.policy = power_policy or FixedSchedule(sc, self.layout.server_night_off)

    # ------------------------------------------------------------ presampling
    def _presample(self, rng):
        """Arrivals and everything about them that does not depend on the run."""
        sc, dm, ss = self.sc, self.sc.demand, self.sc.sessions
        T = sc.seconds
        target, hazard, lam = demand_curves(sc)
        self.target = target
        cum = np.concatenate([[0.0], np.cumsum(hazard[:-1])])  # integral of mu from 0 to k
        counts = rng.poisson(lam[:T])
        n0 = int(rng.poisson(target[0]))
        counts[0] += n0
        self.n_warm = n0
        tick = np.repeat(np.arange(T, dtype=np.int64), counts)
        A = len(tick)
        self.counts = counts
        e = rng.exponential(size=A)
        end = np.searchsorted(cum, cum[tick] + e)  # first k with cum[k] >= cum[start] + e
        logon = np.clip(np.round(ss.logon_median_seconds * np.exp(ss.logon_sigma * rng.standard_normal(A))),
                        ss.logon_min_seconds, ss.logon_max_seconds).astype(np.int64)
        logon = np.maximum(logon, 1)
        logon[:n0] = 0  # warm start: established overnight
        end = np.maximum(end, tick + logon + 30)
        end[end >= len(cum) - 1] = 1 << 40  # beyond the day
        day_start, day_end = clock_seconds(dm.day_starts), clock_seconds(dm.day_ends)
        tod = tick % 86_400
        ext_share = np.where((tod >= day_start) & (tod < day_end), dm.external_share_day, dm.external_share_night)
        u = rng.random(A)
        kind = np.where(u < dm.imaging_share, K_IMAGING,
                        np.where(u < dm.imaging_share + ext_share, K_EXTERNAL, K_RECORDS))
        lay = self.layout
        hosp = rng.choice(len(lay.hospital_weight), size=A, p=lay.hospital_weight)
        nz = len(sc.fleet.zones)
        loc = lay.hospital_zone[hosp].copy()
        visiting = (rng.random(A) < dm.visiting_share) & (nz > 1)
        loc[visiting] = (loc[visiting] + rng.integers(1, max(nz, 2), size=int(visiting.sum()))) % nz
        span = np.maximum(end - tick - logon, 30).astype(np.float64)
        span = np.minimum(span, 86_400 * 2.0)
        second = (rng.random(A) < ss.second_app_share) & (kind != K_IMAGING)
        t_second = tick + logon + np.maximum(1, (rng.uniform(0.05, 0.30, A) * span).astype(np.int64))
        close = second & (rng.random(A) < ss.second_app_close_share)
        t_close = tick + logon + np.maximum(2, (rng.uniform(0.35, 0.60, A) * span).astype(np.int64))
        t_close = np.maximum(t_close, t_second + 1)
        disc = rng.random(A) < ss.disconnect_share
        t_disc = tick + logon + np.maximum(2, (rng.uniform(0.40, 0.70, A) * span).astype(np.int64))
        t_disc = np.maximum(t_disc, t_second + 1)
        gap = np.round(ss.reconnect_gap_median_minutes * 60 * np.exp(0.6 * rng.standard_normal(A))).astype(np.int64)
        t_rec = t_disc + np.maximum(gap, 1)
        rec = disc & (rng.random(A) < ss.reconnect_share) & (t_rec < end - 30)
        self.a_tick, self.a_end, self.a_logon, self.a_kind, self.a_hosp, self.a_loc = (
            tick, end.tolist(), logon.tolist(), kind.tolist(), hosp.tolist(), loc.tolist())
        # what a visit launches and from where (the endpoint also needs the user)
        app_of = {K_RECORDS: APP_RECORD, K_IMAGING: APP_PACS, K_EXTERNAL: APP_RECORD}
        zones = sc.fleet.zones
        self.a_app = [app_of[x] for x in self.a_kind]
        self.a_ext = (kind == K_EXTERNAL).tolist()
        self.a_locname = [None if e else zones[z] for e, z in zip(self.a_ext, self.a_loc)]
        fail = rng.random(A) < ss.launch_failure_rate
        fail[:n0] = False
        self.a_fail = fail.tolist()
        self.a_second, self.a_t_second = second.tolist(), t_second.tolist()
        self.a_close, self.a_t_close = close.tolist(), t_close.tolist()
        self.a_disc, self.a_t_disc = disc.tolist(), t_disc.tolist()
        self.a_rec, self.a_t_rec = rec.tolist(), t_rec.tolist()
        W = max(1, ss.workstations_per_hospital)
        self.a_ws, self.a_ws2 = rng.integers(0, W, A).tolist(), rng.integers(0, W, A).tolist()
        self.a_pick = rng.random(A).tolist()
        self.a_comeback = np.maximum(
            1, np.round(ss.comeback_median_seconds * np.exp(0.5 * rng.standard_normal(A)))).astype(np.int64).tolist()

    def _faults(self, rng, at):
        fl, sc = self.sc.faults, self.sc
        self.fault_windows = []
        if not fl.enabled:
            return
        lo, hi = (clock_seconds(x) for x in fl.crash_window)
        n = self.layout.server_names
        if fl.server_crashes > 0 and hi > lo:
            when = np.sort(rng.integers(int(lo), int(hi), fl.server_crashes))
            # crash a records server that is on in the day (not one of the night set)
            cands = np.nonzero(~self.layout.server_night_off)[0]
            who = rng.choice(cands, size=fl.server_crashes, replace=False)
            for w, i in zip(when.tolist(), who.tolist()):
                if w < sc.seconds:
                    at(w, (S_CRASH, i))
                    self.fault_windows.append((w, w + fl.reboot_minutes * 60, f"crash {n[i]}"))
        if fl.zone_outage:
            z = sc.fleet.zones.index(fl.zone_outage)
            w = int(clock_seconds(fl.zone_outage_at))
            if w < sc.seconds:
                at(w, (S_ZONE_DARK, z))
                self.fault_windows.append((w, w + fl.zone_outage_minutes * 60, f"{fl.zone_outage} dark"))

    # ------------------------------------------------------------ run
    def run(self) -> DayResult:  # noqa: C901 - the loop is one piece on purpose
        sc, s, lay, trace = self.sc, self.s, self.layout, self.trace
        ss, pw, tel = sc.sessions, sc.power, sc.telemetry
        rng = np.random.default_rng([sc.day.seed, 23])
        self._presample(rng)
        T = sc.seconds
        n_srv = len(lay.server_names)
        zones = sc.fleet.zones
        nz = len(zones)
        srv_names = lay.server_names
        srv_zone, srv_pool, srv_max = lay.server_zone, lay.server_pool, lay.server_max
        user_names = lay.user_names
        user_idx = s.user_indices(user_names)
        app_idx = {a: int(i) for a, i in zip((APP_RECORD, APP_LABS, APP_PACS),
                                             s.app_indices([APP_RECORD, APP_LABS, APP_PACS]))}
        sname_of: dict = {}  # session id -> id of the launch that created it (trace / decisions)
        tracing = trace is not None
        naming = tracing or self.keep
        trace_append = trace.append if tracing else None
        perf = time.perf_counter
        engine_s = 0.0
        launch_s = 0.0
        n_ops = 0

        # telemetry rows written to the trace
        pool_reads = []
        for p in POOLS:
            rules = s.pool_config(p)["load_rules"]
            pool_reads.append(any(str(r) in ("cpu", "memory") for r in rules))
        trace_tel = np.array([pool_reads[p] for p in srv_pool]) if tracing and trace.telemetry == "rules" \
            else np.ones(n_srv, dtype=bool)

        # idle users per hospital and role (0 clinical, 1 imaging)
        n_h = len(lay.hospital_weight)
        idle = [[[], []] for _ in range(n_h)]
        for u, (h, img) in enumerate(zip(lay.user_hospital.tolist(), lay.user_imaging.tolist())):
            idle[h][1 if img else 0].append(u)

        # calendars: tick -> list of items, in the order scheduled (a bucket is
        # popped when its tick is run; one made for a tick already run is never run)
        sess_ev: defaultdict = defaultdict(list)
        launch_q: defaultdict = defaultdict(list)
        srv_ev: defaultdict = defaultdict(list)

        def at_srv(tick, item):
            srv_ev[tick].append(item)

        self._faults(np.random.default_rng([sc.day.seed, 29]), at_srv)

        # the engine's server columns: live read-only views (no copy), read once
        # (the simulator never adds a server, so the table does not move; sample()
        # checks that)
        def field_(name):
            return s.server_field(name)

        power_v, mode_v, sessions_v, pending_v, li_v = (
            field_("power"), field_("mode"), field_("sessions"), field_("pending"), field_("load_index"))

        # the engine's header, read as Python ints (a memoryview index is far cheaper
        # than a numpy scalar): live sessions, licence holders, and the server table's
        # address and size, which check_views() compares with the day's start
        hdr = s.header_view()
        H_LIVE, H_HOLD, H_NSRV, H_SADDR = st.H_LIVE_SESSIONS, st.H_HOLDERS, st.H_N_SERVERS, st.H_SERVER_I_ADDR
        table_at = (hdr[H_SADDR], hdr[H_NSRV])
        pending_mv = memoryview(pending_v)

        def check_views():
            if (hdr[H_SADDR], hdr[H_NSRV]) != table_at:
                raise RuntimeError("the engine's server table moved during the day")

        # books
        books: dict = {}  # sid -> (visit, server)
        # sessions still launching: a user may disconnect (or a failure may be due) before
        # the logon completes, when a retry or a busy fleet delayed the placement
        launching: set = set()
        booked = [0] * n_srv
        k = dict(lost=0, lost_unbooked=0, mismatch=0, lost_relaunched=0, denied=0, retried=0,
                 failed=0, fresh=0, reconnect_missed=0, unexpected=0, no_user=0, requested=0,
                 boots=0, shutdowns=0, crashes=0, zone_outages=0)
        oc_n = [0] * 4
        rc_n = [0] * len(Reason)
        on_since = [-math.inf] * n_srv
        fresh_s = pw.fresh_boot_minutes * 60.0
        down = np.zeros(n_srv, dtype=bool)
        rid = 0
        dec = {"id": [], "outcome": [], "reason": [], "server": [], "load_index": [], "session": []} \
            if self.keep else None

        def view(now, want):
            return FleetView(now, power_v, mode_v, sessions_v, pending_v, li_v, srv_max, srv_zone, srv_pool,
                             down, want, list(zones), list(POOLS), sc)

        # presampled columns (lists: cheap to index)
        a_logon, a_end, a_kind, a_hosp = self.a_logon, self.a_end, self.a_kind, self.a_hosp
        a_app, a_ext, a_locname = self.a_app, self.a_ext, self.a_locname
        a_fail, a_ws, a_ws2, a_pick, a_comeback = self.a_fail, self.a_ws, self.a_ws2, self.a_pick, self.a_comeback
        a_second, a_t_second, a_close, a_t_close = self.a_second, self.a_t_second, self.a_close, self.a_t_close
        a_disc, a_t_disc, a_rec, a_t_rec = self.a_disc, self.a_t_disc, self.a_rec, self.a_t_rec
        max_retries, retry_after, fail_detect = ss.max_retries, ss.retry_after_seconds, ss.failure_detect_seconds
        batch_min = sc.day.launch_batch_min
        ep_names: dict = {}  # workstation endpoint strings, made once each
        ep_get = ep_names.get
        W = max(1, ss.workstations_per_hospital)

        def ws_name(h, w):
            key = h * W + w
            name = ep_get(key)
            if name is None:
                name = ep_names[key] = f"ws-{h:02d}-{w:04d}"
            return name

        # engine calls
        launch = s.launch
        logon_complete, launch_failed, disconnect, close_app, logoff = (
            s.logon_complete, s.launch_failed, s.disconnect, s.close_app, s.logoff)

        # ---------------------------------------------------------- helpers
        def book(sid, v, srv, rname):
            books[sid] = (v, srv)
            launching.add(sid)
            booked[srv] += 1
            if naming:
                sname_of[sid] = rname

        def unbook(sid):
            entry = books.pop(sid, None)
            if entry is not None:
                booked[entry[1]] -= 1
            return entry

        def release(v):
            idle[v.h][v.role].append(v.user)

        def session_call(method, op, sid, now):
            """One session operation on the engine, timed, counted and traced."""
            nonlocal engine_s, n_ops
            t0 = perf()
            out = method(sid, now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace_append({"t": now, "op": op, "session": sname_of[sid]})
            return out

        def end_session(sid, now):
            """logoff (the visit is over, or its old session is given up)."""
            session_call(logoff, "logoff", sid, now)

        def close_labs(sid, now):
            """The second app closes; True when that ended the session."""
            nonlocal engine_s, n_ops
            t0 = perf()
            ended = close_app(sid, APP_LABS, now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace_append({"t": now, "op": "close_app", "session": sname_of[sid], "app": APP_LABS})
            return ended

        def finish(v, now):
            for sid in v.extras:
                if sid in books:
                    end_session(sid, now)
                    unbook(sid)
            v.extras = []
            v.gen += 1
            release(v)

        def lose(lost, now_tick, now):
            """Sessions the engine reports lost (server off): off the books, users come back."""
            for sid in lost:
                k["lost"] += 1
                entry = unbook(sid)
                if entry is None:
                    k["lost_unbooked"] += 1
                    continue
                v = entry[0]
                if sid == v.sid:
                    v.sid = -1
                    v.gen += 1
                    back = now_tick + a_comeback[v.a]
                    if back < v.end and back < T:
                        launch_q[back].append((v, v.gen, L_NEW))
                        k["lost_relaunched"] += 1
                    else:
                        finish(v, now)
                elif sid in v.extras:
                    v.extras.remove(sid)

        def server_off(i, now_tick, now):
            """Power a server off (fault or end of shutdown), checking the books."""
            nonlocal engine_s, n_ops
            expected = booked[i]
            t0 = perf()
            lost = s.set_power(int(i), "off", now=now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace_append({"t": now, "op": "power", "server": srv_names[i], "state": "off"})
            if len(lost) != expected:
                k["mismatch"] += 1
            lose(lost, now_tick, now)
            on_since[i] = -math.inf

        def server_call(method, op, field, i, value, now):
            """One server-state call (power or mode), timed, counted and traced."""
            nonlocal engine_s, n_ops
            t0 = perf()
            method(int(i), value, now=now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace_append({"t": now, "op": op, "server": srv_names[i], field: value})

        def set_power(i, state, now):
            server_call(s.set_power, "power", "state", i, state, now)

        def set_mode(i, mode, now):
            server_call(s.set_mode, "mode", "mode", i, mode, now)

        def server_events(evs, tick, now):
            for kind, i in evs:
                if kind == S_BOOTED:
                    if power_v[i] == BOOTING and not down[i]:
                        set_power(i, "on", now)
                        on_since[i] = now
                elif kind == S_OFF:
                    if power_v[i] == SHUTTING_DOWN:
                        server_off(i, tick, now)
                        if mode_v[i] != ENABLED:
                            set_mode(i, "enabled", now)
                elif kind == S_CRASH or kind == S_ZONE_DARK:
                    members = [i] if kind == S_CRASH else np.nonzero(srv_zone == i)[0].tolist()
                    if kind == S_CRASH:
                        k["crashes"] += 1
                        back = tick + int(sc.faults.reboot_minutes * 60)
                    else:
                        k["zone_outages"] += 1
                        back = tick + int(sc.faults.zone_outage_minutes * 60)
                    for m in members:
                        if power_v[m] != OFF:
                            server_off(m, tick, now)
                        if mode_v[m] != ENABLED:
                            set_mode(m, "enabled", now)
                        down[m] = True
                        at_srv(back, (S_RECOVER, m))
                elif kind == S_RECOVER:
                    down[i] = False

        # ---------------------------------------------------------- sampling
        S = sc.day.sample_seconds
        n_samples = (T + S - 1) // S
        ser_rows: list = []  # one tuple per sample, columns SERIES_COLUMNS
        zone_rows: list = []  # one list per sample: nz tuples of ZONE_COLUMNS[2:]
        main_pool = srv_pool == 0  # imbalance is measured on the patient-record pool
        imaging_f = np.where(srv_pool == 1, tel.imaging_cpu_factor, 1.0)
        tel_rng = np.random.default_rng([sc.day.seed, 31])
        normal = tel_rng.standard_normal
        tel_coef = np.array([tel.cpu_idle, tel.cpu_per_session, tel.cpu_per_logon, tel.cpu_noise,
                             tel.mem_base, tel.mem_per_session, tel.mem_per_logon, tel.mem_noise], dtype=np.float64)
        tel_w = np.array([pw.watts_booting, pw.watts_idle, pw.watts_busy - pw.watts_idle], dtype=np.float64)
        idx_buf = np.zeros(n_srv, dtype=np.int64)
        cpu_buf, mem_buf, watts_buf = np.zeros(n_srv), np.zeros(n_srv), np.zeros(n_srv)
        telemetry_many = s.telemetry_many
        last_counts = [0] * (4 + len(Reason))
        last_lost = [0, 0]
        server_hours = 0.0
        energy_j = 0.0
        target = self.target
        reason_cols = [4 + int(r) for r in Reason if r != Reason.NONE]
        nan = math.nan
        zeros_z = (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, nan)
        st_zone = np.ascontiguousarray(srv_zone, dtype=np.int64)
        st_main = np.ascontiguousarray(main_pool, dtype=np.bool_)
        st_max = np.ascontiguousarray(srv_max, dtype=np.int64)
        st_out = np.zeros(_STATS_HEAD + _STATS_ZONE * nz, dtype=np.int64)
        zone_base = [_STATS_HEAD + _STATS_ZONE * z for z in range(nz)]

        def sample(j, now):
            nonlocal engine_s, n_ops, server_hours, energy_j
            check_views()
            power, sessions, pending, li = power_v, sessions_v, pending_v, li_v
            # telemetry for every powered server: the cpu normals, then the mem normals
            m = _powered(power, OFF, idx_buf)
            watts = 0.0
            n_boot = 0
            if m:
                idx, cpu, mem = idx_buf[:m], cpu_buf[:m], mem_buf[:m]
                n_boot = _telemetry_rows(idx, power, sessions, pending, imaging_f, tel_coef, normal(2 * m),
                                         BOOTING, tel_w, cpu, mem, watts_buf)
                t0 = perf()
                telemetry_many(idx, cpu=cpu, mem=mem, now=now)
                engine_s += perf() - t0
                n_ops += m
                if tracing:
                    sel = trace_tel[idx]
                    for i, c, mm in zip(idx[sel].tolist(), cpu[sel].tolist(), mem[sel].tolist()):
                        trace_append({"t": now, "op": "telemetry", "server": srv_names[i], "cpu": c, "mem": mm})
                watts = float(watts_buf[:m].sum())  # numpy's pairwise sum, as before
            # the fleet and its servers that are on (after the telemetry: load indexes)
            _fleet_stats(power, sessions, li, pending, st_zone, st_main, st_max, nz, ON, st_out)
            o = st_out.tolist()
            n_on = o[_N_ON]
            if n_on:
                stats = (o[_S_MAX], o[_S_P99], o[_S_SUM] / n_on, o[_L_P50], o[_L_P99], o[_L_MAX],
                         o[_L_SUM] / n_on, o[_PEND_MAX_ON])
                zrow = []
                for b in zone_base:
                    n_z = o[b + _Z_N]
                    if n_z:
                        m_n = o[b + _Z_M_N]
                        rmean = o[b + _Z_M_SUM] / m_n if m_n else 0.0
                        zrow.append((n_z, o[b + _Z_S_SUM], o[b + _Z_S_SUM] / n_z, o[b + _Z_S_MAX], o[b + _Z_S_P99],
                                     o[b + _Z_L_SUM] / n_z, o[b + _Z_L_P99], o[b + _Z_L_MAX],
                                     o[b + _Z_M_MAX] / rmean if rmean > 0 else nan))
                    else:
                        zrow.append(zeros_z)
            else:
                stats = (0, 0, 0, 0, 0, 0, 0, 0)
                zrow = [zeros_z] * nz
            cnt = oc_n + rc_n
            d = [x - y for x, y in zip(cnt, last_counts)]
            last_counts[:] = cnt
            lost, failed = k["lost"], k["failed"]
            ser_rows.append((
                now, hdr[H_LIVE], o[_PEND_SUM], hdr[H_HOLD], n_on, n_boot, m, o[_CAPACITY],
                d[0] + d[1] + d[2] + d[3], d[0], d[1], d[2], d[3],
                *[d[r] for r in reason_cols], lost - last_lost[0], failed - last_lost[1],
                *stats, watts, target[min(int(now), len(target) - 1)]))
            zone_rows.append(zrow)
            last_lost[0], last_lost[1] = lost, failed
            dt = min(S, T - now)
            server_hours += m * dt / 3600.0
            energy_j += watts * dt
            return o[_PEND_MAX]

        # ---------------------------------------------------------- power policy
        want = np.ones(n_srv, dtype=bool)

        moves = np.zeros((4, n_srv), dtype=np.int64)

        def apply_power(tick, now, wish):
            """Carry out the wish: boot, enable, drain, shut down (each list in index
            order, in this order; draining does not change who is empty)."""
            nonlocal want
            if wish is not None:
                want = np.asarray(wish, dtype=bool).copy()
            nb, ne, nd, ns = _power_moves(want, power_v, mode_v, down, sessions_v, moves)
            if nb:
                for i in moves[0, :nb].tolist():
                    set_power(i, "booting", now)
                    k["boots"] += 1
                    if mode_v[i] != ENABLED:
                        set_mode(i, "enabled", now)
                    at_srv(tick + pw.boot_seconds, (S_BOOTED, i))
            if ne:
                for i in moves[1, :ne].tolist():
                    set_mode(i, "enabled", now)
            if nd:
                for i in moves[2, :nd].tolist():
                    set_mode(i, "drain", now)
            if ns:
                for i in moves[3, :ns].tolist():
                    set_power(i, "shutting_down", now)
                    k["shutdowns"] += 1
                    at_srv(tick + pw.shutdown_seconds, (S_OFF, i))

        # initial wish: the fleet starts as fleet_ops built it; the policy may change it at once
        t_start = perf()
        wish0 = self.policy.initial(view(0.0, want))
        if wish0 is not None:
            want = np.asarray(wish0, dtype=bool).copy()
        next_policy = 0

        # ---------------------------------------------------------- the loop
        peak, peak_t = -1, 0
        lic_peak = 0
        pend_peak, pend_peak_t, pend_peak_srv = 0, 0.0, -1
        pend_full_scan = False
        a_ptr = 0
        n_requested = 0
        warm: list = []
        counts = self.counts.tolist()
        prog_every = max(1, T // 200)
        progress = self.progress
        next_prog = 0 if progress is not None else T
        next_sample = 0
        interval = self.policy.interval_seconds
        boot_policy = self.policy
        srv_pop, sess_pop, launch_pop = srv_ev.pop, sess_ev.pop, launch_q.pop
        books_pop = books.pop
        max_reduce = np.maximum.reduce
        for tick in range(T):
            now = float(tick)
            # 1. server events
            evs = srv_pop(tick, None)
            if evs:
                server_events(evs, tick, now)
            # 2. session events
            evs = sess_pop(tick, None)
            if evs:
                for kind, v, g, sid in evs:
                    if v.gen != g:
                        continue
                    if kind == E_LOGON:
                        if sid not in books or sid not in launching:
                            continue
                        launching.discard(sid)
                        session_call(logon_complete, "logon_done", sid, now)
                    elif kind == E_END:  # the visit is over
                        x = v.sid
                        if x in books:
                            end_session(x, now)
                            booked[books_pop(x)[1]] -= 1
                        if v.extras:  # rare: second sessions of the visit
                            for x in v.extras:
                                if x in books:
                                    end_session(x, now)
                                    unbook(x)
                            v.extras = []
                        v.sid = -1
                        v.gen += 1
                        idle[v.h][v.role].append(v.user)
                    elif sid not in books:
                        continue
                    elif kind == E_DISCONNECT:
                        launching.discard(sid)  # a later logon event finds it disconnected
                        session_call(disconnect, "disconnect", sid, now)
                    elif kind == E_CLOSE:
                        x = v.labs  # where the second app runs (none if it was refused)
                        if x < 0 or x not in books:
                            continue
                        v.labs = -1
                        if close_labs(x, now):
                            unbook(x)
                    elif sid not in launching:  # E_FAIL after a disconnect: it came up after all
                        continue
                    else:  # E_FAIL
                        launching.discard(sid)
                        session_call(launch_failed, "launch_failed", sid, now)
                        unbook(sid)
                        k["failed"] += 1
                        v.sid = -1
                        if v.tries < max_retries and tick + retry_after < min(v.end, T):
                            v.tries += 1
                            k["retried"] += 1
                            v.gen += 1
                            launch_q[tick + retry_after].append((v, v.gen, L_NEW))
                        else:
                            k["denied"] += 1
                            finish(v, now)
            # 3. power policy
            if tick >= next_policy:
                apply_power(tick, now, boot_policy.plan(view(now, want)) if tick else want)
                next_policy = tick + interval
            # 4. launches
            reqs = launch_pop(tick, None)
            if reqs:
                reqs = [r for r in reqs if r[0].gen == r[1]]
            c = counts[tick]
            if c:
                if reqs is None:
                    reqs = []
                for a in range(a_ptr, a_ptr + c):  # new visits: an idle user of the hospital
                    h = a_hosp[a]
                    kind = a_kind[a]
                    lists = idle[h]
                    role = 1 if kind == K_IMAGING else 0
                    pool = lists[role]
                    if not pool and kind != K_IMAGING:
                        role = 1
                        pool = lists[1]
                    if not pool:
                        k["no_user"] += 1
                        continue
                    j = int(a_pick[a] * len(pool))
                    u = pool[j]
                    pool[j] = pool[-1]
                    pool.pop()
                    v = _Visit()
                    v.a, v.user, v.uname, v.kind, v.h, v.role = a, u, user_names[u], kind, h, role
                    v.app, v.loc, v.end = a_app[a], a_locname[a], a_end[a]
                    if a_ext[a]:
                        v.ext, v.ep = True, f"home-{u}"
                    else:
                        w = a_ws[a]
                        ep = ep_get(h * W + w)
                        v.ext, v.ep = False, ep if ep is not None else ws_name(h, w)
                    v.gen, v.sid, v.tries, v.fail, v.extras, v.first = 0, -1, 0, a_fail[a], [], True
                    v.labs = -1  # the session the second app runs in, once it does
                    n_requested += 1
                    reqs.append((v, 0, L_NEW))
                a_ptr += c
            if reqs:
                # 4a. the decisions, all of them before any consequence is applied
                n = len(reqs)
                if n >= batch_min:
                    apps, eps = [], []
                    for v, _, kind in reqs:
                        if kind == L_SECOND:
                            apps.append(APP_LABS)
                        else:
                            apps.append(v.app)
                            if kind == L_RECONNECT:
                                v.ep = f"home-{v.user}-2" if v.ext else ws_name(v.h, a_ws2[v.a])
                        eps.append(v.ep)
                    users = user_idx[[r[0].user for r in reqs]]
                    a_i = np.array([app_idx[a] for a in apps], dtype=np.int64)
                    locs = [r[0].loc for r in reqs]
                    ext = np.array([r[0].ext for r in reqs])
                    t0 = perf()
                    b = s.launch_many(users, a_i, locations=locs, endpoints=eps, external=ext, now=now)
                    dt = perf() - t0
                    rows = list(zip(apps, eps, b.outcome.tolist(), b.reason.tolist(), b.server.tolist(),
                                    b.session.tolist(), b.load_index.tolist()))
                else:
                    rows = []
                    dt = 0.0
                    for v, _, kind in reqs:
                        if kind == L_SECOND:
                            app = APP_LABS
                        else:
                            app = v.app
                            if kind == L_RECONNECT:
                                v.ep = f"home-{v.user}-2" if v.ext else ws_name(v.h, a_ws2[v.a])
                        ep = v.ep
                        t0 = perf()
                        dd = launch(v.uname, app, v.loc, ep, v.ext, now)
                        dt += perf() - t0
                        rows.append((app, ep, dd.outcome_code, dd.reason_code, dd.server_index, dd.session_id,
                                     dd.load_index_value))
                engine_s += dt
                launch_s += dt
                n_ops += n
                placed = []  # servers given a new session (the only way pending grows)
                # the tick's launch lines go to the trace before any consequence (a logoff
                # of a denied visit's extra session, of a session a reconnect replaced):
                # the engine decided every launch of the tick first, and a replay must too
                rnames = None
                if naming:
                    rnames = []
                    for (v, _, _kind), (app, ep, *_rest) in zip(reqs, rows):
                        rid += 1
                        rname = f"r{rid}"
                        rnames.append(rname)
                        if tracing:
                            trace_append({"t": now, "op": "launch", "id": rname, "user": v.uname, "app": app,
                                          "location": v.loc, "endpoint": ep, "external": v.ext})
                # 4b. their consequences, in order
                for j, ((v, _, kind), (app, ep, oc, rc, srv, sid, li)) in enumerate(zip(reqs, rows)):
                    oc_n[oc] += 1
                    rc_n[rc] += 1
                    rname = None
                    if naming:
                        rname = rnames[j]
                        if dec is not None:
                            dec["id"].append(rname)
                            dec["outcome"].append(oc)
                            dec["reason"].append(rc)
                            dec["server"].append(srv)
                            dec["load_index"].append(li)
                            dec["session"].append(rname if oc == PLACED else sname_of.get(sid))
                    if kind == L_NEW:
                        if oc == PLACED:
                            placed.append(srv)
                            if now - on_since[srv] < fresh_s:
                                k["fresh"] += 1
                            v.sid = sid
                            books[sid] = (v, srv)
                            launching.add(sid)
                            booked[srv] += 1
                            if naming:
                                sname_of[sid] = rname
                            v.gen += 1
                            # the events of the freshly placed session
                            g = v.gen
                            a = v.a
                            if v.fail:
                                v.fail = False
                                sess_ev[tick + fail_detect].append((E_FAIL, v, g, sid))
                            else:
                                lg = a_logon[a]
                                if v.first:
                                    if lg == 0:
                                        warm.append(sid)
                                    else:
                                        sess_ev[tick + (lg if lg > 1 else 1)].append((E_LOGON, v, g, sid))
                                    end = v.end
                                    if a_second[a] and a_t_second[a] < end:
                                        launch_q[a_t_second[a]].append((v, g, L_SECOND))
                                        if a_close[a] and a_t_close[a] < end:
                                            sess_ev[a_t_close[a]].append((E_CLOSE, v, g, sid))
                                    if a_disc[a] and a_t_disc[a] < end:
                                        sess_ev[a_t_disc[a]].append((E_DISCONNECT, v, g, sid))
                                        if a_rec[a]:
                                            launch_q[a_t_rec[a]].append((v, g, L_RECONNECT))
                                else:
                                    sess_ev[tick + (lg if lg > 1 else 1)].append((E_LOGON, v, g, sid))
                                if v.end < T:
                                    sess_ev[v.end].append((E_END, v, g, sid))
                            v.first = False
                        elif oc == REJECTED:
                            if v.tries < max_retries and tick + retry_after < min(v.end, T):
                                v.tries += 1
                                k["retried"] += 1
                                launch_q[tick + retry_after].append((v, v.gen, L_NEW))
                            else:
                                k["denied"] += 1
                                finish(v, now)
                        else:  # the user already had a session: not in this model's books
                            k["unexpected"] += 1
                            finish(v, now)
                    elif kind == L_SECOND:
                        if oc != REJECTED:
                            v.labs = sid
                        if oc == PLACED:  # not shared: a second session of the visit
                            placed.append(srv)
                            book(sid, v, srv, rname)
                            v.extras.append(sid)
                            lg = a_logon[v.a]
                            sess_ev[tick + (lg if lg > 1 else 1)].append((E_LOGON, v, v.gen, sid))
                        elif oc != SHARED and oc != REJECTED:
                            k["unexpected"] += 1
                    else:  # L_RECONNECT
                        if oc == PLACED:  # the old session could not be resumed
                            placed.append(srv)
                            k["reconnect_missed"] += 1
                            old = v.sid
                            if old in books:
                                end_session(old, now)
                                unbook(old)
                            v.sid = sid
                            book(sid, v, srv, rname)
                            lg = a_logon[v.a]
                            sess_ev[tick + (lg if lg > 1 else 1)].append((E_LOGON, v, v.gen, sid))
                        elif oc == REJECTED:
                            k["reconnect_missed"] += 1
                if warm:  # warm start: the sessions open at midnight are established
                    for sid in warm:
                        launching.discard(sid)
                        session_call(logon_complete, "logon_done", sid, now)
                    warm.clear()
                # the most pending logons on a server after the tick's launches: only a
                # placed launch adds one (docs/SEMANTICS.md), so only those servers can top
                # the peak (sample() checks that no other server ever did)
                if pend_full_scan:
                    pm = int(max_reduce(pending_v)) if n_srv else 0
                elif placed:
                    pm = max(map(pending_mv.__getitem__, placed))
                else:
                    pm = 0
                if pm > pend_peak:
                    pend_peak, pend_peak_t, pend_peak_srv = pm, now, int(pending_v.argmax())
                live = hdr[H_LIVE]
                if live > peak:
                    peak, peak_t = live, tick
                lic = hdr[H_HOLD]
                if lic > lic_peak:
                    lic_peak = lic
            # 5. telemetry and the KPI sample
            if tick == next_sample:
                if sample(tick // S, now) > pend_peak and not pend_full_scan:
                    pend_full_scan = True  # pending grew without a placement: scan every tick
                next_sample = tick + S
                if tracing:
                    trace.maybe_flush()
            if tick == next_prog:
                progress(tick, T)
                next_prog = tick + prog_every
        wall = perf() - t_start
        if progress is not None:
            progress(T, T)
        k["requested"] = n_requested

        # ---------------------------------------------------------- the series
        ser_arr = np.array(ser_rows, dtype=np.float64).reshape(len(ser_rows), len(SERIES_COLUMNS))
        ser = {c: np.zeros(n_samples) for c in SERIES_COLUMNS}
        for col, c in enumerate(SERIES_COLUMNS):
            ser[c][: len(ser_rows)] = ser_arr[:, col]
        zcols = ZONE_COLUMNS[2:]
        zser = {z: {c: np.zeros(n_samples) for c in zcols} for z in zones}
        if zone_rows:
            zarr = np.array(zone_rows, dtype=np.float64)  # (samples, zones, columns)
            for zi, z in enumerate(zones):
                for col, c in enumerate(zcols):
                    zser[z][c][: len(zone_rows)] = zarr[:, zi, col]

        # ---------------------------------------------------------- the books at the end
        sessions = field_("sessions")
        if not np.array_equal(sessions, np.array(booked, dtype=np.int64)) or len(books) != s.live_sessions:
            k["mismatch"] += 1
        self.k = k
        outcome_n = np.array(oc_n, dtype=np.int64)
        reason_n = np.array(rc_n, dtype=np.int64)
        kpis = self._kpis(k, outcome_n, reason_n, ser, zser, peak, peak_t, lic_peak, pend_peak,
                          pend_peak_t, pend_peak_srv, server_hours, energy_j, engine_s, launch_s,
                          n_ops, wall)
        if tracing:
            trace.flush()
            kpis["trace.lines"] = trace.lines
        if dec is not None:
            dec = {key: (np.array(val) if key not in ("id", "session") else val) for key, val in dec.items()}
        return DayResult(kpis, ser, zser, sc, dec, s, list(srv_names), list(self.fault_windows))

    # ------------------------------------------------------------ KPIs
    def _kpis(self, k, outcome_n, reason_n, ser, zser, peak, peak_t, lic_peak, pend_peak, pend_peak_t,
              pend_peak_srv, server_hours, energy_j, engine_s, launch_s, n_ops, wall):
        sc, lay = self.sc, self.layout
        launches = int(outcome_n.sum())
        t = ser["t"]
        night = (t >= 0) & (t < 6 * 3600)
        kp = {
            "scenario.name": sc.name,
            "scenario.policy": sc.day.policy,
            "scenario.seed": sc.day.seed,
            "scenario.faults": bool(sc.faults.enabled),
            "scenario.hours": sc.day.hours,
            "scenario.servers": len(lay.server_names),
            "scenario.zones": len(sc.fleet.zones),
            "scenario.hospitals": sc.fleet.hospitals,
            "scenario.users": sc.fleet.users,
            "scenario.peak_target": sc.demand.peak_sessions,
            "launches.total": launches,
            "launches.placed": int(outcome_n[PLACED]),
            "launches.reconnected": int(outcome_n[RECONNECTED]),
            "launches.shared": int(outcome_n[SHARED]),
            "launches.rejected": int(outcome_n[REJECTED]),
        }
        for r in Reason:
            if r != Reason.NONE:
                kp[f"rejected.{r}"] = int(reason_n[int(r)])
        kp.update({
            "logons.requested": k["requested"],
            "logons.warm_start": self.n_warm,
            "logons.retried": k["retried"],
            "logons.failed": k["failed"],
            "logons.denied": k["denied"],
            "logons.no_idle_user": k["no_user"],
            "logons.on_fresh_server": k["fresh"],
            "sessions.peak": int(peak),
            "sessions.peak_time": clock_text(peak_t),
            "sessions.night_trough": int(ser["sessions"][night].min()) if night.any() else 0,
            "sessions.at_end": int(self.s.live_sessions),
            "sessions.lost": k["lost"],
            "sessions.lost_relaunched": k["lost_relaunched"],
            "sessions.reconnect_missed": k["reconnect_missed"],
            "licences.peak": int(lic_peak),
            "licences.cap": sc.fleet.licences,
        })
        jp = int(np.argmax(ser["sessions"])) if len(t) else 0
        kp.update({
            "servers.sessions_max": int(ser["sessions_max"].max()) if len(t) else 0,
            "servers.sessions_p99_peak": float(ser["sessions_p99"].max()) if len(t) else 0.0,
            "servers.sessions_mean_at_peak": round(float(ser["sessions_mean"][jp]), 2),
            "servers.load_index_max": int(ser["li_max"].max()) if len(t) else 0,
            "servers.load_index_p99_peak": float(ser["li_p99"].max()) if len(t) else 0.0,
            "servers.load_index_mean_at_peak": round(float(ser["li_mean"][jp]), 1),
            "servers.pending_max": int(pend_peak),
            "servers.pending_max_time": clock_text(pend_peak_t),
            "servers.pending_max_server": lay.server_names[pend_peak_srv] if pend_peak_srv >= 0 else None,
        })
        for z, zs in zser.items():
            imb = zs["imbalance"]
            busy = zs["li_mean"] >= 1000.0  # ignore the night, where a mean near 0 says nothing
            kp[f"zone.{z}.sessions_peak"] = int(zs["sessions"].max()) if len(t) else 0
            kp[f"zone.{z}.imbalance_at_peak"] = round(float(imb[jp]), 3) if np.isfinite(imb[jp]) else None
            kp[f"zone.{z}.imbalance_mean"] = round(float(np.nanmean(imb[busy])), 3) if busy.any() else None
            kp[f"zone.{z}.load_index_p99_peak"] = float(zs["li_p99"].max()) if len(t) else 0.0
        pw = sc.power
        kp.update({
            "power.server_hours": round(server_hours, 1),
            "power.energy_kwh": round(energy_j / 3.6e6, 1),
            "power.watts_idle": pw.watts_idle,
            "power.watts_busy": pw.watts_busy,
            "power.watts_booting": pw.watts_booting,
            "power.boots": k["boots"],
            "power.shutdowns": k["shutdowns"],
            "power.capacity_at_peak": int(ser["capacity"][jp]) if len(t) else 0,
            "faults.server_crashes": k["crashes"],
            "faults.zone_outages": k["zone_outages"],
            "books.lost_reported": k["lost"],
            "books.lost_unbooked": k["lost_unbooked"],
            "books.mismatch": k["mismatch"],
            "books.unexpected_decisions": k["unexpected"],
            "engine.seconds": round(engine_s, 4),
            "engine.launch_seconds": round(launch_s, 4),
            "engine.decisions": launches,
            "engine.us_per_decision": round(launch_s / launches * 1e6, 3) if launches else 0.0,
            "engine.ops": n_ops,
            "engine.us_per_op": round(engine_s / n_ops * 1e6, 3) if n_ops else 0.0,
            "run.build_seconds": round(self.build_seconds, 3),
            "run.loop_seconds": round(wall, 3),
            "run.wall_seconds": round(self.build_seconds + wall, 3),
        })
        return kp
