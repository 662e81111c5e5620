"""Power policies: which servers a planner wants powered, or what it does to them.

Design: a policy is shown the fleet (:class:`FleetView`, read-only views of the
engine's server columns plus the simulator's fault state) every
``interval_seconds`` and answers in one of two ways:

- a *wish policy* (:class:`PowerPolicy`, e.g. :class:`FixedSchedule`) answers
  with a bool array over the servers; whoever runs it carries the wish out — an
  off server boots, an unwanted one is drained and shut down once empty;
- an *action policy* (:class:`ActionPolicy`, e.g.
  :class:`usher.planner.autoscale.Autoscale`) answers ``plan(view, now)`` with a
  list of :class:`Action` s — boot, drain, shut down, enable, log off — each with a
  reason an operator can read. Whoever runs it checks each action against the
  server's state at the moment it carries it out (:func:`action_valid`) and
  refuses a stale one (a shutdown of a server that took a session since).

A policy never calls the engine, so a new policy is a new class here, with no
change to the loop, and the same object drives ``usher simulate`` and a live
broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # the scenario is only read, never imported at run time
    from usher.sim.scenario import Scenario

__all__ = ["FleetView", "PowerPolicy", "ActionPolicy", "Action", "FixedSchedule", "action_valid", "is_action_policy",
           "BOOT", "DRAIN", "SHUTDOWN", "ENABLE", "LOGOFF", "PLACE_LAST", "PLACE_FIRST", "REIMAGE", "ACTION_KINDS"]

DAY_SECONDS = 86_400

#: action kinds: boot an off server; drain an enabled one (no new sessions, reconnects
#: allowed); shut down a drained, empty one; enable a draining one again; log off the
#: sessions of a drained one (forced logoff, only when the policy allows it); mark a
#: server place-last (new sessions only when no unmarked server can take one) or clear
#: the mark (placement preferences: ``Scheduler.set_place_last``); reimage: an off
#: server is set to boot a new image (``Action.image``; ``Scheduler.set_image`` when
#: it comes back)
BOOT, DRAIN, SHUTDOWN, ENABLE, LOGOFF = "boot", "drain", "shutdown", "enable", "logoff"
PLACE_LAST, PLACE_FIRST, REIMAGE = "place_last", "place_first", "reimage"
ACTION_KINDS = (BOOT, DRAIN, SHUTDOWN, ENABLE, LOGOFF, PLACE_LAST, PLACE_FIRST, REIMAGE)

_OFF, _BOOTING, _ON = 0, 1, 2  # usher.Power codes
_ENABLED, _DRAIN = 0, 1  # usher.Mode codes


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
        want_on: bool, the policy's previous answer (wish policies).
        scenario: the :class:`usher.sim.scenario.Scenario` being run (None live).
        excluded: bool or None, servers a power policy must never touch (an
            operator's exclusion tag); maintenance mode excludes a server too.
        state_since: float64 or None, when each server entered its power state
            (seconds on the same clock as ``now``).
        registered: bool or None (None: every server registered).
        weekday: 0 = Monday ... 6 = Sunday, of the day being run.
        holiday: True on a public holiday.
        day_index: the day's number in a multi-day run (0 = the first).
        place_last: bool or None, servers marked place-last (None: not known;
            a planner then trusts its own record of what it marked).
        image: list of image names (str or None) per server, or None.
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
    scenario: "Scenario | None" = None
    excluded: np.ndarray | None = None
    state_since: np.ndarray | None = None
    registered: np.ndarray | None = None
    weekday: int = 0
    holiday: bool = False
    day_index: int = 0
    place_last: np.ndarray | None = None
    image: list | None = None


@dataclass(frozen=True)
class Action:
    """One thing a power planner asks for.

    Attributes:
        kind: one of :data:`ACTION_KINDS`.
        server: the server's index in the view.
        reason: one line an operator can read ("records/DC-North: forecast 1,240
            sessions at 07:40 needs 1,364 seats, 1,180 ready").
    """

    kind: str
    server: int
    reason: str
    image: str | None = None  # the image a ``reimage`` sets


def action_valid(kind: str, power: int, mode: int, sessions: int, pending: int, down: bool) -> bool:
    """Whether ``kind`` may be carried out on a server in this state, now.

    boot: off and not down. drain: on or booting, enabled. enable: on or booting,
    draining, not down. shutdown: on, draining, no session and no pending logon.
    logoff: on and draining (its sessions are logged off). place_last, place_first:
    any server (a preference; the engine keeps it across power and mode changes).
    reimage: off, or shutting down, or down (it boots the image next time)."""
    if kind == PLACE_LAST or kind == PLACE_FIRST:
        return True
    if kind == REIMAGE:
        return power != _ON and power != _BOOTING
    if kind == BOOT:
        return power == _OFF and not down
    if kind == DRAIN:
        return power in (_ON, _BOOTING) and mode == _ENABLED
    if kind == ENABLE:
        return power in (_ON, _BOOTING) and mode == _DRAIN and not down
    if kind == SHUTDOWN:
        return power == _ON and mode == _DRAIN and sessions == 0 and pending == 0
    if kind == LOGOFF:
        return power == _ON and mode == _DRAIN
    return False


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


@runtime_checkable
class ActionPolicy(Protocol):
    """Plans power actions; the simulator (or a live broker) carries them out.

    ``interval_seconds``: how often ``plan`` is called. ``plan(view, now)``
    returns a list of :class:`Action` (in the order to carry them out). The
    runner checks each with :func:`action_valid` at the moment it acts and skips
    (and counts) one that the server's state no longer allows. ``new_day(view)``
    is called at 00:00 of every simulated day (after the first), so that a
    planner that learns from history closes the day it saw.
    """

    interval_seconds: int
    acts: bool

    def plan(self, view: FleetView, now: float) -> list: ...


def is_action_policy(policy) -> bool:
    """True for a policy that answers with actions (its ``acts`` attribute is true)."""
    return bool(getattr(policy, "acts", False))


class FixedSchedule:
    """The scenario's fixed schedule: the servers marked ``night_off`` (a share of
    each pool in each zone, ``power.night_off_*``) are wanted off from
    ``power.off_at`` to ``power.on_at``; every server is wanted on otherwise."""

    name = "fixed"

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
