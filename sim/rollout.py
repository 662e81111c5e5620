"""The simulator's side of an image rollout: warnings, launches reported to the
planner's health check, and the bad-image faults.

Design: the planner (:class:`usher.planner.rollout.Rollout`, inside the
:class:`usher.planner.compose.WithRollout` composite at ``Day.rollout``) decides;
the handlers call these functions only when a [rollout] runs, so a day without one
takes none of these paths. :class:`RolloutRun` holds what the simulator records of
the rollout (users warned) and the faults of ``[rollout] bad_image`` and
``bad_image_launch_failure_pct``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RolloutRun"]


class RolloutRun:
    """A rollout carried out in a day.

    Args:
        composite: the :class:`usher.planner.compose.WithRollout` planning it.
        spec: the scenario's :class:`usher.sim.scenario.RolloutSpec`.
        seed: the day's seed (the failing logons of a bad image are drawn from it).
    """

    def __init__(self, composite, spec, seed: int):
        self.composite, self.planner = composite, composite.rollout
        self.image = spec.image
        self.fail_share = spec.bad_image_launch_failure_pct / 100.0
        self.rng = np.random.default_rng([seed, 37])
        self.users_warned: set = set()
        self.warnings = 0  # warning messages delivered (one per session per warning)

    def placed(self, d, v, srv: int):
        """A new session placed on ``srv``: reported to the planner; on a server that
        runs an image whose logons fail, it fails (``v.fail``) with the set share."""
        if self.fail_share > 0.0 and d.state.image[srv] == self.image and self.rng.random() < self.fail_share:
            v.fail = True
        self.planner.launch_placed(srv)

    def failed(self, srv: int):
        """A logon on ``srv`` failed: reported to the planner."""
        self.planner.launch_failed(srv)

    def warn(self, d, actions, now):
        """``warn`` actions: the users of the sessions on those servers get the message
        (counted: warnings delivered, distinct users warned); logged as actions."""
        servers = {a.server for a in actions}
        for v, srv in d.books.entries.values():
            if srv in servers:
                self.warnings += 1
                self.users_warned.add(v.user)
        log = d.state.actions
        if log is not None:
            log.extend((now, a.kind, a.server, a.reason) for a in actions)
