"""A rollout run together with a power policy: both planners act in one interval.

Design: :class:`WithRollout` is an action policy made of a power policy (a wish
policy such as :class:`usher.planner.power.FixedSchedule`, or an action policy
such as :class:`usher.planner.autoscale.Autoscale`) and a
:class:`usher.planner.rollout.Rollout`. Each interval:

1. the **rollout** plans first, on the fleet as it is;
2. the **power policy** plans on the same fleet, with the servers the rollout
   holds (draining, rebooting or rolling back) shown as excluded — it never
   enables, boots or shuts down one of them — and with the rollout's drains of
   this interval shown already made (its capacity arithmetic does not count
   their seats twice). A wish policy's wish is turned into actions as the
   simulator would carry it out (boot, enable, drain, shut down once empty);
3. **place-last** is one bit per server shared by both: each planner's marks
   are kept apart (the rollout's old-image marks, autoscale's drain-aware
   marks) and the server is marked while *either* wants it (the union); a
   ``place_last`` action goes out when the union turns on, ``place_first``
   when it turns off.

Rules that follow: servers the power policy keeps off are never booted to be
updated (the rollout stages them: they take the image at their next boot, so a
server autoscale boots comes up on the new image); the rollout drains only
servers that are on and enabled, so it never takes one the power policy is
draining.

The composite also keeps what the simulator reports on a rollout: the smallest
spare seats over the window (free seats of the servers able to take a session:
their seats minus their sessions and pending logons; and that minus the buffer,
``buffer_pct`` of the fleet's sessions and pending logons) and, every interval, the servers by image
and state (:attr:`timeline`).
"""

from __future__ import annotations

import math
from typing import Any
from dataclasses import replace

import numpy as np

from usher.planner.power import BOOT, DRAIN, ENABLE, PLACE_FIRST, PLACE_LAST, SHUTDOWN, Action, FleetView, \
    is_action_policy
from usher.planner.rollout import ROLLBACK, STAGED, STATUS_NAMES, Rollout

__all__ = ["WithRollout", "TIMELINE_COLUMNS"]

OFF, BOOTING, ON = 0, 1, 2
ENABLED, DRAIN_MODE, MAINTENANCE = 0, 1, 2
_MARKS = (PLACE_LAST, PLACE_FIRST)
#: columns of :attr:`WithRollout.timeline`: the time, then servers per rollout status
#: (``old`` ... ``rollback``) and the new image's servers on / old image's servers on
TIMELINE_COLUMNS = ("t", *STATUS_NAMES, "new_on", "old_on", "spare_seats")


class WithRollout:
    """A power policy and a rollout acting together (see the module's docstring).

    Args:
        power: the power policy (wish or action policy).
        rollout: the :class:`Rollout`.
    """

    acts = True

    def __init__(self, power, rollout: Rollout):
        self.power, self.rollout = power, rollout
        self.interval_seconds = min(int(power.interval_seconds), int(rollout.interval_seconds))
        self.name = f"{getattr(power, 'name', 'power')}+rollout"
        self.power_acts = is_action_policy(power)
        # the rollout's place-last marks and the power policy's: bool arrays made by the first call
        self.want_r: Any = None
        self.want_p: Any = None
        self.surged: Any = None  # bool per server: booted to keep the buffer, held from the power policy
        self.min_spare: int | None = None
        self.min_spare_over_buffer: int | None = None
        self.timeline: list = []

    def initial(self, view: FleetView):
        return None if self.power_acts else self.power.initial(view)

    def new_day(self, view: FleetView):
        hook = getattr(self.power, "new_day", None)
        if hook is not None:
            hook(view)

    # ------------------------------------------------------------ planning
    def plan(self, view: FleetView, now: float | None = None) -> list:
        now = view.now if now is None else float(now)
        n = len(view.power)
        if self.want_r is None:
            self.want_r, self.want_p = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        r_acts = self.rollout.step(view, now)
        held = self.rollout.held()
        mode = np.array(view.mode, copy=True)
        for a in r_acts:
            if a.kind == DRAIN:
                mode[a.server] = DRAIN_MODE
            elif a.kind == ENABLE:
                mode[a.server] = ENABLED
        if self.surged is not None:
            held = held | self.surged
        excluded = held if view.excluded is None else held | np.asarray(view.excluded, dtype=bool)
        pview = replace(view, mode=mode, excluded=excluded, place_last=None)
        if self.power_acts:
            p_acts = self.power.plan(pview, now)
        else:
            p_acts = self._wish_actions(pview, self.power.plan(pview))
        out = [a for a in r_acts if a.kind not in _MARKS]
        p_out = [a for a in p_acts if a.kind not in _MARKS and not held[a.server]]
        s = self.rollout.settings
        if s.start <= now < s.deadline and self.rollout.status is not None:
            p_out = self._keep_buffer(view, now, out, p_out)
        elif self.surged is not None:
            self.surged[:] = False  # the window is over: the power policy has them back
        out += p_out
        out += self._marks(r_acts, p_acts)
        self._observe(view, now)
        return out

    def _keep_buffer(self, view: FleetView, now: float, r_out: list, p_out: list) -> list:
        """Seats >= demand + buffer in each group through the window, whatever the two
        planners asked (returns the power policy's actions, filtered; appends boots to
        ``r_out``).

        Details: per group, ``need = ceil(D x (1 + buffer_pct / 100))``, D = sessions +
        pending logons of the group (those on drained servers too: they stay demand
        until they end); ``ready`` = seats of servers on, enabled, registered, not
        locked, after this interval's drains and enables. A power-policy drain that
        takes ``ready`` below ``need`` is dropped (with its shutdown). Then, where
        ``ready`` + seats booting < ``need`` + the seats the waves want to drain next
        (:meth:`Rollout.wanted_seats`), off servers are booted (staged ones first: they
        come up on the new image; most seats first) and held from the power policy
        until the window closes: autoscale's own sizing keeps less than the rollout's
        buffer, and without the surge the waves would stall at their capacity rule."""
        r = self.rollout
        if not hasattr(r, "members"):
            return p_out
        n = len(view.power)
        if self.surged is None:
            self.surged = np.zeros(n, dtype=bool)
        power, mode = np.asarray(view.power), np.array(view.mode, copy=True)
        seats = np.asarray(view.max_sessions)
        reg = np.ones(n, bool) if view.registered is None else np.asarray(view.registered, dtype=bool)
        locked = (mode == MAINTENANCE) | np.asarray(view.down, dtype=bool)
        if view.excluded is not None:
            locked = locked | np.asarray(view.excluded, dtype=bool)
        coming = (power == BOOTING) & ~locked
        for a in r_out:
            if a.kind in (DRAIN, ENABLE):
                mode[a.server] = DRAIN_MODE if a.kind == DRAIN else ENABLED
            elif a.kind == BOOT:
                coming[a.server] = True
        ready = (power == ON) & (mode == ENABLED) & reg & ~locked
        busy = np.asarray(view.sessions) + np.asarray(view.pending)
        buf = 1.0 + r.settings.buffer_pct / 100.0
        group = r.group
        need = np.zeros(r.n_groups, dtype=np.int64)
        for k, members in r.members:
            need[k] = math.ceil(float(busy[members].sum()) * buf)
        have = np.bincount(group[ready], weights=seats[ready], minlength=r.n_groups).astype(np.int64)
        kept, dropped = [], set()
        for a in p_out:
            i, k = a.server, group[a.server]
            if a.kind == DRAIN and ready[i] and have[k] - seats[i] < need[k]:
                dropped.add(i)
                continue
            if a.kind == SHUTDOWN and i in dropped:
                continue
            if a.kind == DRAIN and ready[i]:
                ready[i] = False
                have[k] -= seats[i]
            elif a.kind == BOOT:
                coming[i] = True
            kept.append(a)
        have += np.bincount(group[coming], weights=seats[coming], minlength=r.n_groups).astype(np.int64)
        want = need + r.wanted_seats(view, now)
        off = (power == OFF) & ~locked & ~coming & ~r.held() & (r.status != ROLLBACK)
        for k, members in r.members:
            if have[k] >= want[k]:
                continue
            cand = members[off[members]]
            cand = cand[np.lexsort((-seats[cand], r.status[cand] != STAGED))]
            for i in cand.tolist():
                if have[k] >= want[k]:
                    break
                r_out.append(Action(BOOT, i, f"rollout surge ({r.names[k]}): {int(have[k]):,} seats ready or "
                                             f"booting < {int(need[k]):,} (demand + {r.settings.buffer_pct:g} %) "
                                             f"+ {int(want[k] - need[k]):,} the waves drain next"))
                have[k] += seats[i]
                self.surged[i] = True
        return kept

    def _wish_actions(self, view: FleetView, wish) -> list:
        """A wish policy's wish as actions, as the simulator carries a wish out
        (usher.sim.handlers.apply_power): boot, enable, drain, shut down."""
        if wish is None:
            return []
        want = np.asarray(wish, dtype=bool)
        power, mode = np.asarray(view.power), np.asarray(view.mode)
        down, ex = np.asarray(view.down, dtype=bool), np.asarray(view.excluded, dtype=bool)
        empty = (np.asarray(view.sessions) == 0) & (np.asarray(view.pending) == 0)
        free = ~ex
        why = f"{getattr(self.power, 'name', 'power')}: schedule"
        acts = [Action(BOOT, i, why) for i in np.nonzero(free & want & ~down & (power == OFF))[0].tolist()]
        acts += [Action(ENABLE, i, why) for i in
                 np.nonzero(free & want & ~down & (power == ON) & (mode == DRAIN_MODE))[0].tolist()]
        on_off = free & ~want & (power == ON)
        acts += [Action(DRAIN, i, why) for i in np.nonzero(on_off & (mode == ENABLED))[0].tolist()]
        acts += [Action(SHUTDOWN, i, why) for i in
                 np.nonzero(on_off & ((mode == ENABLED) | (mode == DRAIN_MODE)) & empty)[0].tolist()]
        return acts

    def _marks(self, r_acts, p_acts) -> list:
        """Place-last marks: the union of both planners' marks."""
        before = self.want_r | self.want_p
        last = {}
        for acts, want in ((r_acts, self.want_r), (p_acts, self.want_p)):
            for a in acts:
                if a.kind in _MARKS:
                    want[a.server] = a.kind == PLACE_LAST
                    last[a.server] = a.reason
        after = self.want_r | self.want_p
        out = [Action(PLACE_LAST, i, last.get(i, "place-last")) for i in np.nonzero(after & ~before)[0].tolist()]
        out += [Action(PLACE_FIRST, i, last.get(i, "place-last cleared"))
                for i in np.nonzero(before & ~after)[0].tolist()]
        return out

    # ------------------------------------------------------------ what is reported
    def _observe(self, view: FleetView, now: float):
        s = self.rollout.settings
        power, mode = np.asarray(view.power), np.asarray(view.mode)
        reg = np.ones(len(power), bool) if view.registered is None else np.asarray(view.registered, dtype=bool)
        able = (power == ON) & (mode == ENABLED) & reg & ~np.asarray(view.down, dtype=bool)
        busy_all = np.asarray(view.sessions) + np.asarray(view.pending)
        busy = int(busy_all.sum())
        spare = int(np.asarray(view.max_sessions)[able].sum()) - int(busy_all[able].sum())
        st = self.rollout.status
        on = power != OFF
        images = view.image
        if images is not None:
            new = np.fromiter((img == s.image for img in images), dtype=bool, count=len(power))
        else:
            new = np.zeros(len(power), dtype=bool)
        counts = np.bincount(st, minlength=len(STATUS_NAMES)).tolist()
        self.timeline.append((now, *counts, int((new & on).sum()), int((~new & on).sum()), spare))
        if s.start <= now <= s.deadline:
            over = spare - math.ceil(busy * s.buffer_pct / 100.0)
            self.min_spare = spare if self.min_spare is None else min(self.min_spare, spare)
            self.min_spare_over_buffer = over if self.min_spare_over_buffer is None else min(
                self.min_spare_over_buffer, over)
