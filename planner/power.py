"""Power policies: which servers a planner wants powered.

Design: a policy is shown the fleet (:class:`FleetView`, read-only views of the
engine's server columns plus the simulator's fault state) every
``interval_seconds`` and answers with a wish, a bool array over the servers. It
never calls the engine: whoever runs it (``usher simulate``, a live broker)
carries the wish out — an off server boots, an unwanted one is drained and shut
down once empty. So a new policy is a new class here, with no change to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # the scenario is only read, never imported at run time
    from usher.sim.scenario import Scenario

__all__ = ["FleetView", "PowerPolicy", "FixedSchedule"]

DAY_SECONDS = 86_400


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
    scenario: "Scenario"


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

    def __init__(self, scenario: "Scenario", night_off: np.ndarray):
        from usher.sim.scenario import clock_seconds

        self.interval_seconds = int(scenario.power.policy_interval_seconds)
        self.off_at = clock_seconds(scenario.power.off_at) % DAY_SECONDS
        self.on_at = clock_seconds(scenario.power.on_at) % DAY_SECONDS
        self.night_off = np.asarray(night_off, dtype=bool)

    def is_night(self, now: float) -> bool:
        t = now % DAY_SECONDS
        if self.off_at <= self.on_at:
            return self.off_at <= t < self.on_at
        return t >= self.off_at or t < self.on_at

    def initial(self, view: FleetView) -> np.ndarray:
        return self.plan(view)

    def plan(self, view: FleetView) -> np.ndarray:
        if self.is_night(view.now):
            return ~self.night_off
        return np.ones(len(self.night_off), dtype=bool)
