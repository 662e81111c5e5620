"""The day loop of ``usher simulate``: a hospital group's day through ``usher.Scheduler``.

Design: an event loop over logical time in 1-second ticks. The loop keeps the
clock and the calendar (:class:`usher.sim.calendar.Calendar`) and dispatches; the
handlers act. Each tick runs, in this order:

1. server events (:func:`usher.sim.handlers.server_events`): boots and shutdowns
   that finish, faults (crash, zone outage) and recoveries;
2. session events (:func:`usher.sim.handlers.session_events`): logons that
   complete or fail, disconnects, apps that close, visits that end;
3. the power policy, every ``interval_seconds``: a wish policy's wish
   (:func:`usher.sim.handlers.apply_power`) or an action policy's actions
   (:func:`usher.sim.handlers.apply_actions`), see :mod:`usher.planner.power`;
4. the launches of the tick (:func:`usher.sim.handlers.new_visits` for the new
   arrivals, then :func:`usher.sim.launches.launches`: decisions, then their
   consequences), and the running peaks;
5. every ``day.sample_seconds``: telemetry and a KPI sample
   (:class:`usher.sim.sample.Sampler`) handed to the day's metric sinks
   (:mod:`usher.sim.sinks`).

The day's mutable state is one :class:`DayState`; the engine is reached only
through :class:`usher.sim.calls.EngineCalls` (timed, counted, traced); the
simulator's own ledger of sessions is :class:`usher.sim.books.Books`. Every
decision comes from the one engine; every operation applied can be written as
a trace line, in the order applied, so ``usher replay`` of the trace reproduces
the same decisions.

Speed: the engine's server columns are read through live read-only views taken
once (``server_field`` is a view, and the simulator never adds a server; each
sample checks that the table did not move); the header (live sessions, licence
holders) through a memoryview of Python ints. The loop, the launches, the
session events and the new visits are compiled (sim/_events.pyx, the same steps
in the same order); the server events, the power policy and the samples, once
per interval or per event of a few hundred a day, are Python. The cyclic
garbage collector is paused during the day (its ~10^6 events and visits hold no
cycles).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from usher.core import state as st_layout
from usher.core.codes import Reason
from usher.planner.power import ActionPolicy, FixedSchedule, FleetView, PowerPolicy, is_action_policy
from usher.sim.books import Books
from usher.sim.calendar import Calendar
from usher.sim.calls import EngineCalls
from usher.sim.demand import Arrivals, fault_schedule, presample
from usher.sim.slow import slow_logons
from usher.sim._events import DayRefs, IdlePools, run_ticks, workstation
from usher.sim.handlers import apply_actions, apply_power, server_events
from usher.sim.kpis import day_kpis
from usher.sim.sample import Sampler
from usher.sim.scenario import APP_LABS, APP_PACS, APP_RECORD, FLEET_IMAGE, POOLS, Scenario, build_scheduler, \
    fleet_layout, fleet_ops, rollout_settings
from usher.sim.sinks import SERIES_COLUMNS, ZONE_COLUMNS, KpiSink, MetricSink, SeriesSink
from usher.sim.trace import TraceWriter

__all__ = ["simulate_day", "Day", "DayState", "DayResult", "SERIES_COLUMNS", "ZONE_COLUMNS"]

_TALLY = ("lost", "lost_unbooked", "mismatch", "lost_relaunched", "denied", "retried", "failed", "fresh",
          "reconnect_missed", "unexpected", "no_user", "requested", "boots", "shutdowns", "crashes", "zone_outages",
          "on_draining", "forced_logoffs", "refused", "marks")


#: launches per batch of a "settled" warm start (sessions.warm_start)
_SETTLE_BATCH = 16


@dataclass
class DayState:
    """What changes during the day (besides the engine, the books and the calendar).

    Attributes:
        tally: event counters (``lost``, ``denied``, ``boots``, ...; see ``_TALLY``).
        outcomes, reasons: launches per outcome code / rejection reason code.
        on_since: per server, when it last came on (-inf: not on).
        down: bool (n_servers,), True while a fault keeps the server off.
        want: bool (n_servers,), the power policy's current wish.
        idle: the idle users, per hospital and role (clinical, imaging):
            :class:`usher.sim._events.IdlePools`.
        warm: sessions placed at tick 0 whose logon completes at once.
        decisions: every launch decision (when kept), lists by column.
        rid: launches named so far; requested: visits started; next_arrival: the
            next presampled arrival.
        peak/peak_t, lic_peak, pend_peak/_t/_srv: running peaks (sessions, licence
            holders, pending logons on one server); pend_full_scan: pending grew
            without a placement once, so every tick scans every server.
        server_hours, energy_j: powered server-hours and energy so far.
        lower_bound_hours, draining_hours: the server-hours lower bound and the
            server-hours of powered, draining servers so far (per sample).
        since: float64 (n_servers,), when each server last changed power state.
        actions: the action policy's actions carried out, (now, kind, server, reason).
        boot_image: per server, the image it boots next (None: keeps its image);
            set by a ``reimage`` action, applied when the boot completes.
        boot_reason: per server, that action's reason (the image op's in the trace).
        image: per server, the image it runs (``Scheduler.set_image`` as well).
        bad_image: an image whose servers fail to register when they boot it
            ([rollout] bad_image), or None.
    """

    tally: dict
    outcomes: list
    reasons: list
    on_since: list
    down: np.ndarray
    want: np.ndarray
    idle: IdlePools
    warm: list = field(default_factory=list)
    decisions: dict | None = None
    rid: int = 0
    requested: int = 0
    next_arrival: int = 0
    peak: int = -1
    peak_t: int = 0
    lic_peak: int = 0
    pend_peak: int = 0
    pend_peak_t: float = 0.0
    pend_peak_srv: int = -1
    pend_full_scan: bool = False
    server_hours: float = 0.0
    energy_j: float = 0.0
    lower_bound_hours: float = 0.0
    draining_hours: float = 0.0
    since: np.ndarray | None = None
    actions: list | None = None
    boot_image: list | None = None
    boot_reason: list | None = None
    image: list | None = None
    bad_image: str | None = None

    @classmethod
    def start(cls, layout, n_reasons: int, keep_decisions: bool) -> "DayState":
        """The state at 00:00: every user idle, nothing counted."""
        n_srv = len(layout.server_names)
        idle: list[list[list[int]]] = [[[], []] for _ in range(len(layout.hospital_weight))]
        for u, (h, img) in enumerate(zip(layout.user_hospital.tolist(), layout.user_imaging.tolist())):
            idle[h][1 if img else 0].append(u)
        dec: dict[str, list] | None = ({"id": [], "outcome": [], "reason": [], "server": [], "load_index": [], "session": []}
               if keep_decisions else None)
        return cls(tally=dict.fromkeys(_TALLY, 0), outcomes=[0] * 4, reasons=[0] * n_reasons,
                   on_since=[-math.inf] * n_srv, down=np.zeros(n_srv, dtype=bool),
                   want=np.ones(n_srv, dtype=bool), idle=IdlePools(idle), decisions=dec, since=np.zeros(n_srv), actions=[],
                   boot_image=[None] * n_srv, boot_reason=[None] * n_srv, image=[FLEET_IMAGE] * n_srv)


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
    #: an action policy's actions carried out: (now, kind, server, reason)
    actions: list = field(default_factory=list)
    #: with a [rollout]: the servers by rollout status and image every policy
    #: interval (rows of ``usher.planner.compose.TIMELINE_COLUMNS``), else None
    rollout_timeline: list | None = None


def simulate_day(
    scenario: Scenario | None = None,
    *,
    power_policy: PowerPolicy | ActionPolicy | None = None,
    trace: TraceWriter | None = None,
    keep_decisions: bool = False,
    progress: Callable[[int, int], None] | None = None,
    sinks: Sequence[MetricSink] = (),
    day_of_run: tuple = (0, 0, False),
) -> DayResult:
    """Run one day of ``scenario`` (default: the embedded hospital day).

    Args:
        scenario: the day; its ``day.policy`` sets every pool's load balancing,
            ``day.seed`` seeds everything, ``faults.enabled`` switches faults on.
        power_policy: a :class:`usher.planner.power.PowerPolicy`; default
            :class:`usher.planner.power.FixedSchedule`.
        trace: a :class:`usher.sim.trace.TraceWriter` to write the day as a replay trace.
        keep_decisions: keep every launch decision in ``DayResult.decisions``.
        progress: called as ``progress(seconds_done, seconds_total)`` now and then.
        sinks: further :class:`usher.sim.sinks.MetricSink` s fed with every sample
            and the KPIs (e.g. a :class:`usher.sim.sinks.CsvSink`).
        day_of_run: (day index, weekday 0 = Monday, holiday) shown to the power
            policy (:func:`usher.sim.days.simulate_days` runs several days).
    """
    sc = (scenario or Scenario()).copy().validate()
    # The day allocates ~10^6 small objects (visits, events, trace lines) that live for
    # hours of simulated time and hold no reference cycles: the cyclic collector would
    # scan them again and again and find nothing. Paused for the day.
    gc_on = gc.isenabled()
    gc.disable()
    try:
        return Day(sc, power_policy, trace, keep_decisions, progress, sinks, day_of_run).run()
    finally:
        if gc_on:
            gc.enable()


class Day:
    """One day: the engine and its views, the books, the calendar, the presampled
    arrivals, the state; :meth:`run` is the loop. The handlers read these
    attributes (see :mod:`usher.sim.handlers`)."""

    H_LIVE, H_HOLD = st_layout.H_LIVE_SESSIONS, st_layout.H_HOLDERS

    def __init__(self, sc: Scenario, power_policy=None, trace=None, keep_decisions=False, progress=None,
                 sinks: Sequence[MetricSink] = (), day_of_run: tuple = (0, 0, False)):
        self.sc, self.trace, self.progress = sc, trace, progress
        self.day_index, self.weekday, self.holiday = int(day_of_run[0]), int(day_of_run[1]), bool(day_of_run[2])
        self.T = sc.seconds
        t0 = time.perf_counter()
        self.layout = lay = fleet_layout(sc)
        ops = fleet_ops(sc, lay)
        self.s = s = build_scheduler(ops)
        if trace is not None:
            for op in ops:
                trace.append(op)
            trace.maybe_flush()
        self.build_seconds = time.perf_counter() - t0
        self.policy: Any = power_policy or FixedSchedule(sc, lay.server_night_off)  # see is_action_policy
        # the night's sessions (the warm start): "auto" settles them under a power planner
        # (the evening before ran under it too), spreads them under the fixed schedule
        warm = sc.sessions.warm_start
        self.settled = warm == "settled" or (warm == "auto" and is_action_policy(self.policy))
        self.rollout: Any = None  # the WithRollout composite when [rollout] is on (the first day only)
        self.rollout_run: Any = None  # the simulator's side of it (usher.sim.rollout.RolloutRun)
        if sc.rollout.enabled and self.day_index == 0:
            from usher.planner.compose import WithRollout
            from usher.planner.rollout import Rollout
            from usher.sim.rollout import RolloutRun

            self.rollout = self.policy = WithRollout(self.policy, Rollout(rollout_settings(sc),
                                                                          sc.power.policy_interval_seconds))
            self.rollout_run = RolloutRun(self.rollout, sc.rollout, sc.day.seed)
        self.naming = trace is not None or keep_decisions
        self.books = Books(len(lay.server_names), self.naming)
        self.calls = EngineCalls(s, trace, lay.server_names, self.books.names)
        self.cal = Calendar(self.T)
        self.arrivals: Arrivals = presample(sc, lay, np.random.default_rng([sc.day.seed, 23]))
        events, self.fault_windows = fault_schedule(sc, lay, np.random.default_rng([sc.day.seed, 29]))
        #: the slow_server fault's servers and logon counts (None: neither it nor the slow rule is on)
        self.slow = slow_logons(sc, lay, np.random.default_rng([sc.day.seed, 31]))
        for tick, item in events:
            self.cal.at_server(tick, item)
        self.state = DayState.start(lay, len(Reason), keep_decisions)
        if sc.rollout.enabled and sc.rollout.bad_image:
            self.state.bad_image = sc.rollout.image
        self._engine_views()
        self.user_names = lay.user_names
        self.user_idx = s.user_indices(lay.user_names)
        apps = (APP_RECORD, APP_LABS, APP_PACS)
        self.app_idx = {a: int(i) for a, i in zip(apps, s.app_indices(list(apps)))}
        self.fresh_s = sc.power.fresh_boot_minutes * 60.0
        self.W = max(1, sc.sessions.workstations_per_hospital)
        self.endpoints: dict = {}  # workstation endpoint strings, made once each
        self.moves = np.zeros((4, len(lay.server_names)), dtype=np.int64)
        self.sampler = Sampler(self, trace.telemetry if trace is not None else None)
        self.series_sink, self.kpi_sink = SeriesSink(), KpiSink()
        self.sinks: list[MetricSink] = [self.series_sink, self.kpi_sink, *sinks]
        self.refs = DayRefs(self)  # what the compiled handlers read on every event, taken once

    def _engine_views(self):
        """The engine's server columns as live read-only views (no copy), and its
        header as Python ints; the server table's address and size at the start."""
        s = self.s
        self.power_v, self.mode_v, self.sessions_v, self.pending_v, self.li_v = (
            s.server_field(n) for n in ("power", "mode", "sessions", "pending", "load_index"))
        self.registered_v = s.server_field("registered")
        self.pending_mv = memoryview(self.pending_v)
        self.hdr = s.header_view()
        self._table_at = (self.hdr[st_layout.H_SERVER_I_ADDR], self.hdr[st_layout.H_N_SERVERS])

    def check_views(self):
        """The views stay valid only while the server table does not move."""
        if (self.hdr[st_layout.H_SERVER_I_ADDR], self.hdr[st_layout.H_N_SERVERS]) != self._table_at:
            raise RuntimeError("the engine's server table moved during the day")

    def ws_name(self, h, w):
        """The endpoint name of workstation ``w`` of hospital ``h`` (made once)."""
        return workstation(self.endpoints, self.W, h, w)

    def view(self, now: float) -> FleetView:
        lay = self.layout
        return FleetView(now, self.power_v, self.mode_v, self.sessions_v, self.pending_v, self.li_v,
                         lay.server_max, lay.server_zone, lay.server_pool, self.state.down, self.state.want,
                         list(self.sc.fleet.zones), list(POOLS), self.sc, state_since=self.state.since,
                         weekday=self.weekday, holiday=self.holiday, day_index=self.day_index,
                         registered=self.registered_v, image=self.state.image)

    # ------------------------------------------------------------ the loop
    def run(self) -> DayResult:
        """The day: the power policy's first call, then the loop
        (:func:`usher.sim._events.run_ticks`, compiled): each tick dispatches its
        events to the handlers, in order."""
        T, st = self.T, self.state
        for sink in self.sinks:
            sink.open(self.sc.fleet.zones, self.sampler.n_samples)
        t_start = time.perf_counter()
        policy = self.policy
        acts = is_action_policy(policy)
        wish0 = policy.initial(self.view(0.0))
        if wish0 is not None and not acts:
            st.want = np.asarray(wish0, dtype=bool).copy()
        elif wish0 is not None and not isinstance(wish0, np.ndarray):
            apply_actions(self, 0, 0.0, wish0)  # an action policy's first actions (place-last marks), before any session
        # an action policy takes the fleet over as it is at 00:00, once the night's
        # sessions are in (its first call at the first interval)
        interval = policy.interval_seconds
        next_policy = interval if acts else 0
        run_ticks(self, policy, acts, interval, next_policy, _SETTLE_BATCH, server_events, apply_actions, apply_power)
        wall = time.perf_counter() - t_start
        if self.progress is not None:
            self.progress(T, T)
        return self._finish(wall)

    def _finish(self, wall) -> DayResult:
        """The books at the end, the KPIs, the sinks closed; the day's result."""
        st, s = self.state, self.s
        st.tally["requested"] = st.requested
        self.series_sink.close()
        ser, zser = self.series_sink.series, self.series_sink.zones
        if not self.books.balance(s.server_field("sessions"), s.live_sessions):
            st.tally["mismatch"] += 1
        kpis = day_kpis(self, ser, zser, wall)
        if self.trace is not None:
            self.trace.flush()
            kpis["trace.lines"] = self.trace.lines
        for sink in self.sinks:
            sink.kpis(kpis)
            if sink is not self.series_sink:  # closed above: its columns feed the KPIs
                sink.close()
        dec = st.decisions
        if dec is not None:
            dec = {key: (np.array(val) if key not in ("id", "session") else val) for key, val in dec.items()}
        return DayResult(self.kpi_sink.values, ser, zser, self.sc, dec, s, list(self.layout.server_names),
                         list(self.fault_windows), list(st.actions),  # type: ignore[arg-type]  # start() made it
                         self.rollout.timeline if self.rollout is not None else None)
