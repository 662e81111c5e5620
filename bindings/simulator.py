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

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from usher.core.codes import Mode, Outcome, Power, Reason
from usher.scenario import (
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
        scenario: the :class:`usher.scenario.Scenario` being run.
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
                 "tries", "fail", "extras", "first", "h", "role")


def _pctl(sorted_values, q):
    n = len(sorted_values)
    if n == 0:
        return 0.0
    return float(sorted_values[min(n - 1, int(math.ceil(q * n)) - 1)])


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
    return _Day(sc, power_policy, trace, keep_decisions, progress).run()


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

        # calendars
        sess_ev: dict = {}
        launch_q: dict = {}
        srv_ev: dict = {}

        def at(cal, tick, item):
            lst = cal.get(tick)
            if lst is None:
                cal[tick] = [item]
            else:
                lst.append(item)

        def at_srv(tick, item):
            at(srv_ev, tick, item)

        self._faults(np.random.default_rng([sc.day.seed, 29]), at_srv)

        # books
        books: dict = {}  # sid -> (visit, server)
        booked = np.zeros(n_srv, dtype=np.int64)
        k = dict(lost=0, lost_unbooked=0, mismatch=0, lost_relaunched=0, denied=0, retried=0,
                 failed=0, fresh=0, reconnect_missed=0, unexpected=0, no_user=0, requested=0,
                 boots=0, shutdowns=0, crashes=0, zone_outages=0)
        outcome_n = np.zeros(4, dtype=np.int64)
        reason_n = np.zeros(len(Reason), dtype=np.int64)
        on_since = np.full(n_srv, -np.inf)
        fresh_s = pw.fresh_boot_minutes * 60.0
        down = np.zeros(n_srv, dtype=bool)
        rid = [0]
        dec = {"id": [], "outcome": [], "reason": [], "server": [], "load_index": [], "session": []} \
            if self.keep else None

        def field_(name):
            return s.server_field(name)

        def view(now, want):
            return FleetView(now, field_("power"), field_("mode"), field_("sessions"), field_("pending"),
                             field_("load_index"), srv_max, srv_zone, srv_pool, down, want,
                             list(zones), list(POOLS), sc)

        # ---------------------------------------------------------- helpers
        def book(sid, v, srv, rname):
            books[sid] = (v, srv)
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

        def session_op(kind, sid, now, app=None):
            nonlocal engine_s, n_ops
            t0 = perf()
            if kind == E_LOGON:
                s.logon_complete(sid, now=now)
                op = "logon_done"
            elif kind == E_FAIL:
                s.launch_failed(sid, now=now)
                op = "launch_failed"
            elif kind == E_DISCONNECT:
                s.disconnect(sid, now=now)
                op = "disconnect"
            elif kind == E_CLOSE:
                ended = s.close_app(sid, app, now=now)
                op = "close_app"
            else:
                s.logoff(sid, now=now)
                op = "logoff"
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                line = {"t": now, "op": op, "session": sname_of[sid]}
                if kind == E_CLOSE:
                    line["app"] = app
                trace.append(line)
            return ended if kind == E_CLOSE else None

        def finish(v, now):
            for sid in v.extras:
                if sid in books:
                    session_op(E_END, sid, now)
                    unbook(sid)
            v.extras = []
            v.gen += 1
            release(v)

        def schedule_session(v, now_tick, rname, first):
            """Events of a freshly placed session."""
            a = v.a
            g = v.gen
            sid = v.sid
            if v.fail:
                v.fail = False
                at(sess_ev, now_tick + ss.failure_detect_seconds, (E_FAIL, v, g, sid))
                return
            if self.a_logon[a] == 0 and first:
                warm.append(sid)
            else:
                at(sess_ev, now_tick + max(1, self.a_logon[a]), (E_LOGON, v, g, sid))
            if first:
                if self.a_second[a] and self.a_t_second[a] < v.end:
                    at(launch_q, self.a_t_second[a], (v, g, L_SECOND))
                    if self.a_close[a] and self.a_t_close[a] < v.end:
                        at(sess_ev, self.a_t_close[a], (E_CLOSE, v, g, sid))
                if self.a_disc[a] and self.a_t_disc[a] < v.end:
                    at(sess_ev, self.a_t_disc[a], (E_DISCONNECT, v, g, sid))
                    if self.a_rec[a]:
                        at(launch_q, self.a_t_rec[a], (v, g, L_RECONNECT))
            if v.end < T:
                at(sess_ev, v.end, (E_END, v, g, sid))

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
                    back = now_tick + self.a_comeback[v.a]
                    if back < v.end and back < T:
                        at(launch_q, back, (v, v.gen, L_NEW))
                        k["lost_relaunched"] += 1
                    else:
                        finish(v, now)
                elif sid in v.extras:
                    v.extras.remove(sid)

        def server_off(i, now_tick, now):
            """Power a server off (fault or end of shutdown), checking the books."""
            nonlocal engine_s, n_ops
            expected = int(booked[i])
            t0 = perf()
            lost = s.set_power(int(i), "off", now=now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace.append({"t": now, "op": "power", "server": srv_names[i], "state": "off"})
            if len(lost) != expected:
                k["mismatch"] += 1
            lose(lost, now_tick, now)
            on_since[i] = -np.inf

        def set_power(i, state, now):
            nonlocal engine_s, n_ops
            t0 = perf()
            s.set_power(int(i), state, now=now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace.append({"t": now, "op": "power", "server": srv_names[i], "state": state})

        def set_mode(i, mode, now):
            nonlocal engine_s, n_ops
            t0 = perf()
            s.set_mode(int(i), mode, now=now)
            engine_s += perf() - t0
            n_ops += 1
            if tracing:
                trace.append({"t": now, "op": "mode", "server": srv_names[i], "mode": mode})

        def new_visit(a, tick):
            h = self.a_hosp[a]
            kind = self.a_kind[a]
            lists = idle[h]
            role = 1 if kind == K_IMAGING else 0
            pool = lists[role]
            if not pool and kind != K_IMAGING:
                role = 1
                pool = lists[1]
            if not pool:
                k["no_user"] += 1
                return None
            j = int(self.a_pick[a] * len(pool))
            u = pool[j]
            pool[j] = pool[-1]
            pool.pop()
            v = _Visit()
            v.a, v.user, v.uname, v.kind, v.h, v.role = a, u, user_names[u], kind, h, role
            v.app = APP_PACS if kind == K_IMAGING else APP_RECORD
            v.ext = kind == K_EXTERNAL
            v.loc = None if v.ext else zones[self.a_loc[a]]
            v.ep = f"home-{u}" if v.ext else f"ws-{h:02d}-{self.a_ws[a]:04d}"
            v.end = self.a_end[a]
            v.gen, v.sid, v.tries, v.fail, v.extras, v.first = 0, -1, 0, self.a_fail[a], [], True
            k["requested"] += 1
            return v

        # ---------------------------------------------------------- launches
        def run_launches(reqs, tick, now):
            nonlocal engine_s, launch_s, n_ops
            n = len(reqs)
            apps, eps = [], []
            for v, _, kind in reqs:
                if kind == L_SECOND:
                    apps.append(APP_LABS)
                    eps.append(v.ep)
                elif kind == L_RECONNECT:
                    apps.append(v.app)
                    v.ep = f"home-{v.user}-2" if v.ext else f"ws-{v.h:02d}-{self.a_ws2[v.a]:04d}"
                    eps.append(v.ep)
                else:
                    apps.append(v.app)
                    eps.append(v.ep)
            rows = []
            if n >= sc.day.launch_batch_min:
                users = user_idx[[v.user for v, _, _ in reqs]]
                a_i = np.array([app_idx[a] for a in apps], dtype=np.int64)
                locs = [v.loc for v, _, _ in reqs]
                ext = np.array([v.ext for v, _, _ in reqs])
                t0 = perf()
                b = s.launch_many(users, a_i, locations=locs, endpoints=eps, external=ext, now=now)
                dt = perf() - t0
                rows = zip(b.outcome.tolist(), b.reason.tolist(), b.server.tolist(), b.session.tolist(),
                           b.load_index.tolist())
            else:
                t0 = perf()
                launch = s.launch
                out = []
                for (v, _, _), app, ep in zip(reqs, apps, eps):
                    d = launch(v.uname, app, v.loc, ep, v.ext, now)
                    out.append((d.outcome_code, d.reason_code, d.server_index, d.session_id, d.load_index_value))
                dt = perf() - t0
                rows = out
            engine_s += dt
            launch_s += dt
            n_ops += n
            for (v, _, kind), app, ep, (oc, rc, srv, sid, li) in zip(reqs, apps, eps, rows):
                outcome_n[oc] += 1
                reason_n[rc] += 1
                rname = None
                if naming:
                    rid[0] += 1
                    rname = f"r{rid[0]}"
                if tracing:
                    trace.append({"t": now, "op": "launch", "id": rname, "user": v.uname, "app": app,
                                  "location": v.loc, "endpoint": ep, "external": v.ext})
                if dec is not None:
                    dec["id"].append(rname)
                    dec["outcome"].append(oc)
                    dec["reason"].append(rc)
                    dec["server"].append(srv)
                    dec["load_index"].append(li)
                    dec["session"].append(rname if oc == PLACED else sname_of.get(sid))
                if kind == L_NEW:
                    if oc == PLACED:
                        if now - on_since[srv] < fresh_s:
                            k["fresh"] += 1
                        v.sid = sid
                        book(sid, v, srv, rname)
                        v.gen += 1
                        schedule_session(v, tick, rname, v.first)
                        v.first = False
                    elif oc == REJECTED:
                        if v.tries < ss.max_retries and tick + ss.retry_after_seconds < min(v.end, T):
                            v.tries += 1
                            k["retried"] += 1
                            at(launch_q, tick + ss.retry_after_seconds, (v, v.gen, L_NEW))
                        else:
                            k["denied"] += 1
                            finish(v, now)
                    else:  # the user already had a session: not in this model's books
                        k["unexpected"] += 1
                        finish(v, now)
                elif kind == L_SECOND:
                    if oc == PLACED:  # not shared: a second session of the visit
                        book(sid, v, srv, rname)
                        v.extras.append(sid)
                        at(sess_ev, tick + max(1, self.a_logon[v.a]), (E_LOGON, v, v.gen, sid))
                    elif oc != SHARED and oc != REJECTED:
                        k["unexpected"] += 1
                else:  # L_RECONNECT
                    if oc == PLACED:  # the old session could not be resumed
                        k["reconnect_missed"] += 1
                        old = v.sid
                        if old in books:
                            session_op(E_END, old, now)
                            unbook(old)
                        v.sid = sid
                        book(sid, v, srv, rname)
                        at(sess_ev, tick + max(1, self.a_logon[v.a]), (E_LOGON, v, v.gen, sid))
                    elif oc == REJECTED:
                        k["reconnect_missed"] += 1

        # ---------------------------------------------------------- sampling
        S = sc.day.sample_seconds
        n_samples = (T + S - 1) // S
        ser = {c: np.zeros(n_samples) for c in SERIES_COLUMNS}
        zser = {z: {c: np.zeros(n_samples) for c in ZONE_COLUMNS[2:]} for z in zones}
        main_pool = srv_pool == 0  # imbalance is measured on the patient-record pool
        imaging_f = np.where(srv_pool == 1, tel.imaging_cpu_factor, 1.0)
        tel_rng = np.random.default_rng([sc.day.seed, 31])
        cpu_now = np.zeros(n_srv)
        last_counts = np.zeros(4 + len(Reason), dtype=np.int64)
        last_lost = [0, 0]
        server_hours = 0.0
        energy_j = 0.0

        def tick_of(now):
            return min(int(now), len(self.target) - 1)

        def sample(j, now):
            nonlocal engine_s, n_ops, server_hours, energy_j
            power = field_("power")
            sessions = field_("sessions")
            pending = field_("pending")
            powered = power != OFF
            idx = np.nonzero(powered)[0]
            if len(idx):
                ses_p = sessions[idx]
                pen_p = pending[idx]
                m = len(idx)
                cpu = tel.cpu_idle + tel.cpu_per_session * ses_p * imaging_f[idx] + tel.cpu_per_logon * pen_p \
                    + tel.cpu_noise * tel_rng.standard_normal(m)
                mem = tel.mem_base + tel.mem_per_session * ses_p + tel.mem_per_logon * pen_p \
                    + tel.mem_noise * tel_rng.standard_normal(m)
                cpu = np.round(np.clip(cpu, 0.0, 100.0), 1)
                mem = np.round(np.clip(mem, 0.0, 100.0), 1)
                t0 = perf()
                s.telemetry_many(idx, cpu=cpu, mem=mem, now=now)
                engine_s += perf() - t0
                n_ops += m
                cpu_now[:] = 0.0
                cpu_now[idx] = cpu
                if tracing:
                    sel = trace_tel[idx]
                    for i, c, mm in zip(idx[sel].tolist(), cpu[sel].tolist(), mem[sel].tolist()):
                        trace.append({"t": now, "op": "telemetry", "server": srv_names[i], "cpu": c, "mem": mm})
            li = field_("load_index")
            on = power == ON
            n_on = int(on.sum())
            ser["t"][j] = now
            ser["target"][j] = self.target[tick_of(now)]
            ser["sessions"][j] = s.live_sessions
            ser["pending"][j] = int(pending.sum())
            ser["licences"][j] = s.licences_in_use
            ser["servers_on"][j] = n_on
            ser["servers_booting"][j] = int((power == BOOTING).sum())
            ser["servers_powered"][j] = len(idx)
            ser["capacity"][j] = int(srv_max[on].sum())
            cnt = np.concatenate([outcome_n, reason_n])
            d = cnt - last_counts
            last_counts[:] = cnt
            ser["placed"][j], ser["reconnected"][j], ser["shared"][j], ser["rejected"][j] = d[:4]
            ser["launches"][j] = d[:4].sum()
            for r in Reason:
                if r != Reason.NONE:
                    ser[f"rejected_{r}"][j] = d[4 + int(r)]
            ser["lost"][j] = k["lost"] - last_lost[0]
            ser["failed"][j] = k["failed"] - last_lost[1]
            last_lost[0], last_lost[1] = k["lost"], k["failed"]
            if n_on:
                so = np.sort(sessions[on])
                lo = np.sort(li[on])
                ser["sessions_max"][j] = so[-1]
                ser["sessions_p99"][j] = _pctl(so, 0.99)
                ser["sessions_mean"][j] = so.mean()
                ser["li_p50"][j] = _pctl(lo, 0.50)
                ser["li_p99"][j] = _pctl(lo, 0.99)
                ser["li_max"][j] = lo[-1]
                ser["li_mean"][j] = lo.mean()
                ser["pending_max"][j] = int(pending[on].max())
            watts = np.where(power == BOOTING, pw.watts_booting,
                             pw.watts_idle + (pw.watts_busy - pw.watts_idle) * cpu_now / 100.0)
            watts = float(watts[powered].sum())
            ser["watts"][j] = watts
            dt = min(S, T - now)
            server_hours += len(idx) * dt / 3600.0
            energy_j += watts * dt
            for z in range(nz):
                zon = on & (srv_zone == z)
                zs = zser[zones[z]]
                cnt_z = int(zon.sum())
                zs["servers_on"][j] = cnt_z
                if cnt_z:
                    so = np.sort(sessions[zon])
                    lo = np.sort(li[zon])
                    mean = so.mean()
                    zs["sessions"][j] = so.sum()
                    zs["sessions_mean"][j] = mean
                    zs["sessions_max"][j] = so[-1]
                    zs["sessions_p99"][j] = _pctl(so, 0.99)
                    zs["li_mean"][j] = lo.mean()
                    zs["li_p99"][j] = _pctl(lo, 0.99)
                    zs["li_max"][j] = lo[-1]
                    rli = li[zon & main_pool]
                    rmean = rli.mean() if len(rli) else 0.0
                    zs["imbalance"][j] = rli.max() / rmean if rmean > 0 else np.nan
                else:
                    zs["imbalance"][j] = np.nan

        # ---------------------------------------------------------- power policy
        want = np.ones(n_srv, dtype=bool)

        def apply_power(tick, now, wish):
            nonlocal want
            if wish is not None:
                want = np.asarray(wish, dtype=bool).copy()
            power = field_("power")
            mode = field_("mode")
            for i in np.nonzero(want & (power == OFF) & ~down)[0].tolist():
                set_power(i, "booting", now)
                k["boots"] += 1
                if mode[i] != ENABLED:
                    set_mode(i, "enabled", now)
                at_srv(tick + pw.boot_seconds, (S_BOOTED, i))
            for i in np.nonzero(want & (power == ON) & (mode == DRAIN) & ~down)[0].tolist():
                set_mode(i, "enabled", now)
            for i in np.nonzero(~want & (power == ON) & (mode == ENABLED))[0].tolist():
                set_mode(i, "drain", now)
            sessions = field_("sessions")
            for i in np.nonzero(~want & (power == ON) & (mode == DRAIN) & (sessions == 0))[0].tolist():
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
        a_ptr = 0
        warm: list = []
        counts = self.counts.tolist()
        n_warm = self.n_warm
        pending_v = field_("pending")
        prog_every = max(1, T // 200)
        interval = self.policy.interval_seconds
        boot_policy = self.policy
        for tick in range(T):
            now = float(tick)
            # 1. server events
            evs = srv_ev.pop(tick, None)
            if evs:
                for kind, i in evs:
                    power = field_("power")
                    if kind == S_BOOTED:
                        if power[i] == BOOTING and not down[i]:
                            set_power(i, "on", now)
                            on_since[i] = now
                    elif kind == S_OFF:
                        if power[i] == SHUTTING_DOWN:
                            server_off(i, tick, now)
                            if field_("mode")[i] != ENABLED:
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
                            if field_("power")[m] != OFF:
                                server_off(m, tick, now)
                            if field_("mode")[m] != ENABLED:
                                set_mode(m, "enabled", now)
                            down[m] = True
                            at_srv(back, (S_RECOVER, m))
                    elif kind == S_RECOVER:
                        down[i] = False
            # 2. session events
            evs = sess_ev.pop(tick, None)
            if evs:
                for kind, v, g, sid in evs:
                    if v.gen != g or (kind != E_END and sid not in books):
                        continue
                    if kind == E_LOGON:
                        session_op(E_LOGON, sid, now)
                    elif kind == E_FAIL:
                        session_op(E_FAIL, sid, now)
                        unbook(sid)
                        k["failed"] += 1
                        v.sid = -1
                        if v.tries < ss.max_retries and tick + ss.retry_after_seconds < min(v.end, T):
                            v.tries += 1
                            k["retried"] += 1
                            v.gen += 1
                            at(launch_q, tick + ss.retry_after_seconds, (v, v.gen, L_NEW))
                        else:
                            k["denied"] += 1
                            finish(v, now)
                    elif kind == E_DISCONNECT:
                        session_op(E_DISCONNECT, sid, now)
                    elif kind == E_CLOSE:
                        if session_op(E_CLOSE, sid, now, APP_LABS):
                            unbook(sid)
                    else:  # E_END: the visit is over
                        for x in [v.sid, *v.extras]:
                            if x in books:
                                session_op(E_END, x, now)
                                unbook(x)
                        v.extras = []
                        v.sid = -1
                        v.gen += 1
                        release(v)
            # 3. power policy
            if tick >= next_policy:
                apply_power(tick, now, boot_policy.plan(view(now, want)) if tick else want)
                next_policy = tick + interval
            # 4. launches
            reqs = launch_q.pop(tick, None)
            if reqs:
                reqs = [r for r in reqs if r[0].gen == r[1]]
            c = counts[tick]
            if c:
                reqs = reqs or []
                for a in range(a_ptr, a_ptr + c):
                    v = new_visit(a, tick)
                    if v is not None:
                        reqs.append((v, v.gen, L_NEW))
                a_ptr += c
            if reqs:
                run_launches(reqs, tick, now)
                if warm:  # warm start: the sessions open at midnight are established
                    for sid in warm:
                        session_op(E_LOGON, sid, now)
                    warm.clear()
                pending_v = field_("pending")
                pm = int(pending_v.max()) if len(pending_v) else 0
                if pm > pend_peak:
                    pend_peak, pend_peak_t, pend_peak_srv = pm, now, int(pending_v.argmax())
                live = s.live_sessions
                if live > peak:
                    peak, peak_t = live, tick
                lic = s.licences_in_use
                if lic > lic_peak:
                    lic_peak = lic
            # 5. telemetry and the KPI sample
            if tick % S == 0:
                sample(tick // S, now)
                if tracing:
                    trace.maybe_flush()
            if self.progress is not None and tick % prog_every == 0:
                self.progress(tick, T)
        wall = perf() - t_start
        if self.progress is not None:
            self.progress(T, T)

        # ---------------------------------------------------------- the books at the end
        sessions = field_("sessions")
        if not np.array_equal(sessions, booked) or len(books) != s.live_sessions:
            k["mismatch"] += 1
        self.k = k
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
