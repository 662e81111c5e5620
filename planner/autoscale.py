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
   up (booted servers join the keep set's room first).
9. **zone reserve** (``zone_reserve_pct``, off by default): N+1 over zones, each
   group also holds that share of the demand it would take over if another zone
   of its pool went dark.

Servers in maintenance mode, excluded by the view (``view.excluded``), or kept
down by a fault are never touched. Whoever carries the actions out checks each
one against the server's state at that moment (:func:`usher.planner.power.action_valid`).

Each call gathers the fleet's columns once in group order (the order made once
per fleet), so a group is a slice of them. Python decides each group's scalars
(the forecast, the seats needed, scale up or down, the keep set's free room);
one call of :func:`usher.planner.kernels.plan_groups` does every group's array
steps (candidates, sort orders, cumulative sums) and answers with action codes,
which become :class:`Action` s with their reasons here (benchmarks/bench_planner.py).
"""

from __future__ import annotations

import math

import numpy as np

from usher.errors import InvalidArgument
from usher.planner import kernels
from usher.planner.forecast import DemandForecast, day_type
from usher.planner.power import BOOT, DRAIN, ENABLE, LOGOFF, PLACE_FIRST, PLACE_LAST, SHUTDOWN, Action, FleetView
from usher.planner.settings import GroupSettings, PlannerSettings

__all__ = ["Autoscale", "Citrix", "autoscale_settings", "citrix_settings"]

OFF, BOOTING, ON = 0, 1, 2
ENABLED, DRAIN_MODE, MAINTENANCE = 0, 1, 2

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
        shape = np.shape(col)
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
        self._starts = bounds[:-1][bounds[1:] > bounds[:-1]]  # where each group with members starts
        self._filled = np.nonzero(bounds[1:] > bounds[:-1])[0]
        self.group = g
        self.n_groups = n_groups
        self.names = [f"{p}/{z}" for p in view.pool_names for z in view.zone_names]
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
        if self.forecast is None or self.forecast.n_groups != n_groups:
            self.forecast = DemandForecast(n_groups)
        self._fleet_key = (n, nz, len(view.pool_names))

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
    def plan(self, view: FleetView, now: float | None = None) -> list:
        """The actions for ``view`` at ``now`` (default ``view.now``), in the order
        to carry them out: enables and boots, then drains, logoffs, shutdowns."""
        _check_columns(view)
        now = view.now if now is None else float(now)
        self._now = now
        if self._fleet_key != (len(view.pool), len(view.zone_names), len(view.pool_names)):
            self._setup(view)
        power = np.asarray(view.power)
        n = len(power)
        # the bookkeeping (when each server became empty; drained servers that took a
        # session or left the drain), the demand, and every column once in group
        # order: a group's members are a slice of them
        excluded = _NONE if view.excluded is None else np.asarray(view.excluded, dtype=bool)
        registered = _NONE if view.registered is None else np.asarray(view.registered, dtype=bool)
        gi, gb, gf = np.empty((7, n), dtype=np.int64), np.empty((2, n), dtype=bool), np.empty((2, n))
        demand = np.zeros(self.n_groups)
        seats_all = np.asarray(view.max_sessions)
        self._li = np.asarray(view.load_index)
        kernels.gather(power, np.asarray(view.mode), np.asarray(view.sessions), np.asarray(view.pending), seats_all,
                       self._li, np.asarray(view.down, dtype=bool), excluded, registered, float(now), self.order,
                       self.group, self.idle_since, self.drain_at, self.chosen_sessions, gi, gb, gf, demand)
        self._extra = self._failover(view, demand)
        self._reserve = self._zone_reserve(demand)
        self._extra_l, self._reserve_l = self._extra.tolist(), self._reserve.tolist()  # floats for _decide
        kind = day_type(view.weekday, view.holiday)
        fc = self.forecast
        fc.observe(now, demand, kind)  # type: ignore[union-attr]  # made by _setup
        self._peaks: dict[tuple, list] = {}
        ups, downs, offs, marks = [], [], [], []  # type: list[Action], list[Action], list[Action], list[Action]
        if view.place_last is not None:
            self.marked[:] = np.asarray(view.place_last, dtype=bool)
        o = self.order
        p, md, s, q, b, seats, li = gi
        rd, lk = gb
        da, idle = gf  # in group order, da updated by the kernel
        mk = self.marked[o]
        bounds = self._bounds
        sums = np.empty((self.n_groups, kernels.N_SUMS), dtype=np.int64)
        kernels.group_sums(p, md, b, seats, rd, lk, da, bounds, sums)
        rows = [[0.0] * len(kernels.P_COLUMNS) for _ in range(self.n_groups)]
        dem = demand.tolist()
        whys = [self._decide(k, now, view, dem[k], row, rows[k]) if self.size[k] else None
                for k, row in enumerate(sums.tolist())]
        par = np.array(rows, dtype=np.float64)
        n = len(o)
        out = np.empty((4, n, 3), dtype=np.int64)
        counts = np.zeros(4, dtype=np.int64)
        kept = np.zeros(self.n_groups, dtype=np.int64)
        key_scale = int(seats_all.max()) + 1 if n else 1  # (busy, seats) as one sort key
        kernels.plan_groups(p, md, s, q, b, seats, rd, lk, li, da, idle, mk, bounds, par,
                            now, key_scale, out, counts, kept)
        self.drain_at[o] = da
        self.marked[o] = mk
        lists = self._actions(out, counts, kept, whys, da, s)
        drained = out[kernels.DOWNS, :counts[kernels.DOWNS], 0]
        self.chosen_sessions[o[drained]] = s[drained]
        marks = lists[kernels.MARKS]
        for k in range(self.n_groups):  # drain-aware placement and consolidation (groups that do not pack)
            gs, lo, hi = self.gs[k], self.bounds[k], self.bounds[k + 1]
            if hi > lo and gs.pack == "off" and (gs.place_last_pct > 0 or gs.consolidate_pct > 0 or mk[lo:hi].any()):
                mine: list[Action] = []
                self._place_last(k, o[lo:hi], gs, bool(rows[k][kernels.P_UP]), s[lo:hi], seats[lo:hi], rd[lo:hi],
                                 lk[lo:hi], p[lo:hi], mine)
                marks.extend(mine)
        if any(g.pack == "off" for g in self.gs):  # marks in group order
            marks.sort(key=lambda a: self.group[a.server])
        actions = lists[kernels.UPS] + lists[kernels.DOWNS] + lists[kernels.OFFS] + marks
        if self.keep_log:
            self.log.extend((now, a.kind, a.server, a.reason) for a in actions)
        return actions

    def _decide(self, k, now, view, dem, sums, row) -> tuple:
        """Group ``k``'s scalars: fills ``row``, its row of the kernel's ``par`` (see
        :mod:`usher.planner.kernels`), from ``sums`` (its row of ``group_sums``);
        returns the numbers its reasons quote (scale up, scale down, packing)."""
        gs = self.gs[k]
        slot = gs.schedule.slot(now, view.weekday, view.holiday)
        buf = (gs.buffer_pct if slot is None or slot.buffer_pct is None else slot.buffer_pct) / 100.0
        lead = gs.boot_lead_minutes * 60.0
        held, n_ready, seats_ready, n_powered, busy_ready, boot_room, n_mine = sums
        held, busy_ready, boot_room = float(held), float(busy_ready), float(boot_room)
        extra, reserve = self._extra_l[k], self._reserve_l[k]
        f_up = max(self._peak(now, lead, gs)[k], float(dem)) + extra + reserve
        need_up = math.ceil(f_up * (1.0 + buf)) - held
        min_ready = max(slot.min_on if slot is not None else 0, gs.min_ready)
        up = down = pack = None
        if seats_ready < need_up or n_ready < min_ready or n_powered < gs.min_powered:
            up = (f_up, lead, buf, need_up + held, seats_ready, n_ready)
            row[kernels.P_UP] = 1.0
            row[kernels.P_GAP] = need_up - seats_ready
            row[kernels.P_GAP_N] = max(min_ready - n_ready, gs.min_powered - n_powered)
            row[kernels.P_BOOT_ROOM] = ((gs.max_powered - n_powered) if gs.max_powered is not None
                                        else self.size[k])
            self.last_up[k] = now
        elif now - self.last_up[k] >= gs.cooldown_minutes * 60.0:
            horizon = lead + gs.cooldown_minutes * 60.0
            f_dn = max(self._peak(now, horizon, gs)[k], float(dem)) + extra + reserve
            need_dn = math.ceil(f_dn * (1.0 + buf + gs.hysteresis_pct / 100.0)) - held
            surplus = seats_ready - need_dn
            if surplus > 0 and n_ready > min_ready:
                down = (f_dn, horizon, buf, need_dn + held, seats_ready, surplus)
                row[kernels.P_DOWN] = 1.0
                row[kernels.P_SURPLUS] = surplus
                row[kernels.P_N_READY] = n_ready
                row[kernels.P_MIN_READY] = min_ready
                row[kernels.P_DRAIN_MAX] = -1 if gs.drain_max_sessions is None else gs.drain_max_sessions
                row[kernels.P_FEWEST] = gs.drain_fewest_first
        if n_mine:  # re-enabling only takes servers out of the drained set
            row[kernels.P_SHUT] = 1.0
            row[kernels.P_DELAY] = gs.power_off_delay_minutes * 60.0
            row[kernels.P_FROM_DRAIN] = gs.off_delay_from == "drain"
            row[kernels.P_KEEP_POWERED] = max(gs.min_powered, slot.min_on if slot is not None else 0)
            row[kernels.P_N_POWERED] = n_powered
            row[kernels.P_LOGOFF_AFTER] = (np.nan if gs.forced_logoff_minutes is None
                                           else gs.forced_logoff_minutes * 60.0)
        if gs.pack != "off":
            free_need = need_up - math.ceil(reserve * (1.0 + buf)) - busy_ready
            falling = True
            if gs.pack == "falling":
                horizon = lead + gs.cooldown_minutes * 60.0
                falling = self._peak(now, horizon, gs)[k] + extra <= float(dem)
            # booting servers (enabled) will take sessions too: their seats (boot_room) count first
            if gs.pack_pct is None:
                head = max(free_need, 0.0) + gs.pack_margin - boot_room
            else:
                head = min(max(free_need, 0.0), gs.pack_pct / 100.0 * float(dem)) + gs.pack_margin - boot_room
            row[kernels.P_PACK] = 1.0
            row[kernels.P_FALLING] = falling
            row[kernels.P_BY_LOAD] = gs.pack_by_load
            row[kernels.P_HEAD] = head
            pack = max(free_need, 0.0) + gs.pack_margin
        return up, down, pack

    def _actions(self, out, counts, kept, whys, da, s) -> list:
        """The kernel's action codes as four lists of :class:`Action` (ups, downs,
        offs, marks), each with its reason (formatted once per group and kind)."""
        lists: list[list[Action]] = [[], [], [], []]
        reasons: dict[int, str] = {}
        for lst in range(4):
            rows = out[lst, :counts[lst]]
            if not len(rows):
                continue
            dest = lists[lst]
            pos = rows[:, 0]
            servers = self.order[pos].tolist()
            if lst == kernels.OFFS:
                for i, code, k, at, n in zip(servers, rows[:, 1].tolist(), rows[:, 2].tolist(), da[pos].tolist(),
                                             s[pos].tolist()):
                    dest.append(Action(_KINDS[code], i, self._off_reason(k, code, at, n)))
                continue
            for i, code, k in zip(servers, rows[:, 1].tolist(), rows[:, 2].tolist()):
                why = reasons.get(k * 8 + code)
                if why is None:
                    why = reasons[k * 8 + code] = self._reason(k, code, whys[k], kept[k])
                dest.append(Action(_KINDS[code], i, why))
        return lists

    def _reason(self, k, code, why, kept) -> str:
        name, gs = self.names[k], self.gs[k]
        up, down, pack = why
        if code == kernels.A_ENABLE or code == kernels.A_BOOT:
            f_up, lead, buf, need, seats_ready, n_ready = up
            return (f"{name}: {'forecast' if gs.forecast else 'demand'} {f_up:,.0f} sessions by "
                    f"{_clock(self._now + lead)} + {buf:.0%} needs {need:,.0f} seats, {seats_ready:,} ready on "
                    f"{n_ready} servers")
        if code == kernels.A_DRAIN:
            f_dn, horizon, buf, need, seats_ready, surplus = down
            return (f"{name}: {'forecast' if gs.forecast else 'demand'} {f_dn:,.0f} sessions until "
                    f"{_clock(self._now + horizon)} + {buf:.0%} needs {need:,.0f} seats, {seats_ready:,} ready: "
                    f"surplus {surplus:,}")
        if code == kernels.A_PLACE_LAST:
            return (f"{name}: packing: {int(kept)} fullest servers hold the {pack:,.0f} free seats needed; "
                    f"new sessions last")
        return f"{name}: packing: kept open for new sessions"

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
        extra = np.zeros(self.n_groups)
        down_v = np.asarray(view.down, dtype=bool)
        if down_v.any():
            down = np.bincount(self.group, weights=down_v.astype(np.float64), minlength=self.n_groups)
            dark = down >= 0.5 * np.maximum(self.size, 1)
        else:  # nothing down: no group is dark (a dark group has at least one server down)
            dark = np.zeros(self.n_groups, dtype=bool)
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
        on = np.array([g.failover for g in self.gs])
        return np.where(on, extra, 0.0)

    def _zone_reserve(self, demand: np.ndarray) -> np.ndarray:
        """Seats each group holds against the loss of another zone of its pool (N+1
        over zones), ``zone_reserve_pct`` % of them: if zone ``y`` went dark, group
        ``z`` would take the share ``(D_z + 1) / sum over alive x != y of (D_x + 1)``
        of ``D_y`` (the failover split); the reserve is the largest over ``y``.
        Dark zones neither lose again nor take a share (failover covers them)."""
        pct = self._reserve_pct
        if not self._reserve_on:
            return np.zeros(self.n_groups)
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

    def _peak(self, now, horizon, gs) -> list:
        """The forecast peak of every group over ``[now, now + horizon]`` (once per
        call), as a list of floats."""
        key = (horizon, gs.trend, gs.forecast)
        out = self._peaks.get(key)
        if out is None:
            out = self._peaks[key] = self.forecast.peak(now, horizon, gs.trend, gs.forecast).tolist()  # type: ignore[union-attr]
        return out

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
