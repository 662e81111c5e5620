"""Settings of the power planners, per pool and zone (Citrix / AVD parity).

Design: one :class:`GroupSettings` holds every knob of one pool in one zone;
:class:`PlannerSettings` holds the defaults, overrides per pool and overrides
per (pool, zone), and resolves them (:meth:`PlannerSettings.for_group`: the
default, then the pool's table, then the group's). Schedules are calendars
(``weekday``, ``weekend``, ``holiday``) of time slots, each with a minimum of
servers on and a capacity buffer. Every bad value is a :class:`SettingsError`
naming the key and the value; a settings object is checked once, when made.

TOML shape (``usher simulate --power-settings FILE``)::

    [default]
    buffer_pct = 10
    power_off_delay_minutes = 30
    [pool.imaging]
    min_powered = 2
    [group."records/DC-North"]
    max_powered = 400
    [[default.schedule.weekday]]
    start = "06:00"
    end = "18:00"
    min_on = 20
    buffer_pct = 5
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field

from usher.errors import InvalidArgument

__all__ = ["TimeSlot", "Schedule", "GroupSettings", "PlannerSettings", "SettingsError", "clock"]

DAY_SECONDS = 86_400


class SettingsError(InvalidArgument):
    """A power planner setting that cannot be used (names the key and value)."""


def clock(value, key: str) -> float:
    """``"07:30"`` or seconds as seconds of the day (0 to 86400)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and 0 <= value <= DAY_SECONDS:
            return float(value)
    elif isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            h, m = int(parts[0]), int(parts[1])
            if m < 60 and h * 3600 + m * 60 <= DAY_SECONDS:
                return float(h * 3600 + m * 60)
    raise SettingsError(key, value, "must be a clock time 'HH:MM' (00:00 to 24:00) or seconds of the day")


@dataclass(frozen=True)
class TimeSlot:
    """From ``start`` to ``end`` (seconds of the day, end excluded): at least
    ``min_on`` servers able to take a session, and ``buffer_pct`` (None: the
    group's) free seats over the demand."""

    start: float
    end: float
    min_on: int = 0
    buffer_pct: float | None = None


@dataclass(frozen=True)
class Schedule:
    """Time slots per calendar; ``holiday`` None: holidays run the weekend's slots."""

    weekday: tuple = ()
    weekend: tuple = ()
    holiday: tuple | None = None

    def slot(self, now: float, weekday: int, holiday: bool) -> TimeSlot | None:
        """The slot in force at ``now`` (seconds of the day), or None."""
        if holiday:
            slots = self.holiday if self.holiday is not None else self.weekend
        else:
            slots = self.weekend if weekday >= 5 else self.weekday
        t = now % DAY_SECONDS
        for s in slots:
            if s.start <= t < s.end:
                return s
        return None


@dataclass(frozen=True)
class GroupSettings:
    """Every knob of one pool in one zone.

    Attributes:
        buffer_pct: free seats kept over the (forecast) demand, in % of it,
            counted only on servers able to take a session (on, registered, enabled).
        min_powered, max_powered: servers powered (on or booting) at least / at
            most (None: no maximum); the minimum never makes the planner boot
            past the maximum.
        min_ready: servers able to take a session at least, at all times (a group
            may get demand at any moment: scale-down safety).
        boot_lead_minutes: how far ahead capacity is planned (a boot's length plus
            one planning interval).
        power_off_delay_minutes: a drained, empty server is shut down only this
            long after ``off_delay_from``: ``"idle"`` (it became empty, Citrix) or
            ``"drain"`` (it was chosen to drain).
        forced_logoff_minutes: None (default): a server with sessions is never shut
            down, it drains until empty. A number: its sessions are logged off this
            long after it was drained (users warned ``logoff_warning_minutes``
            before), counted in ``power.forced_logoffs``.
        cooldown_minutes: no drain in a group this long after it booted, and no
            boot this long after it drained (unless the demand outgrows the
            servers able to take a session: safety first).
        hysteresis_pct: drain only what exceeds the need by this much more.
        forecast: learn the demand from history (per pool and zone, same day type
            and time, corrected by the last hours); False: the current demand only.
        trend: extrapolate the recent trend over the boot lead time.
        drain_fewest_first: drain the servers with the fewest sessions first
            (False: the highest index first, as a plain reactive policy).
        drain_max_sessions: drain only servers holding at most this many sessions
            (None: any). With vertical load balancing new sessions fill the fullest
            servers, so the emptiest ones decay by themselves; 0 drains only empty
            servers and keeps the others able to take the overflow.
        place_last_pct: drain-aware placement: the servers the planner would drain
            next (fewest sessions first), up to this share (in %) of the seats
            able to take a session, are marked *place-last* (they get new sessions
            only when no unmarked server of the group can take one), so they empty
            sooner; none while the group scales up. 0 = off.
        consolidate_pct, consolidate_min_free: consolidation (see docs/AUTOSCALE.md).
        failover: a dark zone's demand is counted against the surviving zones of
            its pool.
        zone_reserve_pct: N+1 over zones: each group also holds this share (in %)
            of the demand it would take over if another zone of its pool went dark
            (the largest such share); 0 = off.
        pack: ramp-down packing with the place-last bit: ``"off"``, ``"always"``
            (every call), or ``"falling"`` (only while the forecast does not exceed
            the demand). The *keep set*, the fewest servers able to take a session
            with the most sessions first, holds the free room new logons need; every
            other such server is marked place-last and empties by attrition.
            Replaces ``place_last_pct`` and ``consolidate_pct`` when on.
        pack_pct: the keep set's free room: ``min(free seats the group needs,
            pack_pct % of its demand)`` plus ``pack_margin`` seats; None: the free
            seats the group needs (buffer and forecast growth) plus the margin.
        pack_margin: free seats the keep set holds beyond that.
        pack_by_load: a server's free room is capped by its load index (a server
            full by load index takes nothing).
        pack_hold: a sticky keep set: its members (the candidates not marked
            place-last) stay kept while they remain candidates; it grows by the
            fullest marked servers while its room is below the need and shrinks
            by its emptiest members only while the rest still hold it (a whole
            server surplus). False: the keep set is chosen afresh every call (the
            fullest candidates whose room reaches the need).
        initial_keep_pct: with ``pack``, the share (in %) of a group's powered seats
            kept open when the planner takes a fleet over before its sessions are
            placed and its forecast has no history (``Autoscale.initial``).
        schedule: the :class:`Schedule` of minimum servers and buffers.
    """

    buffer_pct: float = 10.0
    min_powered: int = 1
    max_powered: int | None = None
    min_ready: int = 1
    boot_lead_minutes: float = 4.0
    power_off_delay_minutes: float = 30.0
    off_delay_from: str = "idle"
    forced_logoff_minutes: float | None = None
    logoff_warning_minutes: float = 10.0
    cooldown_minutes: float = 10.0
    hysteresis_pct: float = 5.0
    forecast: bool = True
    trend: bool = True
    drain_fewest_first: bool = True
    drain_max_sessions: int | None = None
    place_last_pct: float = 0.0
    consolidate_pct: float = 0.0
    consolidate_min_free: int = 30
    failover: bool = False
    zone_reserve_pct: float = 0.0
    pack: str = "off"
    pack_margin: int = 30
    pack_pct: float | None = None
    pack_by_load: bool = True
    pack_hold: bool = True
    initial_keep_pct: float = 25.0
    schedule: Schedule = field(default_factory=Schedule)

    def check(self, where: str) -> "GroupSettings":
        def bad(key, why):
            raise SettingsError(f"{where}.{key}", getattr(self, key), why)

        for key in ("buffer_pct", "boot_lead_minutes", "power_off_delay_minutes", "logoff_warning_minutes",
                    "cooldown_minutes", "hysteresis_pct", "place_last_pct", "consolidate_pct", "zone_reserve_pct",
                    "initial_keep_pct"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(key, "must be a number >= 0")
        for key in ("min_powered", "min_ready", "consolidate_min_free", "pack_margin"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(key, "must be an integer >= 0")
        mp = self.max_powered
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp < self.min_powered):
            bad("max_powered", f"must be an integer >= min_powered ({self.min_powered}) or absent")
        pp = self.pack_pct
        if pp is not None and (isinstance(pp, bool) or not isinstance(pp, (int, float)) or not math.isfinite(pp)
                               or pp < 0):
            bad("pack_pct", "must be a number >= 0 or absent (the planner's free-seat need)")
        if self.pack not in ("off", "always", "falling"):
            bad("pack", "must be 'off', 'always' or 'falling'")
        if self.off_delay_from not in ("idle", "drain"):
            bad("off_delay_from", "must be 'idle' or 'drain'")
        dm = self.drain_max_sessions
        if dm is not None and (isinstance(dm, bool) or not isinstance(dm, int) or dm < 0):
            bad("drain_max_sessions", "must be an integer >= 0 or absent (any)")
        fl = self.forced_logoff_minutes
        if fl is not None and (isinstance(fl, bool) or not isinstance(fl, (int, float)) or fl < 0):
            bad("forced_logoff_minutes", "must be a number >= 0 or absent (off)")
        for key in ("forecast", "trend", "drain_fewest_first", "failover", "pack_by_load",
                    "pack_hold"):
            if not isinstance(getattr(self, key), bool):
                bad(key, "must be true or false")
        return self


_GROUP_KEYS = {f.name for f in dataclasses.fields(GroupSettings)}


def _slots(items, where) -> tuple:
    if not isinstance(items, list):
        raise SettingsError(where, items, "must be a list of slots {start, end, min_on, buffer_pct}")
    out = []
    for k, it in enumerate(items):
        w = f"{where}[{k}]"
        if not isinstance(it, dict):
            raise SettingsError(w, it, "must be a table {start, end, min_on, buffer_pct}")
        unknown = set(it) - {"start", "end", "min_on", "buffer_pct"}
        if unknown:
            raise SettingsError(f"{w}.{sorted(unknown)[0]}", it[sorted(unknown)[0]],
                                "unknown key; keys: start, end, min_on, buffer_pct")
        start, end = clock(it.get("start", 0), f"{w}.start"), clock(it.get("end", DAY_SECONDS), f"{w}.end")
        if end <= start:
            raise SettingsError(f"{w}.end", it.get("end"), "must be after start")
        mo = it.get("min_on", 0)
        if isinstance(mo, bool) or not isinstance(mo, int) or mo < 0:
            raise SettingsError(f"{w}.min_on", mo, "must be an integer >= 0")
        bp = it.get("buffer_pct")
        if bp is not None and (isinstance(bp, bool) or not isinstance(bp, (int, float)) or bp < 0):
            raise SettingsError(f"{w}.buffer_pct", bp, "must be a number >= 0")
        out.append(TimeSlot(start, end, mo, None if bp is None else float(bp)))
    return tuple(out)


def _group(base: GroupSettings, table, where) -> GroupSettings:
    if not isinstance(table, dict):
        raise SettingsError(where, table, "must be a table")
    changes = {}
    for key, value in table.items():
        if key not in _GROUP_KEYS:
            raise SettingsError(f"{where}.{key}", value, f"unknown key; keys: {', '.join(sorted(_GROUP_KEYS))}")
        if key == "schedule":
            if not isinstance(value, dict) or set(value) - {"weekday", "weekend", "holiday"}:
                raise SettingsError(f"{where}.schedule", value, "must be a table of weekday, weekend, holiday")
            sched = base.schedule
            value = Schedule(
                _slots(value["weekday"], f"{where}.schedule.weekday") if "weekday" in value else sched.weekday,
                _slots(value["weekend"], f"{where}.schedule.weekend") if "weekend" in value else sched.weekend,
                _slots(value["holiday"], f"{where}.schedule.holiday") if "holiday" in value else sched.holiday)
        elif isinstance(getattr(base, key), float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        changes[key] = value
    return dataclasses.replace(base, **changes).check(where)


@dataclass
class PlannerSettings:
    """Defaults, per-pool and per-(pool, zone) overrides (each a dict of
    :class:`GroupSettings` fields). ``holidays``: day indices of a multi-day run
    that are public holidays (a live broker passes ``holiday`` in the view)."""

    default: GroupSettings = field(default_factory=GroupSettings)
    pools: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)

    def for_group(self, pool: str, zone: str) -> GroupSettings:
        g = self.default
        if pool in self.pools:
            g = _group(g, self.pools[pool], f"pool.{pool}")
        key = f"{pool}/{zone}"
        if key in self.groups:
            g = _group(g, self.groups[key], f"group.{key}")
        return g

    @classmethod
    def from_dict(cls, data: dict, base: "GroupSettings | None" = None, source: str = "settings"):
        if not isinstance(data, dict):
            raise SettingsError(source, data, "must be a table")
        unknown = set(data) - {"default", "pool", "group"}
        if unknown:
            k = sorted(unknown)[0]
            raise SettingsError(f"{source}: {k}", data[k], "unknown table; tables: default, pool, group")
        default = _group(base or GroupSettings(), data.get("default", {}), f"{source}: default")
        pools, groups = data.get("pool", {}), data.get("group", {})
        for name, tab in (("pool", pools), ("group", groups)):
            if not isinstance(tab, dict):
                raise SettingsError(f"{source}: {name}", tab, "must be a table of tables")
        out = cls(default, dict(pools), dict(groups))
        for p, t in pools.items():  # checked now, not at the first plan
            _group(default, t, f"{source}: pool.{p}")
        for g, t in groups.items():
            if "/" not in g:
                raise SettingsError(f"{source}: group.{g}", t, "must be named 'pool/zone'")
            _group(default, t, f"{source}: group.{g}")
        return out

    @classmethod
    def from_toml(cls, path, base: "GroupSettings | None" = None):
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(str(path), None, f"not valid TOML: {exc}") from None
        except OSError as exc:
            raise SettingsError(str(path), None, f"cannot read: {exc.strerror}") from None
        return cls.from_dict(data, base, source=str(path))
