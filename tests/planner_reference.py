"""The autoscale planner's per-group decisions as plain Python: the reference the
planner's compiled decisions are tested against (tests/test_planner_decide.py).

:class:`ReferenceAutoscale` is :class:`usher.planner.autoscale.Autoscale` with
``plan`` written group by group: ``_decide`` reads each group's settings, its
schedule slot and its forecast peaks one group at a time and fills that group's
row of the kernel's ``par``; the reasons' numbers are made for every group; and
``_pack`` chooses each packing group's keep set from prefixes of the candidates
in sorted order. The bookkeeping, the failover and zone reserve, the kernels'
other array steps (:func:`group_sums` below, ``kernels.plan_groups`` with packing
off), drain-aware placement and consolidation are the planner's own.
"""

from __future__ import annotations

import math

import numpy as np

from usher.planner import kernels
from usher.planner.autoscale import _KINDS, _NONE, Autoscale, _clock
from usher.planner.forecast import day_type
from usher.planner.power import Action, FleetView


def group_sums(p, md, b, seats, rd, lk, da, bounds, out) -> None:
    """Per group ``k`` (row ``k`` of ``out``), the sums ``kernels.gather`` makes, in
    numpy: held (busy on servers not ready), ready servers, their seats, powered
    (on or booting), busy on ready servers, seats of ready booting servers,
    servers drained by the planner (``da`` not NaN, on, draining, not locked)."""
    on, booting = p == kernels.ON, p == kernels.BOOTING
    mine = on & (md == kernels.DRAIN_MODE) & ~lk & ~np.isnan(da)
    for k in range(len(bounds) - 1):
        g = slice(bounds[k], bounds[k + 1])
        r = rd[g]
        out[k] = (b[g][~r].sum(), r.sum(), seats[g][r].sum(), (on[g] | booting[g]).sum(), b[g][r].sum(),
                  seats[g][r & booting[g]].sum(), mine[g].sum())


class ReferenceAutoscale(Autoscale):
    """Autoscale deciding each group's scalars in Python, one group at a time."""

    def plan(self, view: FleetView, now: float | None = None) -> list:
        """The actions for ``view`` at ``now`` (default ``view.now``), in the order
        to carry them out: enables and boots, then drains, logoffs, shutdowns."""
        now = self._begin(view, now)
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
                       self.group, self.idle_since, self.drain_at, self.chosen_sessions, gi, gb, gf, demand,
                       np.empty((self.n_groups, kernels.N_SUMS), dtype=np.int64))
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
        group_sums(p, md, b, seats, rd, lk, da, bounds, sums)
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
        no_pack = par.copy()
        no_pack[:, kernels.P_PACK] = 0.0  # packing below, in Python
        kernels.plan_groups(p, md, s, q, b, seats, rd, lk, li, da, idle, mk, bounds, no_pack,
                            now, key_scale, out, counts, kept)
        self.drain_at[o] = da
        lists = self._actions(out, counts, kept, whys, da, s)
        drained = out[kernels.DOWNS, :counts[kernels.DOWNS], 0]
        self.chosen_sessions[o[drained]] = s[drained]
        marks = lists[kernels.MARKS]
        cols = (p.tolist(), b.tolist(), seats.tolist(), rd.tolist(), lk.tolist(), li.tolist(), da.tolist())
        for k in range(self.n_groups):
            if rows[k][kernels.P_PACK]:
                marks.extend(self._pack(k, rows[k], whys[k], cols, mk))
        self.marked[o] = mk
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
            row[kernels.P_HOLD] = gs.pack_hold
            row[kernels.P_HEAD] = head
            row[kernels.P_BOOT_SEATS] = boot_room
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
            return (f"{name}: packing: {int(kept)} {'kept' if gs.pack_hold else 'fullest'} servers hold the "
                    f"{pack:,.0f} free seats needed; new sessions last")
        return f"{name}: packing: kept open for new sessions"

    def _pack(self, k, row, why, cols, mk) -> list:
        """Group ``k``'s keep set (ramp-down packing) and its mark changes, in
        Python. Candidates are ranked by (most busy, most seats), stable.

        Afresh: the shortest prefix of the ranked candidates whose room reaches
        ``head`` (all of them when none does). Sticky (``pack_hold``): the
        unmarked candidates, joined when their room is short of ``head`` by the
        shortest prefix of the ranked marked ones that makes it up; then its last
        ranked member is dropped while the room of the others reaches ``head`` +
        the booting seats + the dropped server's seats. Non-candidates: unmarked
        afresh; sticky, a ready booting server is unmarked and any other keeps
        its mark. ``mk`` (group order) takes the new marks."""
        p, b, seats, rd, lk, li, da = cols
        lo, hi = self.bounds[k], self.bounds[k + 1]
        by_load, head, hold = bool(row[kernels.P_BY_LOAD]), row[kernels.P_HEAD], bool(row[kernels.P_HOLD])
        falling = bool(row[kernels.P_FALLING])

        def room(j):
            free = float(seats[j] - b[j])
            if by_load:
                free = min(free, math.floor(seats[j] * min(max(1.0 - li[j] / kernels.FULL_LOAD, 0.0), 1.0)))
            return max(free, 0.0)

        def prefix(servers, base):
            total = base
            for n, j in enumerate(servers):
                if total >= head:
                    return servers[:n]
                total += room(j)
            return servers

        pos = range(lo, hi)
        cand = [j for j in pos if rd[j] and p[j] == kernels.ON and not lk[j] and math.isnan(da[j])]
        ranked = sorted(cand, key=lambda j: (-b[j], -seats[j]))
        if not falling:
            want = set()
        elif not hold:
            want = set(cand) - set(prefix(ranked, 0.0))
        else:
            keep = [j for j in ranked if not mk[j]]
            have = sum(room(j) for j in keep)
            if have < head:
                joined = set(keep) | set(prefix([j for j in ranked if mk[j]], have))
                keep = [j for j in ranked if j in joined]
            while keep and sum(room(j) for j in keep[:-1]) >= head + row[kernels.P_BOOT_SEATS] + seats[keep[-1]]:
                keep.pop()
            others = {j for j in pos if mk[j] and j not in cand and not (rd[j] and p[j] == kernels.BOOTING)}
            want = (set(cand) - set(keep)) | others
        changes = ([(j, kernels.A_PLACE_LAST) for j in pos if j in want and not mk[j]]
                   + [(j, kernels.A_PLACE_FIRST) for j in pos if mk[j] and j not in want])
        for j in pos:
            mk[j] = j in want
        reasons = {kernels.A_PLACE_LAST: self._reason(k, kernels.A_PLACE_LAST, why, len(set(cand) - want)),
                   kernels.A_PLACE_FIRST: self._reason(k, kernels.A_PLACE_FIRST, why, 0)}
        return [Action(_KINDS[code], int(self.order[j]), reasons[code]) for j, code in changes]

    def _peak(self, now, horizon, gs) -> list:
        """The forecast peak of every group over ``[now, now + horizon]`` (once per
        call), as a list of floats."""
        key = (horizon, gs.trend, gs.forecast)
        out = self._peaks.get(key)
        if out is None:
            out = self._peaks[key] = self.forecast.peak(now, horizon, gs.trend, gs.forecast).tolist()  # type: ignore[union-attr]
        return out

