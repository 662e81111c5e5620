"""Image rollout: every server onto a new image inside a window, no user logged off.

Design: :class:`Rollout` is an action policy like :class:`usher.planner.autoscale.Autoscale`:
``step(view, now) -> actions`` (boot, drain, shut down, enable, reimage, place-last)
through the same :class:`usher.planner.power.Action` seam, each action with a reason.
Its whole state is plain data (:meth:`Rollout.to_dict` / :meth:`Rollout.from_dict`,
and it pickles), kept with the scheduler's state so a restarted broker continues the
same plan. A server goes through::

    old --drain--> draining --empty: shutdown--> rebooting --off: reimage + boot--> updated
    old (off) --reimage--> staged (boots the new image whenever it boots; counts as updated)

1. **canary**: ``canary`` servers, one per group, are updated first: a server that is
   off is booted on the new image (nothing to drain), else one that is on is drained
   (fewest sessions first) and rebooted; the power policy leaves them alone until
   their soak has passed (:meth:`Rollout.held`); when all have come back registered, they
   soak ``soak_minutes`` and until each has had ``soak_launches`` launches (new
   sessions go to them first: item 3); only then do the waves and the staging of off
   servers start (a bad image never reaches a server that is off).
2. **waves**: in each group (one pool in one zone) at most ``max_unavailable`` servers
   (a count, or a share of the group's servers when ``max_unavailable_pct`` is set) are
   draining or rebooting at once, and a server is drained only while the seats left on
   servers able to take a session stay >= demand (sessions + pending logons of the
   group) x (1 + ``buffer_pct``). Fewest sessions first; a server is shut down only
   once it holds no session and no pending logon — never with a session on it.
3. **placement**: from the window's start, servers still on the old image are marked
   place-last (new sessions go to the canary and updated servers first, so old ones
   empty sooner); the mark is cleared when the server is rebooted. At the deadline,
   servers still draining are enabled again (they keep the old image).
4. **health**: a rebooted server that has not registered ``register_timeout_seconds``
   after it came on, or a server on the new image whose launches fail above
   ``max_failed_launch_pct`` (once it has had ``failed_launch_min``; reported by whoever
   places sessions: :meth:`Rollout.launch_placed`, :meth:`Rollout.launch_failed`),
   **halts** the rollout: nothing more is drained, servers drained but not yet rebooted
   are enabled again, servers staged and still off go back to their old image, and the
   failed servers and the canaries are rolled back (drained, shut down, reimaged to
   their old image, booted); ``halt_reason`` says why.
5. **operator**: :meth:`pause` (no new drain; what is under way finishes),
   :meth:`resume`, :meth:`cancel` (as a halt, without a rollback).
6. **forced logoff** (``forced_logoff``, off by default): the users of servers still on
   the old image are warned (``warn``: ``warn_minutes`` before the logoff time,
   ``logoff_lead_minutes`` before the deadline); from the logoff time the waves log off
   the sessions of each server they drain (``logoff``), still within the unavailable
   limit and the capacity rule, so the servers reboot onto the image by the deadline.
   Without it, a server whose sessions do not end by the deadline stays on its old
   image (the rollout reports it unfinished).

Servers in maintenance mode, excluded (``view.excluded``) or kept down by a fault are
never touched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from typing import Any

import numpy as np

from usher.errors import InvalidArgument
from usher.planner.power import BOOT, DRAIN, ENABLE, LOGOFF, PLACE_FIRST, PLACE_LAST, REIMAGE, SHUTDOWN, Action, \
    FleetView

__all__ = ["Rollout", "RolloutSettings", "LaunchHealth", "OLD", "DRAINING", "REBOOTING", "UPDATED", "STAGED",
           "ROLLBACK", "WARN"]

#: action kind: warn the users of a server's sessions that they will be logged off
#: (``Action.reason`` is the message); it changes no state
WARN = "warn"

OFF, BOOTING, ON = 0, 1, 2
ENABLED, DRAIN_MODE, MAINTENANCE = 0, 1, 2
#: a server's status in the rollout
OLD, DRAINING, REBOOTING, UPDATED, STAGED, ROLLBACK = range(6)
STATUS_NAMES = ("old", "draining", "rebooting", "updated", "staged", "rollback")
PHASES = ("waiting", "canary", "soak", "waves", "done", "halted", "cancelled")


@dataclass
class RolloutSettings:
    """What a rollout does (docs/ROLLOUT.md).

    Attributes:
        image: the target image.
        start, deadline: the window, seconds on the planner's clock.
        max_unavailable: servers of one pool in one zone draining or rebooting at once
            (a count; when set, it wins over the share).
        max_unavailable_pct: else that share (%) of the group's servers (at least 1);
            default 50. The capacity rule binds first at busy hours; at night, with
            most seats free, this limit is what paces the rollout.
        buffer_pct: free seats kept over the demand while draining (shared with autoscale).
        canary: servers rebooted first; soak_minutes: how long they must stay healthy.
        register_timeout_seconds: a rebooted server must register within this.
        max_failed_launch_pct: a server on the new image whose launches fail above
            this share (%) halts the rollout, once it has had ``failed_launch_min``
            launches on the image; None: not checked.
        failed_launch_min: launches a server must have had on the new image before
            its failure rate is judged.
        soak_launches: the soak lasts until each canary has had this many launches
            (0: time only; a broker that does not report launches sets 0).
        forced_logoff: off by default. When on, the sessions still open on servers
            on the old image are logged off ``logoff_lead_minutes`` before the
            deadline (time for them to reboot onto the image), after warnings
            ``warn_minutes`` before the logoff.
        warn_minutes: when the users of those servers are warned (minutes before the logoff).
        logoff_lead_minutes: the forced logoff comes this long before the deadline.
    """

    image: str
    start: float = 0.0
    deadline: float = 6 * 3600.0
    max_unavailable: int | None = None
    max_unavailable_pct: float | None = 50.0
    buffer_pct: float = 10.0
    canary: int = 2
    soak_minutes: float = 30.0
    register_timeout_seconds: float = 600.0
    max_failed_launch_pct: float | None = 25.0
    failed_launch_min: int = 10
    soak_launches: int = 10
    forced_logoff: bool = False
    warn_minutes: tuple = (15.0, 5.0, 1.0)
    logoff_lead_minutes: float = 20.0

    def check(self) -> "RolloutSettings":
        if not isinstance(self.image, str) or not self.image:
            raise InvalidArgument("image", self.image, "must be a non-empty string")
        for key in ("start", "deadline", "buffer_pct", "soak_minutes", "register_timeout_seconds",
                    "logoff_lead_minutes"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidArgument(key, v, "must be a number >= 0")
        if self.deadline <= self.start:
            raise InvalidArgument("deadline", self.deadline, f"must be after the start ({self.start})")
        if self.max_unavailable is None and self.max_unavailable_pct is None:
            raise InvalidArgument("max_unavailable", None, "a count or max_unavailable_pct is needed")
        for key in ("max_unavailable", "canary"):
            v = getattr(self, key)
            if key == "max_unavailable" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "max_unavailable" else 0):
                raise InvalidArgument(key, v, "must be an integer >= 1" if key == "max_unavailable"
                                      else "must be an integer >= 0")
        for key in ("max_unavailable_pct", "max_failed_launch_pct"):
            p = getattr(self, key)
            if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100):
                raise InvalidArgument(key, p, "must be a number in (0, 100] or absent")
        for key, low in (("failed_launch_min", 1), ("soak_launches", 0)):
            m = getattr(self, key)
            if isinstance(m, bool) or not isinstance(m, int) or m < low:
                raise InvalidArgument(key, m, f"must be an integer >= {low}")
        if not isinstance(self.forced_logoff, bool):
            raise InvalidArgument("forced_logoff", self.forced_logoff, "must be true or false")
        w = self.warn_minutes
        if not isinstance(w, (list, tuple)) or not all(
                not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in w):
            raise InvalidArgument("warn_minutes", w, "must be a list of numbers > 0")
        self.warn_minutes = tuple(sorted((float(x) for x in w), reverse=True))
        if self.forced_logoff and self.deadline - self.logoff_lead_minutes * 60.0 <= self.start:
            raise InvalidArgument("logoff_lead_minutes", self.logoff_lead_minutes,
                                  "the forced logoff must fall inside the window")
        return self

    @property
    def logoff_at(self) -> float:
        """When the forced logoff happens (seconds on the planner's clock)."""
        return self.deadline - self.logoff_lead_minutes * 60.0


def _clock(t: float) -> str:
    t = int(t) % 86_400
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}"


class LaunchHealth:
    """Launches and failed launches per server since it came up on the new image.

    Whoever places sessions reports each launch placed on a server and each one that
    failed (:meth:`Rollout.launch_placed`, :meth:`Rollout.launch_failed`). Each step
    (:meth:`see`) clears the counts of every server not on and running the new image,
    so a server's counts are those since its boot onto it. Arrays of shape (n_servers,).
    """

    def __init__(self, n: int):
        self.launches = np.zeros(n, dtype=np.int64)
        self.failed = np.zeros(n, dtype=np.int64)

    def see(self, on_new: np.ndarray):
        """``on_new``: bool, servers on and running the new image now."""
        self.launches[~on_new] = 0
        self.failed[~on_new] = 0

    def failing(self, max_pct: float, min_launches: int) -> np.ndarray:
        """Servers with at least ``min_launches`` launches of which more than ``max_pct`` % failed.

        Details: failed x 100 > max_pct x launches, on integer counts."""
        return np.nonzero((self.launches >= min_launches) & (self.failed * 100.0 > max_pct * self.launches))[0]

    def to_dict(self) -> dict:
        return {"launches": self.launches.tolist(), "failed": self.failed.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "LaunchHealth":
        h = cls(0)
        h.launches, h.failed = np.asarray(d["launches"], dtype=np.int64), np.asarray(d["failed"], dtype=np.int64)
        return h


class Rollout:
    """The rollout planner (see the module's docstring)."""

    acts = True

    def __init__(self, settings: RolloutSettings, interval_seconds: int = 60):
        self.settings = settings.check()
        self.interval_seconds = int(interval_seconds)
        self.name = "rollout"
        self.phase = "waiting"
        self.halt_reason: str | None = None
        self.paused = False
        self.status: Any = None  # int8 ndarray per server, made by the first step
        self.old_image: list | None = None
        self.canaries: list = []
        self.canary_was_off: list = []  # canaries that were off when chosen: rolled back, they stay off
        self.soak_until: float | None = None
        self.finished_at: float | None = None
        self.rolled_back = 0
        self.marked: np.ndarray | None = None
        self.health: LaunchHealth | None = None  # made by the first step
        self.warned = 0  # warnings of the forced logoff sent (of ``settings.warn_minutes``)
        self.logged_off: np.ndarray | None = None  # servers whose sessions the forced logoff ended
        self.updated_by_deadline: int | None = None
        self.log: list = []

    # ------------------------------------------------------------ operator
    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False

    def cancel(self, reason: str = "cancelled by the operator"):
        if self.phase not in ("done", "halted"):
            self.phase, self.halt_reason = "cancelled", reason

    # ------------------------------------------------------------ state
    def to_dict(self) -> dict:
        return {
            "settings": asdict(self.settings), "interval_seconds": self.interval_seconds, "phase": self.phase,
            "halt_reason": self.halt_reason, "paused": self.paused,
            "status": None if self.status is None else self.status.tolist(),
            "old_image": self.old_image, "canaries": list(self.canaries),
            "canary_was_off": list(self.canary_was_off), "soak_until": self.soak_until,
            "finished_at": self.finished_at, "rolled_back": self.rolled_back,
            "marked": None if self.marked is None else self.marked.tolist(),
            "health": None if self.health is None else self.health.to_dict(), "warned": self.warned,
            "logged_off": None if self.logged_off is None else self.logged_off.tolist(), "updated_by_deadline": self.updated_by_deadline,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Rollout":
        r = cls(RolloutSettings(**d["settings"]), d["interval_seconds"])
        r.phase, r.halt_reason, r.paused = d["phase"], d["halt_reason"], d["paused"]
        r.status = None if d["status"] is None else np.asarray(d["status"], dtype=np.int8)
        r.old_image, r.canaries, r.soak_until = d["old_image"], list(d["canaries"]), d["soak_until"]
        r.canary_was_off = list(d.get("canary_was_off", []))
        r.finished_at, r.rolled_back = d["finished_at"], d["rolled_back"]
        r.marked = None if d["marked"] is None else np.asarray(d["marked"], dtype=bool)
        r.health = None if d.get("health") is None else LaunchHealth.from_dict(d["health"])
        r.warned = d.get("warned", 0)
        r.logged_off = None if d.get("logged_off") is None else np.asarray(d["logged_off"], dtype=bool)
        r.updated_by_deadline = d.get("updated_by_deadline")
        return r

    # ------------------------------------------------------------ launches (health)
    def launch_placed(self, server: int):
        """A launch was placed on ``server`` (index in the view)."""
        if self.health is not None:
            self.health.launches[server] += 1

    def launch_failed(self, server: int):
        """A launch placed on ``server`` failed (the logon did not complete)."""
        if self.health is not None:
            self.health.failed[server] += 1

    def counts(self) -> dict:
        """Servers per status (names of ``STATUS_NAMES``)."""
        if self.status is None:
            return {}
        return {STATUS_NAMES[k]: int(v) for k, v in enumerate(np.bincount(self.status, minlength=6))}

    @property
    def updated(self) -> int:
        """Servers running the new image or set to boot it."""
        return 0 if self.status is None else int(np.isin(self.status, (UPDATED, STAGED)).sum())

    # ------------------------------------------------------------ planning
    def _setup(self, view: FleetView):
        n = len(view.power)
        images = view.image if view.image is not None else [None] * n
        self.old_image = list(images)
        self.status = np.where(np.array([img == self.settings.image for img in images], dtype=bool),
                               UPDATED, OLD).astype(np.int8)
        self.marked = np.zeros(n, dtype=bool)
        self.health = LaunchHealth(n)
        self.logged_off = np.zeros(n, dtype=bool)
        nz = len(view.zone_names)
        self.group = np.asarray(view.pool, dtype=np.int64) * nz + np.asarray(view.zone, dtype=np.int64)
        self.n_groups = len(view.pool_names) * nz
        self.names = [f"{p}/{z}" for p in view.pool_names for z in view.zone_names]
        order = np.argsort(self.group, kind="stable")
        bounds = np.searchsorted(self.group[order], np.arange(self.n_groups + 1))
        self.members = [(k, order[bounds[k]:bounds[k + 1]]) for k in range(self.n_groups) if bounds[k + 1] > bounds[k]]

    def _limit(self, size: int) -> int:
        s = self.settings
        if s.max_unavailable is not None:
            return s.max_unavailable
        assert s.max_unavailable_pct is not None  # RolloutSettings refuses neither being set
        return max(1, int(size * s.max_unavailable_pct / 100.0))

    def plan(self, view: FleetView, now: float | None = None) -> list:
        """Same as :meth:`step` (the action-policy seam's name)."""
        return self.step(view, now)

    def step(self, view: FleetView, now: float | None = None) -> list:
        """The actions for ``view`` at ``now`` (default ``view.now``)."""
        now = view.now if now is None else float(now)
        if self.status is None:
            self._setup(view)
        if now < self.settings.start or self.phase in ("done",):
            return []
        if not hasattr(self, "group"):  # restored from a dict: groups again from the view
            kept = self.status, self.old_image, self.marked, self.health, self.logged_off
            self._setup(view)
            self.status, self.old_image, self.marked = kept[:3]
            self.health = kept[3] if kept[3] is not None else self.health
            self.logged_off = kept[4] if kept[4] is not None else self.logged_off
        if self.phase == "waiting":
            self.phase = "canary"
        power, mode = np.asarray(view.power), np.asarray(view.mode)
        sessions, pending = np.asarray(view.sessions), np.asarray(view.pending)
        registered = np.ones(len(power), bool) if view.registered is None else np.asarray(view.registered, bool)
        locked = (mode == MAINTENANCE) | np.asarray(view.down, dtype=bool)
        if view.excluded is not None:
            locked |= np.asarray(view.excluded, dtype=bool)
        since = view.state_since if view.state_since is not None else np.zeros(len(power))
        acts: list = []
        self._advance(now, power, mode, sessions, pending, registered, since, acts)
        self._check_launches(now, view, power)
        stopped = self.phase in ("halted", "cancelled")
        if now >= self.settings.deadline and self.updated_by_deadline is None:
            self.updated_by_deadline = self.updated
        if stopped:
            self._unwind(power, mode, acts)
        elif now >= self.settings.deadline:
            self._unwind(power, mode, acts, "past the deadline")  # servers still holding sessions keep the old image
        elif not self.paused and now < self.settings.deadline:
            if self.phase == "canary" and not self.canaries:
                self._canary(now, view, power, mode, sessions, pending, registered, locked, acts)
                if self.settings.canary == 0:
                    self.phase = "waves"
            if self.phase == "canary" and all(self.status[i] == UPDATED for i in self.canaries):
                self.phase, self.soak_until = "soak", now + self.settings.soak_minutes * 60.0
            if self.phase == "soak" and self.soak_until is not None and now >= self.soak_until and self._tried():
                self.phase = "waves"
            if self.phase == "waves":
                self._stage(power, locked, acts)
                force = self.settings.forced_logoff and self._forced_logoff(now, power, mode, sessions, pending,
                                                                            locked, acts)
                self._drain(now, view, power, mode, sessions, pending, registered, locked, acts, force=force)
        self._marks(power, acts, stopped)
        if self.phase == "waves" and not np.isin(self.status, (OLD, DRAINING, REBOOTING, ROLLBACK)).any():
            self.phase, self.finished_at = "done", now
        self.log.extend((now, a.kind, a.server, a.reason) for a in acts)
        return acts

    def _advance(self, now, power, mode, sessions, pending, registered, since, acts):
        """Move the servers under way along: empty drained ones shut down, off ones
        reimaged and booted, booted ones checked (health)."""
        st, img = self.status, self.settings.image
        for i in np.nonzero(np.isin(st, (DRAINING, REBOOTING, ROLLBACK)))[0].tolist():
            s, p, m = st[i], power[i], mode[i]
            back = self.old_image[i] if s == ROLLBACK else img
            if s == DRAINING and self.phase in ("halted", "cancelled"):
                continue  # a stopped rollout reboots nothing more (``_unwind`` gives it back)
            if s in (DRAINING, ROLLBACK) and p == ON and m == DRAIN_MODE and sessions[i] == 0 and pending[i] == 0:
                acts.append(Action(SHUTDOWN, i, f"rollout: drained and empty, rebooting onto {back}"))
                if s == DRAINING:
                    st[i] = REBOOTING
            elif s == ROLLBACK and p == ON and m == ENABLED:
                acts.append(Action(DRAIN, i, f"rollout halted: rolling back to {back}"))
            elif p == OFF:
                if s == ROLLBACK and i in self.canary_was_off:  # it was off: it stays off, on its old image
                    acts.append(Action(REIMAGE, i, f"rollout halted: back to {back}, stays off", image=back))
                else:
                    acts.append(Action(REIMAGE, i, f"rollout: boots {back}", image=back))
                    acts.append(Action(BOOT, i, f"rollout: boot onto {back}"))
                if s == ROLLBACK:
                    st[i] = OLD
                    self.rolled_back += 1
            elif s == REBOOTING and p == ON and m == ENABLED:
                if registered[i]:
                    st[i] = UPDATED
                elif now - since[i] >= self.settings.register_timeout_seconds:
                    self._halt(now, f"server {i} did not register within "
                                    f"{self.settings.register_timeout_seconds:g} s of booting {img}")

    def _halt(self, now, reason, failing=()):
        """Stop: nothing more is drained; servers rebooting onto the image, the
        canaries already on it and the ``failing`` servers go back to the old image."""
        if self.phase in ("halted", "cancelled"):
            return
        self.phase, self.halt_reason = "halted", f"{_clock(now)}: {reason}"
        bad = np.nonzero(self.status == REBOOTING)[0]
        self.status[bad] = ROLLBACK
        for i in failing:
            if self.status[i] in (UPDATED, STAGED):
                self.status[i] = ROLLBACK
        for i in self.canaries:  # canaries already up on the bad image go back too
            if self.status[i] == UPDATED:
                self.status[i] = ROLLBACK

    def _unwind(self, power, mode, acts, why=None):
        """A stopped rollout, or one past its deadline, drains nothing more: servers
        drained but not yet rebooted take sessions again (they keep the old image).
        A halted one also sets the servers staged and still off back to their old image."""
        for i in np.nonzero(self.status == DRAINING)[0].tolist():
            if mode[i] == DRAIN_MODE and power[i] in (ON, BOOTING):
                acts.append(Action(ENABLE, i, f"rollout {why or self.phase}: drain called off"))
            self.status[i] = OLD
        if self.phase == "halted":
            for i in np.nonzero((self.status == STAGED) & (power == OFF))[0].tolist():
                back = self.old_image[i]
                acts.append(Action(REIMAGE, i, f"rollout halted: off, boots {back} again", image=back))
                self.status[i] = OLD

    def _check_launches(self, now, view, power):
        """Health by failed launches: a server on the new image whose launches fail
        above ``max_failed_launch_pct`` (once it has had ``failed_launch_min``) halts
        the rollout; it goes back to the old image with the canaries."""
        s, h = self.settings, self.health
        if h is None or view.image is None:
            return
        img = s.image
        h.see(np.fromiter((x == img for x in view.image), dtype=bool, count=len(power)) & (power == ON))
        if s.max_failed_launch_pct is None or self.phase in ("halted", "cancelled", "waiting"):
            return
        bad = h.failing(s.max_failed_launch_pct, s.failed_launch_min)
        if len(bad):
            i = int(bad[0])
            self._halt(now, f"server {i}: {int(h.failed[i])} of {int(h.launches[i])} launches on {img} failed "
                            f"(over {s.max_failed_launch_pct:g} %)"
                            + (f", and {len(bad) - 1} more servers" if len(bad) > 1 else ""), bad.tolist())

    def _tried(self) -> bool:
        """The canaries have had ``soak_launches`` launches each: the soak lasts until then."""
        s, h = self.settings, self.health
        if s.soak_launches == 0 or h is None or not self.canaries:
            return True
        return bool((h.launches[self.canaries] >= s.soak_launches).all())

    def _forced_logoff(self, now, power, mode, sessions, pending, locked, acts) -> bool:
        """With ``forced_logoff``: the users of servers still on the old image are warned
        ``warn_minutes`` before the logoff time (``logoff_lead_minutes`` before the
        deadline); from then on, drained old-image servers are logged off (the servers
        the rollout drains, and those the power policy drains, which it then shuts
        down and the rollout stages). Returns True from the logoff time on: the waves
        then log off each server they drain (:meth:`_drain`), still within the
        unavailable limit and the capacity rule."""
        s = self.settings
        at, img = s.logoff_at, s.image
        old = np.isin(self.status, (OLD, DRAINING)) & (power == ON) & ~locked
        due = [k for k, w in enumerate(s.warn_minutes) if now >= at - w * 60.0]
        if now < at:
            if due and due[-1] >= self.warned:
                w = s.warn_minutes[due[-1]]
                for i in np.nonzero(old & (sessions + pending > 0))[0].tolist():
                    acts.append(Action(WARN, i, f"rollout: your session will be logged off from {_clock(at)} "
                                                f"(in {w:g} min) to update this server to {img}; save your work"))
                self.warned = due[-1] + 1
            return False
        for i in np.nonzero(old & (mode == DRAIN_MODE) & (sessions + pending > 0))[0].tolist():
            self._logoff(i, sessions, acts)
        return True

    def _logoff(self, i, sessions, acts):
        acts.append(Action(LOGOFF, i, f"rollout: forced logoff, {int(sessions[i])} sessions still on the old image, "
                                      f"then reboot onto {self.settings.image}"))
        if self.logged_off is not None:
            self.logged_off[i] = True

    @property
    def forced_servers(self) -> int:
        """Servers whose sessions the forced logoff ended."""
        return 0 if self.logged_off is None else int(self.logged_off.sum())

    def _stage(self, power, locked, acts):
        """Off servers take the image at their next boot, for free."""
        for i in np.nonzero((self.status == OLD) & (power == OFF) & ~locked)[0].tolist():
            acts.append(Action(REIMAGE, i, f"rollout: off, boots {self.settings.image} next", image=self.settings.image))
            self.status[i] = STAGED

    def _canary(self, now, view, power, mode, sessions, pending, registered, locked, acts):
        """Choose the canary, one server per group: a server that is off first (it is
        booted on the new image: nothing to drain, no seat taken away), else one that
        is on, fewest sessions first (:meth:`_drain`)."""
        left, img = self.settings.canary, self.settings.image
        off = (self.status == OLD) & (power == OFF) & ~locked
        for k, members in self.members:
            if left <= 0:
                return
            cand = members[off[members]]
            if len(cand) and self._limit(len(members)) > 0:
                i = int(cand[0])
                acts.append(Action(REIMAGE, i, f"rollout canary ({self.names[k]}): off, boots {img}", image=img))
                acts.append(Action(BOOT, i, f"rollout canary ({self.names[k]}): boot onto {img}"))
                self.status[i] = REBOOTING
                self.canaries.append(i)
                self.canary_was_off.append(i)
                left -= 1
        if left > 0:
            self._drain(now, view, power, mode, sessions, pending, registered, locked, acts, quota=left,
                        canary=True)

    def held(self) -> np.ndarray:
        """Servers the rollout holds (a power policy must leave them alone): those
        draining, rebooting or rolling back, and the canaries until their soak has passed."""
        h = np.isin(self.status, (DRAINING, REBOOTING, ROLLBACK))
        if self.phase in ("canary", "soak") and self.canaries:
            h[self.canaries] = True
        return h

    def _drain(self, now, view, power, mode, sessions, pending, registered, locked, acts, quota=None,
               canary=False, force=False):
        """Drain the next servers of each group, within the unavailable limit and
        the capacity rule; ``quota``: at most that many in all (the canary);
        ``force``: log off the sessions of each server drained (the forced logoff)."""
        st, buf = self.status, self.settings.buffer_pct / 100.0
        seats = np.asarray(view.max_sessions)
        able = (power == ON) & (mode == ENABLED) & registered & ~locked & (st != ROLLBACK)
        busy = sessions + pending
        left = quota
        for k, members in self.members:
            if left is not None and left <= 0:
                break
            gst = st[members]
            out = int(np.isin(gst, (DRAINING, REBOOTING, ROLLBACK)).sum())
            room = self._limit(len(members)) - out
            if canary:
                if np.isin(members, self.canaries).any():
                    continue
                room = min(room, 1)  # one canary per group, spread over the fleet
            if room <= 0:
                continue
            ab = able[members]
            spare = int(seats[members][ab].sum()) - math.ceil(float(busy[members].sum()) * (1.0 + buf))
            cand = members[ab & (gst == OLD) & ((pending[members] == 0) | force)]
            cand = cand[np.argsort(sessions[cand], kind="stable")]
            for i in cand.tolist():
                if room <= 0 or (left is not None and left <= 0):
                    break
                # its seats leave; its sessions stay demand until they end
                if spare - int(seats[i]) < 0:
                    break
                spare -= int(seats[i])
                st[i] = DRAINING
                room -= 1
                what = "canary" if canary else "wave"
                acts.append(Action(DRAIN, i, f"rollout {what} ({self.names[k]}): {int(sessions[i])} sessions "
                                              f"to end, then reboot onto {self.settings.image}"))
                if force and sessions[i] + pending[i] > 0:
                    self._logoff(i, sessions, acts)
                if canary:
                    self.canaries.append(i)
                    left -= 1

    def _marks(self, power, acts, stopped):
        """Old-image servers take new sessions last from the window's start (new
        sessions go to the canary, then to updated servers, so old ones empty sooner)."""
        want = np.zeros(len(self.status), dtype=bool)
        if not stopped and self.phase in ("canary", "soak", "waves", "done"):
            want = np.isin(self.status, (OLD, DRAINING)) & (power != OFF)
        for i in np.nonzero(want & ~self.marked)[0].tolist():
            acts.append(Action(PLACE_LAST, i, f"rollout: still on the old image, new sessions last"))
        for i in np.nonzero(self.marked & ~want)[0].tolist():
            acts.append(Action(PLACE_FIRST, i, "rollout: off the old image" if not stopped else f"rollout {self.phase}"))
        self.marked = want

    def waves(self, view: FleetView) -> list:
        """The waves this rollout would run on ``view`` (:func:`dry_run`)."""
        return dry_run(self.settings, view, self.interval_seconds)

    def wanted_seats(self, view: FleetView, now: float) -> np.ndarray:
        """Per group (``pool * n_zones + zone``), the seats of the servers the waves
        would drain next if the capacity rule let them (the unavailable limit's room,
        old servers on and enabled, fewest sessions first): what a power policy must
        add for the waves to go on. Zero outside the waves, when paused, from the deadline."""
        out = np.zeros(getattr(self, "n_groups", 0), dtype=np.int64)
        if self.phase != "waves" or self.paused or now >= self.settings.deadline or not hasattr(self, "members"):
            return out
        power, mode, sessions = np.asarray(view.power), np.asarray(view.mode), np.asarray(view.sessions)
        seats = np.asarray(view.max_sessions)
        for k, members in self.members:
            gst = self.status[members]
            room = self._limit(len(members)) - int(np.isin(gst, (DRAINING, REBOOTING, ROLLBACK)).sum())
            cand = members[(gst == OLD) & (power[members] == ON) & (mode[members] == ENABLED)]
            if room > 0 and len(cand):
                out[k] = int(seats[cand[np.argsort(sessions[cand], kind="stable")[:room]]].sum())
        return out


def dry_run(settings: RolloutSettings, view: FleetView, interval_seconds: int = 60) -> list:
    """The waves a rollout would run on ``view`` if every drained server emptied
    at once: a list of dicts ``{"wave", "kind", "servers"}`` (canary first, then
    ``staged`` off servers, then waves of drains), for ``usher rollout plan``."""
    r = Rollout(settings, interval_seconds)
    r._setup(view)
    power, mode = np.asarray(view.power).copy(), np.asarray(view.mode)
    sessions, pending = np.asarray(view.sessions), np.asarray(view.pending)
    registered = np.ones(len(power), bool) if view.registered is None else np.asarray(view.registered, bool)
    locked = (mode == MAINTENANCE) | np.asarray(view.down, dtype=bool)
    out = []
    acts: list = []
    r._canary(0.0, view, power, mode, sessions, pending, registered, locked, acts)
    if acts:
        out.append({"wave": 0, "kind": "canary", "servers": list(r.canaries)})
    r.status[np.isin(r.status, (DRAINING, REBOOTING))] = UPDATED
    acts = []
    r._stage(power, locked, acts)
    if acts:
        out.append({"wave": len(out), "kind": "staged", "servers": [a.server for a in acts]})
    while True:
        acts = []
        r._drain(0.0, view, power, mode, sessions, pending, registered, locked, acts)
        if not acts:
            break
        out.append({"wave": len(out), "kind": "wave", "servers": [a.server for a in acts]})
        r.status[r.status == DRAINING] = UPDATED
    left = int((r.status == OLD).sum())
    if left:
        out.append({"wave": len(out), "kind": "blocked", "servers": np.nonzero(r.status == OLD)[0].tolist()})
    return out
