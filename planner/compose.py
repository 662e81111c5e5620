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
from usher.planner.rollout import STATUS_NAMES, Rollout

__all__ = ["WithRollout", "TIMELINE_COLUMNS"]

OFF, BOOTING, ON = 0, 1, 2
ENABLED, DRAIN_MODE = 0, 1
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
        excluded = held if view.excluded is None else held | np.asarray(view.excluded, dtype=bool)
        pview = replace(view, mode=mode, excluded=excluded, place_last=None)
        if self.power_acts:
            p_acts = self.power.plan(pview, now)
        else:
            p_acts = self._wish_actions(pview, self.power.plan(pview))
        out = [a for a in r_acts if a.kind not in _MARKS]
        out += [a for a in p_acts if a.kind not in _MARKS and not held[a.server]]
        out += self._marks(r_acts, p_acts)
        self._observe(view, now)
        return out

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
