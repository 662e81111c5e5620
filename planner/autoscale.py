"""Autoscale: power each pool in each zone to its demand, ahead of it, safely.

Design: :class:`Autoscale` is an action policy (:class:`usher.planner.power.ActionPolicy`):
every ``interval_seconds`` it is shown the fleet and answers with actions, each
with a reason. The same object drives ``usher simulate --power autoscale`` and a
live broker (``plan(view, now) -> actions``). It plans each group (one pool in
one zone, with its own :class:`usher.planner.settings.GroupSettings`) alone:

1. **demand** ``D`` = sessions + pending logons of the group; ``held`` = those on
   servers that cannot take a session (draining, unregistered, maintenance);
   ``ready`` = servers able to take one (on, registered, enabled, not down) and
   those booting (enabled), with their ``seats`` (``max_sessions``).
2. **need** over the boot lead time ``L``: ``F_up`` = the forecast peak over
   ``[now, now + L]`` (:class:`usher.planner.forecast.DemandForecast`), and
   ``need_up = ceil(F_up * (1 + buffer)) - held`` seats on ready servers; at least
   ``min_on`` ready servers (the time slot's), and ``min_ready`` whenever the
   group has demand (never a group with demand and no server able to take it).
3. **scale up** when ready seats < ``need_up``: re-enable draining servers (most
   sessions first: they stay on longest anyway; no boot needed), then boot off
   servers (most seats first), never past ``max_powered``.
4. **scale down** otherwise, unless the group scaled up less than ``cooldown``
   ago: ``need_dn`` uses the forecast over ``[now, now + L + cooldown]`` and the
   buffer plus ``hysteresis_pct``; the surplus of ready seats over it is drained,
   fewest sessions first (they empty first), never a server with a pending logon
   (its logon would complete on a draining server) and never below the minimums.
   Draining server ``i`` lowers the surplus by its free seats ``seats_i - s_i``
   (its sessions stay where they are).
5. **shut down** a server the planner drained, once empty (no session, no pending
   logon) and ``power_off_delay`` after it was drained (``off_delay_from =
   "drain"``) or after it became empty (``"idle"``), keeping ``min_powered``.
   A drained server that takes a session (a reconnect) is chosen again: its delay
   restarts. With ``forced_logoff_minutes`` set (off by default), a drained
   server's sessions are logged off that long after it was drained.
6. **drain-aware placement** (``place_last_pct`` > 0): while a group does not
   scale up, the servers it would drain next — fewest sessions first, up to
   ``place_last_pct`` % of its ready seats — are marked *place-last*: placement
   gives them new sessions only when no unmarked server of the group can take
   one (``Scheduler.set_place_last``), so they empty sooner and are drained with
   fewer sessions left. A mark stays while the server can take a session (the
   marked set is topped up, or trimmed of its fullest above 1.5x the share);
   every mark is cleared when the group scales up, when the server is drained,
   or when the share is 0.

7. **zone failover** (``failover``): a group with at least half of its servers
   down is dark; its demand before the outage, less what has come back to the
   surviving zones of its pool, is added to their forecast (split by demand).
   **Consolidation** (``consolidate_pct`` > 0, instead of 6): the fullest servers
   whose free seats hold that share of the sessions stay open, the rest are
   marked place-last.
8. **ramp-down packing** (``pack``, autoscale's default, instead of 6): the keep
   set, the fewest servers able to take a session with the most sessions first,
   holds the free room new logons need (``pack_pct`` % of the demand plus
   ``pack_margin`` seats, at most the group's free-seat need); every other such
   server is marked place-last, so new logons pack onto servers that stay on
   anyway and the rest empty by attrition. The marks stay while the group scales
   up (booted servers join the keep set's room first). With ``pack_hold`` (the
   default) the keep set is sticky: its members stay while they can take a
   session; it grows by the fullest marked servers while its room is short and
   sheds its emptiest members only while the rest still hold the room (a whole
   server surplus), so a server near the boundary is not marked and unmarked
   minute after minute as sessions come and go.
9. **zone reserve** (``zone_reserve_pct``, off by default): N+1 over zones, each
   group also holds that share of the demand it would take over if another zone
   of its pool went dark.

Servers in maintenance mode, excluded by the view (``view.excluded``), or kept
down by a fault are never touched. Whoever carries the actions out checks each
one against the server's state at that moment (:func:`usher.planner.power.action_valid`).

Each call gathers the fleet's columns once in group order (the order made once
per fleet), so a group is a slice of them, with the groups' sums in the same pass
(:func:`usher.planner.kernels.gather`). The groups' settings are numbers made once
per fleet (``kernels.G_COLUMNS``); each call looks up the slot of each distinct
schedule and the forecast peak of each distinct window once, and one call of
:func:`usher.planner.kernels.plan_call` decides every group's scalars (the seats
needed, scale up or down, the keep set's free room) and does every group's array
steps (candidates, sort orders, cumulative sums), answering with action codes and
the numbers the reasons quote; only the actions made become :class:`Action` s,
their reasons formatted once per group and kind. ``tests/planner_reference.py``
keeps the same decisions written group by group in Python, the reference the
compiled ones are tested against (benchmarks/bench_planner.py).
"""

from __future__ import annotations

import math

import numpy as np

from usher.errors import InvalidArgument
from usher.planner import kernels
from usher.planner.forecast import DemandForecast, day_type
from usher.planner.power import BOOT, DRAIN, ENABLE, LOGOFF, PLACE_FIRST, PLACE_LAST, SHUTDOWN, Action, FleetView
from usher.planner.settings import GroupSettings, PlannerSettings, Schedule

__all__ = ["Autoscale", "Citrix", "autoscale_settings", "citrix_settings"]

OFF, BOOTING, ON = 0, 1, 2
ENABLED, DRAIN_MODE, MAINTENANCE = 0, 1, 2

#: the ``pack`` settings' codes (``usher.planner.kernels.PACK_*``)
_PACKS = {"off": kernels.PACK_OFF, "always": kernels.PACK_ALWAYS, "falling": kernels.PACK_FALLING}

#: the action kinds of the kernel's codes (``usher.planner.kernels.A_*``)
_KINDS = (ENABLE, BOOT, DRAIN, SHUTDOWN, LOGOFF, PLACE_LAST, PLACE_FIRST)


#: an absent boolean column (``FleetView.excluded`` / ``registered`` left None) for the kernels
_NONE = np.zeros(0, dtype=bool)
#: the columns of a FleetView the compiled bookkeeping reads (kernels.gather), one
#: entry per server; the optional ones may be None
_COLUMNS = ("power", "mode", "sessions", "pending", "load_index", "max_sessions", "zone", "pool", "down")
_OPTIONAL_COLUMNS = ("excluded", "registered")


def _check_columns(view: FleetView) -> None:
    """InvalidArgument unless every column has one 1-D entry per server: the
    compiled pass reads them unchecked, so a short one would be read past its end."""
    n = len(view.power)
    for name in _COLUMNS + _OPTIONAL_COLUMNS:
        col = getattr(view, name)
        if col is None and name in _OPTIONAL_COLUMNS:
            continue
        shape = col.shape if type(col) is np.ndarray else np.shape(col)
        if shape != (n,):
            raise InvalidArgument(f"view.{name}", shape, f"must have one entry per server: shape ({n},)")

#: the load index of a full server
FULL_LOAD = kernels.FULL_LOAD

#: autoscale's default share of ready seats marked place-last (drain-aware placement;
#: ``pack`` replaces it when on)
PLACE_LAST_PCT = 15.0

#: autoscale's default free room of the keep set (ramp-down packing), % of the demand
PACK_PCT = 1.0


def autoscale_settings() -> PlannerSettings:
    """The planner's defaults: forecast and trend on, a 3 % buffer (the forecast
    carries the ramp), the power-off delay counted from the drain."""
    return PlannerSettings(GroupSettings(buffer_pct=3.0, off_delay_from="drain", hysteresis_pct=2.0,
                                         cooldown_minutes=10.0, place_last_pct=PLACE_LAST_PCT, failover=True,
                                         pack="always", pack_pct=PACK_PCT))


def citrix_settings() -> PlannerSettings:
    """A reactive baseline with Citrix Autoscale's defaults: 10 % buffer, power-off
    delay 30 min counted from idle, drain until empty, no forecast, no trend."""
    return PlannerSettings(GroupSettings(buffer_pct=10.0, off_delay_from="idle", forecast=False, trend=False,
                                         hysteresis_pct=0.0, cooldown_minutes=0.0))


def _clock(t: float) -> str:
    t = int(t) % 86_400
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}"


class Autoscale:
    """The autoscale planner (see the module's docstring).

    Args:
        settings: :class:`PlannerSettings` (default :func:`autoscale_settings`).
        interval_seconds: how often ``plan`` should be called.
        name: shown in reasons and reports.
    """

    acts = True

    def __init__(self, settings: PlannerSettings | None = None, interval_seconds: int = 60, name: str = "autoscale"):
        self.settings = settings if settings is not None else autoscale_settings()
        self.interval_seconds = int(interval_seconds)
        self.name = name
        self._fleet_key: tuple[int, int, int] | None = None
        self.forecast: DemandForecast | None = None
        self.log: list = []  # (now, kind, server, reason) of every action planned, when keep_log
        self.keep_log = False

    # ------------------------------------------------------------ fleet
    def _setup(self, view: FleetView):
        """Groups, members and settings of the fleet (once per fleet)."""
        nz = len(view.zone_names)
        g = np.asarray(view.pool, dtype=np.int64) * nz + np.asarray(view.zone, dtype=np.int64)
        n_groups = len(view.pool_names) * nz
        order = np.argsort(g, kind="stable")
        bounds = np.searchsorted(g[order], np.arange(n_groups + 1))
        self.members = [order[bounds[k]:bounds[k + 1]] for k in range(n_groups)]
        self.order, self.bounds, self._bounds = order, bounds.tolist(), bounds.astype(np.int64)
        self._order_list = order.tolist()
        self._starts = bounds[:-1][bounds[1:] > bounds[:-1]]  # where each group with members starts
        self._filled = np.nonzero(bounds[1:] > bounds[:-1])[0]
        self.group = g
        self.n_groups = n_groups
        self.names = [f"{p}/{z}" for p in view.pool_names for z in view.zone_names]
        self._kept_open = [f"{name}: packing: kept open for new sessions" for name in self.names]
        self.gs: list[GroupSettings] = [self.settings.for_group(p, z) for p in view.pool_names
                                        for z in view.zone_names]
        n = len(g)
        self.drain_at = np.full(n, np.nan)  # when the planner drained it (nan: not drained by it)
        self.chosen_sessions = np.zeros(n, dtype=np.int64)
        self.idle_since = np.full(n, np.inf)
        self.marked = np.zeros(n, dtype=bool)  # servers this planner marked place-last
        self.last_up = np.full(n_groups, -np.inf)
        self.size = np.array([len(m) for m in self.members], dtype=np.float64)
        self.before_dark = np.zeros(n_groups)
        self.nz = nz
        self._reserve_pct = np.array([g.zone_reserve_pct for g in self.gs])
        self._reserve_on = bool(self._reserve_pct.any())
        self._failover_on = np.array([g.failover for g in self.gs], dtype=bool)
        self._no_group, self._no_demand = np.zeros(n_groups, dtype=bool), np.zeros(n_groups)  # read only
        self._no_group.flags.writeable = self._no_demand.flags.writeable = False
        if self.forecast is None or self.forecast.n_groups != n_groups:
            self.forecast = DemandForecast(n_groups)
        self._numbers(n)
        self._fleet_key = (n, nz, len(view.pool_names))

    def _numbers(self, n: int) -> None:
        """The groups' settings as numbers for the kernels (``kernels.G_COLUMNS``):
        the distinct forecast windows (``_peak_keys``, one row of ``_peak_rows``
        each) and schedules (``_schedules``, one row of ``_slots`` each) that the
        groups use; the buffers every call reuses."""
        n_groups = self.n_groups
        keys: dict[tuple, int] = {}
        schedules: list[Schedule] = []
        rows: dict[int, int] = {}  # schedules by identity (one row each)
        gset = np.zeros((n_groups, len(kernels.G_COLUMNS)))
        for k, gs in enumerate(self.gs):
            lead = gs.boot_lead_minutes * 60.0
            up = keys.setdefault((lead, gs.trend, gs.forecast), len(keys))
            sched = rows.get(id(gs.schedule))
            if sched is None:
                sched = rows[id(gs.schedule)] = len(schedules)
                schedules.append(gs.schedule)
            dn = keys.setdefault((lead + gs.cooldown_minutes * 60.0, gs.trend, gs.forecast), len(keys))
            gset[k] = (gs.buffer_pct, lead, gs.min_ready, gs.min_powered,
                       -1 if gs.max_powered is None else gs.max_powered, gs.cooldown_minutes * 60.0,
                       gs.hysteresis_pct, -1 if gs.drain_max_sessions is None else gs.drain_max_sessions,
                       gs.drain_fewest_first, gs.power_off_delay_minutes * 60.0, gs.off_delay_from == "drain",
                       np.nan if gs.forced_logoff_minutes is None else gs.forced_logoff_minutes * 60.0,
                       _PACKS[gs.pack], np.nan if gs.pack_pct is None else gs.pack_pct, gs.pack_margin,
                       gs.pack_by_load, gs.pack_hold, up, dn, sched)
        self._gset = gset
        self._peak_keys = list(keys)
        self._windows = (np.array([key[0] for key in keys], dtype=np.float64),  # horizon, trend, seasonal
                         np.array([key[1] for key in keys], dtype=bool), np.array([key[2] for key in keys], dtype=bool))
        self._peak_rows = np.zeros((len(keys), n_groups))
        self._schedules = schedules
        self._slots = np.zeros((len(schedules), 2))
        self._unpacked = [k for k, gs in enumerate(self.gs) if gs.pack == "off" and self.size[k]]
        self._gi, self._gb, self._gf = np.empty((7, n), dtype=np.int64), np.empty((2, n), dtype=bool), np.empty((2, n))
        self._dx = np.zeros((3, n_groups))  # demand, failover demand, zone reserve
        self._sums = np.empty((n_groups, kernels.N_SUMS), dtype=np.int64)
        self._par = np.zeros((n_groups, len(kernels.P_COLUMNS)))
        self._whys = np.zeros((n_groups, len(kernels.W_COLUMNS)))
        self._out = np.empty((4, n, 3), dtype=np.int64)
        self._counts = np.zeros(4, dtype=np.int64)
        self._kept = np.zeros(n_groups, dtype=np.int64)

    def new_day(self, view: FleetView | None = None):
        """Close the day: the forecast learns it; clocks restart at 00:00."""
        if self.forecast is not None:
            self.forecast.close_day()
        if self._fleet_key is not None:
            self.drain_at[:] = np.nan
            self.idle_since[:] = np.inf
            self.marked[:] = False  # a new day's engine starts with no mark
            self.last_up[:] = -np.inf

    def initial(self, view: FleetView) -> list | None:
        """Place-last marks for a fleet taken over before its sessions are placed
        (the simulator's 00:00, before the night's sessions; a broker starting on
        an empty fleet). With ``pack`` on, each group keeps open the fewest powered
        servers (most seats first) whose seats hold the demand expected now (the
        forecast's profile when it has one, else ``initial_keep_pct`` % of the
        group's powered seats) with the buffer and ``pack_margin``; every other
        server able to take a session is marked place-last, so the sessions that
        arrive first pack onto the kept servers and the others can be drained
        empty. Only marks (no boot, drain or shutdown); None when no group packs.
        A runner that plans from the first interval only may ignore the answer."""
        if self._fleet_key != (len(view.pool), len(view.zone_names), len(view.pool_names)):
            self._setup(view)
        if all(g.pack == "off" for g in self.gs):
            return None
        power, mode = np.asarray(view.power), np.asarray(view.mode)
        seats_all = np.asarray(view.max_sessions)
        locked = (mode == MAINTENANCE) | np.asarray(view.down, dtype=bool)
        if view.excluded is not None:
            locked = locked | np.asarray(view.excluded, dtype=bool)
        registered = np.ones(len(power), dtype=bool) if view.registered is None else np.asarray(view.registered, dtype=bool)
        able = (power == ON) & (mode == ENABLED) & registered & ~locked
        prof = self.forecast.profile(day_type(view.weekday, view.holiday))  # type: ignore[union-attr]
        b = min(int(view.now % 86_400 // self.forecast.bin), self.forecast.n_bins - 1)  # type: ignore[union-attr]
        out = []
        for k, idx in enumerate(self.members):
            gs = self.gs[k]
            c = idx[able[idx]]
            if gs.pack == "off" or not len(c):
                continue
            c = c[np.argsort(-seats_all[c], kind="stable")]
            expect = (float(prof[b, k]) if prof is not None and gs.forecast
                      else gs.initial_keep_pct / 100.0 * float(seats_all[c].sum()))
            head = math.ceil(expect * (1.0 + gs.buffer_pct / 100.0)) + gs.pack_margin
            keep = int(np.searchsorted(np.cumsum(seats_all[c]), head)) + 1
            why = (f"{self.names[k]}: packing from the start: {keep} servers hold the {head:,} seats expected "
                   f"now; new sessions last")
            for i in c[keep:].tolist():
                out.append(Action(PLACE_LAST, int(i), why))
                self.marked[i] = True
        return out

    # ------------------------------------------------------------ plan
    def _begin(self, view: FleetView, now: float | None) -> float:
        """A call's start: the view's columns checked, the time of the call (default
        ``view.now``) kept, the per-fleet setup made again when the fleet's shape changed."""
        _check_columns(view)
        now = view.now if now is None else float(now)
        self._now = now
        if self._fleet_key != (len(view.pool), len(view.zone_names), len(view.pool_names)):
            self._setup(view)
        return now

    def plan(self, view: FleetView, now: float | None = None) -> list:
        """The actions for ``view`` at ``now`` (default ``view.now``), in the order
        to carry them out: enables and boots, then drains, logoffs, shutdowns."""
        now = self._begin(view, now)
        # the bookkeeping (when each server became empty; drained servers that took a
        # session or left the drain), the demand, and every column once in group
        # order: a group's members are a slice of them
        excluded = _NONE if view.excluded is None else np.asarray(view.excluded, dtype=bool)
        registered = _NONE if view.registered is None else np.asarray(view.registered, dtype=bool)
        gi, gb, gf, dx = self._gi, self._gb, self._gf, self._dx
        demand = dx[0]
        demand[:] = 0.0
        self._li = np.asarray(view.load_index)
        kernels.gather(np.asarray(view.power), np.asarray(view.mode), np.asarray(view.sessions),
                       np.asarray(view.pending), np.asarray(view.max_sessions), self._li,
                       np.asarray(view.down, dtype=bool), excluded, registered, float(now), self.order, self.group,
                       self.idle_since, self.drain_at, self.chosen_sessions, gi, gb, gf, demand,
                       self._sums)
        dx[1] = self._extra = self._failover(view, demand)
        dx[2] = self._reserve = self._zone_reserve(demand)
        fc = self.forecast
        fc.observe(now, demand, day_type(view.weekday, view.holiday))  # type: ignore[union-attr]  # made by _setup
        horizons, trends, seasonal = self._windows
        fc.peaks(now, horizons, trends, seasonal, self._peak_rows)  # type: ignore[union-attr]
        slots = self._slots
        for r, schedule in enumerate(self._schedules):
            slot = schedule.slot(now, view.weekday, view.holiday)
            slots[r, 0] = 0 if slot is None else slot.min_on
            slots[r, 1] = np.nan if slot is None or slot.buffer_pct is None else slot.buffer_pct
        if view.place_last is not None:
            self.marked[:] = np.asarray(view.place_last, dtype=bool)
        out, counts, kept = self._out, self._counts, self._kept
        kernels.plan_call(gi, gb, gf, self.order, self.drain_at, self.marked, self.chosen_sessions, self._bounds,
                          self._gset, slots, self._peak_rows, dx, self.last_up, now, self._sums, self._par, self._whys,
                          out, counts, kept)
        lists = self._actions(out, counts, kept)
        if self._unpacked:
            self._place_lasts(lists[kernels.MARKS])
        actions = lists[kernels.UPS] + lists[kernels.DOWNS] + lists[kernels.OFFS] + lists[kernels.MARKS]
        if self.keep_log:
            self.log.extend((now, a.kind, a.server, a.reason) for a in actions)
        return actions

    def _place_lasts(self, marks: list) -> None:
        """Drain-aware placement and consolidation of the groups that do not pack,
        their marks after the packing groups' ones, all in group order."""
        p, s, seats = self._gi[0], self._gi[2], self._gi[5]
        rd, lk = self._gb
        o = self.order
        for k in self._unpacked:
            gs, lo, hi = self.gs[k], self.bounds[k], self.bounds[k + 1]
            if gs.place_last_pct > 0 or gs.consolidate_pct > 0 or self.marked[o[lo:hi]].any():
                mine: list[Action] = []
                self._place_last(k, o[lo:hi], gs, bool(self._par[k, kernels.P_UP]), s[lo:hi], seats[lo:hi],
                                 rd[lo:hi], lk[lo:hi], p[lo:hi], mine)
                marks.extend(mine)
        marks.sort(key=lambda a: self.group[a.server])

    def _actions(self, out, counts, kept) -> list:
        """The kernel's action codes as four lists of :class:`Action` (ups, downs,
        offs, marks), each with its reason (formatted once per group and kind)."""
        lists: list[list[Action]] = [[], [], [], []]
        reasons: dict[int, str] = {}
        servers = self._order_list
        for lst in range(4):
            c = int(counts[lst])
            if not c:
                continue
            dest = lists[lst]
            if lst == kernels.OFFS:
                da, s = self._gf[0], self._gi[2]
                for j, code, k in out[lst, :c].tolist():
                    dest.append(Action(_KINDS[code], servers[j], self._off_reason(k, code, float(da[j]), int(s[j]))))
                continue
            for j, code, k in out[lst, :c].tolist():
                why = reasons.get(k * 8 + code)
                if why is None:
                    why = reasons[k * 8 + code] = self._reason(k, code, int(kept[k]))
                dest.append(Action(_KINDS[code], servers[j], why))
        return lists

    def _reason(self, k, code, kept) -> str:
        """The reason of group ``k``'s actions of kind ``code``, from its row of
        the kernel's ``whys``."""
        if code == kernels.A_PLACE_FIRST:
            return self._kept_open[k]
        name, gs = self.names[k], self.gs[k]
        w = self._whys[k].tolist()
        if code == kernels.A_ENABLE or code == kernels.A_BOOT:
            return (f"{name}: {'forecast' if gs.forecast else 'demand'} {w[kernels.W_F_UP]:,.0f} sessions by "
                    f"{_clock(self._now + w[kernels.W_LEAD])} + {w[kernels.W_BUF]:.0%} needs "
                    f"{w[kernels.W_NEED_UP]:,.0f} seats, {int(w[kernels.W_SEATS_READY]):,} ready on "
                    f"{int(w[kernels.W_N_READY])} servers")
        if code == kernels.A_DRAIN:
            return (f"{name}: {'forecast' if gs.forecast else 'demand'} {w[kernels.W_F_DN]:,.0f} sessions until "
                    f"{_clock(self._now + w[kernels.W_HORIZON])} + {w[kernels.W_BUF]:.0%} needs "
                    f"{w[kernels.W_NEED_DN]:,.0f} seats, {int(w[kernels.W_SEATS_READY]):,} ready: "
                    f"surplus {w[kernels.W_SURPLUS]:,}")
        return (f"{name}: packing: {kept} {'kept' if gs.pack_hold else 'fullest'} servers hold the "
                f"{w[kernels.W_PACK]:,.0f} free seats needed; new sessions last")  # A_PLACE_LAST

    def _off_reason(self, k, code, drain_at, sessions) -> str:
        gs = self.gs[k]
        if code == kernels.A_SHUTDOWN:
            return (f"{self.names[k]}: drained at {_clock(drain_at)} and empty; power-off delay "
                    f"{gs.power_off_delay_minutes:g} min from {gs.off_delay_from}")
        return (f"{self.names[k]}: drained at {_clock(drain_at)}, {sessions} sessions logged off after "
                f"{gs.forced_logoff_minutes:g} min (warned {gs.logoff_warning_minutes:g} min before)")

    def _failover(self, view: FleetView, demand: np.ndarray) -> np.ndarray:
        """Failover demand per group: a group whose zone is dark (at least half of
        its servers down) has its demand from before the outage counted against the
        surviving zones of the same pool (split by their demand), for groups whose
        settings ask for it (``failover``)."""
        down_v = np.asarray(view.down, dtype=bool)
        if not np.count_nonzero(down_v):  # nothing down: no group is dark (a dark group has a server down)
            self._dark = self._no_group
            self.before_dark[:] = demand
            return self._no_demand
        extra = np.zeros(self.n_groups)
        down = np.bincount(self.group, weights=down_v.astype(np.float64), minlength=self.n_groups)
        dark = down >= 0.5 * np.maximum(self.size, 1)
        self._dark = dark
        nz = len(view.zone_names)
        if not dark.any():
            self.before_dark[:] = demand
            return extra
        alive = (~dark & (self.size > 0)).reshape(-1, nz)
        # the dark zones' demand before the outage, less what has come back to the others
        back = ((demand - self.before_dark).reshape(-1, nz) * alive).sum(axis=1)
        lost = np.maximum((self.before_dark * dark).reshape(-1, nz).sum(axis=1) - np.maximum(back, 0.0), 0.0)
        w = (demand.reshape(-1, nz) + 1.0) * alive
        tot = w.sum(axis=1, keepdims=True)
        share = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
        extra = (share * lost[:, None]).ravel()
        return np.where(self._failover_on, extra, 0.0)

    def _zone_reserve(self, demand: np.ndarray) -> np.ndarray:
        """Seats each group holds against the loss of another zone of its pool (N+1
        over zones), ``zone_reserve_pct`` % of them: if zone ``y`` went dark, group
        ``z`` would take the share ``(D_z + 1) / sum over alive x != y of (D_x + 1)``
        of ``D_y`` (the failover split); the reserve is the largest over ``y``.
        Dark zones neither lose again nor take a share (failover covers them)."""
        pct = self._reserve_pct
        if not self._reserve_on:
            return self._no_demand
        nz = self.nz
        alive = (~self._dark & (self.size > 0)).reshape(-1, nz)
        d = demand.reshape(-1, nz) * alive
        w = (d + 1.0) * alive
        out = np.zeros_like(d)
        for y in range(nz):  # zone y lost: the others of each pool take its demand
            wy = w.copy()
            wy[:, y] = 0.0
            tot = wy.sum(axis=1, keepdims=True)
            share = np.divide(wy, tot, out=np.zeros_like(wy), where=tot > 0)
            np.maximum(out, share * d[:, y:y + 1], out=out)
        return out.ravel() * pct / 100.0

    def _place_last(self, k, idx, gs, scaling_up, s, seats, rd, lk, p, marks):
        """Drain-aware placement: mark the servers the group would drain next."""
        cur = self.marked[idx]
        want = np.zeros(len(idx), dtype=bool)
        if gs.consolidate_pct > 0 and not scaling_up:
            cand = rd & (p == ON) & ~lk & np.isnan(self.drain_at[idx])
            want = self._consolidate(gs, cand, s, seats, self._li[idx])
        elif gs.place_last_pct > 0 and not scaling_up:
            cand = rd & (p == ON) & ~lk & np.isnan(self.drain_at[idx])
            budget = gs.place_last_pct / 100.0 * float(seats[rd].sum())
            want = cur & cand
            have = float(seats[want].sum())
            if have > 1.5 * budget:  # trim the fullest marks
                for j in np.nonzero(want)[0][np.argsort(-s[want], kind="stable")].tolist():
                    if have <= budget:
                        break
                    want[j] = False
                    have -= float(seats[j])
            elif have < budget:
                free = np.nonzero(cand & ~want)[0]
                for j in free[np.argsort(s[free], kind="stable")].tolist():
                    if have >= budget:
                        break
                    want[j] = True
                    have += float(seats[j])
        if (want != cur).any():
            why_on = f"{self.names[k]}: drained next (fewest sessions): new sessions last"
            why_off = f"{self.names[k]}: {'scaling up' if scaling_up else 'no longer drained next'}"
            for j in np.nonzero(want & ~cur)[0].tolist():
                marks.append(Action(PLACE_LAST, int(idx[j]), why_on))
            for j in np.nonzero(cur & ~want)[0].tolist():
                marks.append(Action(PLACE_FIRST, int(idx[j]), why_off))
            self.marked[idx] = want

    @staticmethod
    def _consolidate(gs, cand, s, seats, li) -> np.ndarray:
        """Consolidation: the fullest candidates whose free seats hold
        ``consolidate_pct`` % of the group's sessions stay open; every other
        candidate is marked place-last (it takes a session only as overflow)."""
        want = np.zeros(len(cand), dtype=bool)
        c = np.nonzero(cand)[0]
        if not len(c):
            return want
        c = c[np.argsort(-s[c], kind="stable")]
        head = max(gs.consolidate_pct / 100.0 * float(s.sum()), float(gs.consolidate_min_free))
        room = np.minimum(seats[c] - s[c], np.floor(seats[c] * np.clip(1.0 - li[c] / FULL_LOAD, 0.0, 1.0)))
        free = np.cumsum(room)
        keep = int(np.searchsorted(free, head)) + 1  # the server that reaches the headroom stays open
        want[c[keep:]] = True
        return want

class Citrix(Autoscale):
    """A faithful reactive baseline (Citrix Autoscale's behaviour): capacity buffer
    of 10 % of the demand, power-off delay 30 min after a server became idle,
    drain until empty; no forecast, no trend, no cooldown."""

    def __init__(self, settings: PlannerSettings | None = None, interval_seconds: int = 60):
        super().__init__(settings if settings is not None else citrix_settings(), interval_seconds, "citrix")
