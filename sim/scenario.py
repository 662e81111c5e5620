"""Scenarios for ``usher simulate``: the hospital group's day, and how to change it.

Design: a :class:`Scenario` is a tree of small dataclasses, one per concern
(``day``, ``fleet``, ``demand``, ``sessions``, ``telemetry``, ``power``,
``faults``). Every field is a knob that a scenario TOML file can override with
the same table and key names (``[demand] peak_sessions = 12000``); an unknown
table or key is an error that names it. The default values *are* the embedded
hospital day, documented field by field in docs/SCENARIOS.md.

The fleet is produced as a list of trace operations (``settings``, ``licences``,
``pool``, ``app``, ``user``, ``server`` dicts of docs/TRACE_FORMAT.md) and the
scheduler is built by applying them: the same list goes into an exported trace,
so the replayed fleet is the simulated fleet by construction.

Demand model (all in seconds of the day, on a 1-second grid):

- the target number of simultaneous sessions ``N(t)`` is the ``demand.curve``
  (fractions of ``peak_sessions`` at clock times, linear in between, smoothed
  by a ``smoothing_minutes`` moving average);
- sessions end with a hazard ``mu(t) = (1 + churn(t)) / mean_session_hours``,
  where ``churn`` is a Gaussian bump of height ``shift_churn`` at each shift
  change, so that outgoing staff log off and incoming staff log on;
- arrivals are Poisson with rate ``lambda(t) = max(0, N'(t) + mu(t) N(t))``,
  the rate for which an M/G/inf system with that hazard has mean occupancy
  exactly ``N(t)`` (``lambda`` is clipped at 0 where the curve falls faster
  than sessions can end; the curve then lags).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usher.core.codes import LoadRule
from usher.core.config import MAX_WEIGHT, MIN_WEIGHT
from usher.errors import InvalidArgument
from usher.formats.errors import InputFileError

__all__ = [
    "Scenario",
    "DaySpec",
    "RolloutSpec",
    "FleetSpec",
    "DemandSpec",
    "SessionSpec",
    "TelemetrySpec",
    "PowerSpec",
    "FaultSpec",
    "ScenarioError",
    "clock_seconds",
    "clock_text",
    "demand_curves",
    "fleet_layout",
    "fleet_ops",
    "build_scheduler",
    "POLICIES",
]

DAY_SECONDS = 86_400
POLICIES = ("horizontal", "vertical")

# pool and app names of the hospital fleet
RECORDS, IMAGING, REMOTE = "records", "imaging", "remote"
POOLS = (RECORDS, IMAGING, REMOTE)
APP_RECORD, APP_LABS, APP_PACS = "patient-record", "lab-results", "pacs-viewer"


class ScenarioError(InvalidArgument):
    """A scenario file or value that cannot be used (names the table and key)."""


class ScenarioFileError(InputFileError, ScenarioError):
    """A scenario file that cannot be read or parsed (names the file and the OS's reason)."""


def clock_seconds(value, field_name="time") -> float:
    """``"07:30"`` (or ``"07:30:15"``, or a number of seconds) as seconds of the day.

    Hours 0-24, minutes and seconds 0-59, at most ``24:00``; a number must be a
    finite count of seconds in [0, 86400]."""
    if isinstance(value, bool):
        raise ScenarioError(field_name, value, "must be a clock time 'HH:MM' or seconds")
    if isinstance(value, (int, float)):
        if not (math.isfinite(value) and 0 <= value <= DAY_SECONDS):
            raise ScenarioError(field_name, value, "seconds of the day must be in [0, 86400]")
        return float(value)
    if isinstance(value, str):
        parts = value.strip().split(":")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            nums = []
        if 2 <= len(nums) <= 3 and all(math.isfinite(x) and x >= 0 for x in nums):
            h, m = nums[0], nums[1]
            sec = nums[2] if len(nums) == 3 else 0.0
            total = h * 3600.0 + m * 60.0 + sec
            if h <= 24 and m < 60 and sec < 60 and total <= DAY_SECONDS:
                return total
            raise ScenarioError(field_name, value, "not a time of the day (00:00 to 24:00)")
    raise ScenarioError(field_name, value, "must be a clock time 'HH:MM' or seconds")


def clock_text(seconds: float) -> str:
    """Seconds of the day as ``HH:MM``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600:02d}:{(seconds % 3600) // 60:02d}"


# ---------------------------------------------------------------- the knobs
@dataclass
class DaySpec:
    """The run itself."""

    #: seeds the arrivals, the users, the noise, the faults and the engine's tiebreak
    seed: int = 1
    #: load balancing of every pool: "horizontal" (spread) or "vertical" (pack)
    policy: str = "horizontal"
    #: length of the simulated day (the demand curve wraps after 24 h)
    hours: float = 24.0
    #: period of the telemetry, the KPI samples and the time series rows
    sample_seconds: int = 30
    #: launches in one 1-second tick go through launch_many from this many on
    #: (launch_many costs ~40 us per call + ~1.2 us per row, launch() ~1.9 us)
    launch_batch_min: int = 48
    #: days run one after the other (``usher simulate --days N``); day k has seed
    #: ``seed + k`` and the weekday or weekend curve of its weekday
    days: int = 1
    #: weekday of the first day: 0 = Monday ... 6 = Sunday
    start_weekday: int = 0
    #: day indices (0 = the first day) that are public holidays (weekend curve)
    holidays: list = field(default_factory=list)


@dataclass
class FleetSpec:
    """Servers, pools, users and licences of the hospital group."""

    zones: list = field(default_factory=lambda: ["DC-North", "DC-Central", "DC-South"])
    hospitals: int = 39
    #: hospital sizes follow 1 / rank ** skew (a few big ones, many small ones)
    hospital_size_skew: float = 0.8
    servers: int = 1400
    imaging_fraction: float = 0.10
    remote_fraction: float = 0.05
    max_sessions: int = 20
    #: every n-th records server is a larger host (0 = none)
    large_every: int = 25
    large_max_sessions: int = 30
    large_weight: int = 150
    imaging_max_sessions: int = 12
    remote_max_sessions: int = 20
    licences: int = 24_000
    #: staff accounts (users); more than the peak, so who logs on varies
    users: int = 42_000
    #: share of users entitled to the imaging viewer
    imaging_user_fraction: float = 0.12
    enforce_entitlement: bool = True
    logon_tolerance: int = 2
    #: the pools' slow rule (docs/SEMANTICS.md, *Slow servers*): 0 = off, else a
    #: factor > 1 of the pool's median logon; and the samples a server needs
    slow_logon_factor: float = 0.0
    slow_min_samples: int = 5
    records_load_rules: list = field(default_factory=lambda: ["sessions"])
    imaging_load_rules: list = field(default_factory=lambda: ["sessions", "cpu"])
    cpu_full: float = 90.0
    memory_full: float = 90.0
    sinbin_seconds: float = 60.0
    pending_timeout: float = 120.0


DEFAULT_CURVE = [
    ["00:00", 0.12], ["05:00", 0.10], ["06:00", 0.14], ["06:45", 0.30], ["07:30", 0.66],
    ["08:15", 0.90], ["09:30", 1.00], ["11:00", 0.98], ["12:30", 0.88], ["13:30", 0.93],
    ["15:00", 0.85], ["16:30", 0.70], ["18:00", 0.48], ["20:00", 0.28], ["22:00", 0.18],
    ["24:00", 0.12],
]


DEFAULT_WEEKEND_CURVE = [
    ["00:00", 0.12], ["05:00", 0.10], ["07:00", 0.16], ["08:30", 0.34], ["10:00", 0.40],
    ["13:00", 0.38], ["16:00", 0.32], ["19:00", 0.24], ["22:00", 0.16], ["24:00", 0.12],
]


@dataclass
class DemandSpec:
    """Who logs on when."""

    #: simultaneous sessions at the top of the curve
    peak_sessions: int = 17_000
    #: [clock time, fraction of peak_sessions]; linear in between; must cover 00:00-24:00
    curve: list = field(default_factory=lambda: [list(p) for p in DEFAULT_CURVE])
    #: the curve of Saturdays, Sundays and holidays (multi-day runs, ``day.start_weekday``)
    weekend_curve: list = field(default_factory=lambda: [list(p) for p in DEFAULT_WEEKEND_CURVE])
    smoothing_minutes: float = 20.0
    #: mean session length away from shift changes
    mean_session_hours: float = 3.0
    shift_changes: list = field(default_factory=lambda: ["07:00", "15:00", "23:00"])
    #: at a shift change the logoff rate is (1 + shift_churn) times the usual one
    shift_churn: float = 3.0
    shift_width_minutes: float = 15.0
    #: share of arrivals that open the imaging viewer (imaging users only)
    imaging_share: float = 0.08
    #: share of arrivals through the external gateway (staff at home), by day and by night
    external_share_day: float = 0.03
    external_share_night: float = 0.15
    day_starts: str = "07:00"
    day_ends: str = "19:00"
    #: share of internal arrivals from a hospital of another zone (visiting staff)
    visiting_share: float = 0.04


@dataclass
class SessionSpec:
    """What happens inside a session."""

    #: logon duration: lognormal with this median and sigma, clipped to [min, max]
    logon_median_seconds: float = 25.0
    logon_sigma: float = 0.45
    logon_min_seconds: float = 8.0
    logon_max_seconds: float = 110.0
    #: share of placed launches whose logon fails (launch_failed), detected after
    launch_failure_rate: float = 0.004
    failure_detect_seconds: int = 20
    #: a rejected or failed launch is tried again after this long, at most max_retries times
    retry_after_seconds: int = 30
    max_retries: int = 2
    #: share of sessions that open a second app (session sharing), and of those that close it
    second_app_share: float = 0.30
    second_app_close_share: float = 0.5
    #: share of sessions that disconnect once; of those, the share that reconnect
    #: (from another workstation: follow-me desktop) after a lognormal gap
    disconnect_share: float = 0.20
    reconnect_share: float = 0.85
    reconnect_gap_median_minutes: float = 6.0
    #: a user whose session was lost (crash, outage) comes back after (median, lognormal)
    comeback_median_seconds: float = 90.0
    #: workstations per hospital (endpoints)
    workstations_per_hospital: int = 400
    #: the sessions open at 00:00: "spread" (placed in one batch: the logon
    #: tolerance spreads them, a few per server), "settled" (placed in small
    #: batches whose logons complete in between, so the pools' load balancing
    #: places them as if the night had been running) or "auto" (settled under a
    #: power planner, whose evening placed them; spread under the fixed schedule)
    warm_start: str = "auto"


@dataclass
class TelemetrySpec:
    """Server telemetry, sent every ``day.sample_seconds`` for every powered server."""

    cpu_idle: float = 3.0
    cpu_per_session: float = 3.2
    cpu_per_logon: float = 9.0
    cpu_noise: float = 3.0
    #: imaging sessions cost this many times more cpu
    imaging_cpu_factor: float = 1.8
    mem_base: float = 12.0
    mem_per_session: float = 3.5
    mem_per_logon: float = 2.0
    mem_noise: float = 1.5


@dataclass
class PowerSpec:
    """The fixed power schedule and the energy model."""

    #: share of each pool's servers in each zone that is off at night
    night_off_records: float = 0.6
    night_off_imaging: float = 0.5
    night_off_remote: float = 0.0
    #: servers to switch off are drained from off_at and shut down when empty
    off_at: str = "20:00"
    #: they boot at on_at (the day starts with them off)
    on_at: str = "05:30"
    boot_seconds: int = 180
    shutdown_seconds: int = 60
    policy_interval_seconds: int = 60
    #: a logon on a server that came on less than this long ago counts as "on a fresh server"
    fresh_boot_minutes: float = 15.0
    #: watts of a powered server: idle + (busy - idle) * cpu / 100; booting draws watts_booting
    watts_idle: float = 180.0
    watts_busy: float = 420.0
    watts_booting: float = 300.0


@dataclass
class FaultSpec:
    """Faults, off unless ``enabled`` (``usher simulate --faults``)."""

    enabled: bool = False
    #: random server crashes (powered servers, chosen by the seed) in this window
    server_crashes: int = 3
    crash_window: list = field(default_factory=lambda: ["08:00", "16:00"])
    #: a crashed server is down this long, then boots if the power policy wants it
    reboot_minutes: float = 10.0
    #: a whole zone goes dark (every server off, sessions lost) at this time for this long;
    #: an empty zone name disables it
    zone_outage: str = "DC-South"
    zone_outage_at: str = "10:30"
    zone_outage_minutes: float = 60.0
    #: slow_server: this many servers (chosen by the seed among those on in the day)
    #: take slow_logon_multiplier times longer to log a user on, all day
    slow_servers: int = 0
    slow_logon_multiplier: float = 5.0


#: the image every server of the simulated fleet runs at the start of the day
FLEET_IMAGE = "w2022-2406"


@dataclass
class RolloutSpec:
    """[rollout]: an image rollout during the day (docs/ROLLOUT.md); off by default."""

    enabled: bool = False
    image: str = "w2022-2507"
    #: the window, clock times inside the simulated day
    start: str = "00:00"
    deadline: str = "06:00"
    #: servers of one pool in one zone out at once; 0: ``max_unavailable_pct`` of them
    max_unavailable: int = 0
    max_unavailable_pct: float = 50.0
    buffer_pct: float = 10.0
    canary: int = 2
    soak_minutes: float = 30.0
    register_timeout_seconds: float = 600.0
    #: a server on the new image whose launches fail above this share (%) halts the
    #: rollout, once it has had failed_launch_min launches on it; 0: not checked
    max_failed_launch_pct: float = 25.0
    failed_launch_min: int = 10
    #: the soak lasts until each canary has had this many launches (0: time only)
    soak_launches: int = 10
    #: log off the sessions left on old-image servers logoff_lead_minutes before the
    #: deadline, after warnings warn_minutes before the logoff (off by default)
    forced_logoff: bool = False
    warn_minutes: list = field(default_factory=lambda: [15.0, 5.0, 1.0])
    logoff_lead_minutes: float = 20.0
    #: servers booted on the new image fail to register (the fault that must halt it)
    bad_image: bool = False
    #: share (%) of the logons on servers running the new image that fail (a bad
    #: image that registers; the fault the failed-launch health check must catch); 0: none
    bad_image_launch_failure_pct: float = 0.0


SECTIONS = {
    "day": DaySpec,
    "fleet": FleetSpec,
    "demand": DemandSpec,
    "sessions": SessionSpec,
    "telemetry": TelemetrySpec,
    "power": PowerSpec,
    "faults": FaultSpec,
    "rollout": RolloutSpec,
}


@dataclass
class Scenario:
    """Every knob of a simulated day (defaults: the embedded hospital day)."""

    name: str = "hospital-day"
    day: DaySpec = field(default_factory=DaySpec)
    fleet: FleetSpec = field(default_factory=FleetSpec)
    demand: DemandSpec = field(default_factory=DemandSpec)
    sessions: SessionSpec = field(default_factory=SessionSpec)
    telemetry: TelemetrySpec = field(default_factory=TelemetrySpec)
    power: PowerSpec = field(default_factory=PowerSpec)
    faults: FaultSpec = field(default_factory=FaultSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)

    # -------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: dict, base: "Scenario | None" = None, source: str = "scenario") -> "Scenario":
        """``base`` (default: the embedded day) with the tables of ``data`` overriding it."""
        sc = (base if base is not None else cls()).copy()
        for key, value in data.items():
            if key == "name":
                if not isinstance(value, str):
                    raise ScenarioError(f"{source}: name", value, "must be a string")
                sc.name = value
                continue
            if key not in SECTIONS:
                raise ScenarioError(f"{source}: [{key}]", None,
                                    f"unknown table; tables: name, {', '.join(SECTIONS)}")
            if not isinstance(value, dict):
                raise ScenarioError(f"{source}: [{key}]", value, "must be a table")
            spec = getattr(sc, key)
            known = {f.name: f for f in dataclasses.fields(spec)}
            for k, v in value.items():
                if k not in known:
                    raise ScenarioError(f"{source}: [{key}] {k}", v,
                                        f"unknown key; keys: {', '.join(known)}")
                setattr(spec, k, _coerce(f"{source}: [{key}] {k}", getattr(spec, k), v))
        sc.validate(source)
        return sc

    @classmethod
    def from_toml(cls, path, base: "Scenario | None" = None) -> "Scenario":
        """The embedded day overridden by the tables of a TOML file."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioFileError(path, None, None, None, f"not valid TOML: {exc}") from None
        except OSError as exc:
            raise ScenarioFileError(path, None, None, None, f"cannot read: {exc.strerror or exc}") from None
        return cls.from_dict(data, base, source=str(path))

    def copy(self) -> "Scenario":
        return Scenario.from_plain(self.to_dict())

    @classmethod
    def from_plain(cls, data: dict) -> "Scenario":
        sc = cls(name=data.get("name", "hospital-day"))
        for key, spec_cls in SECTIONS.items():
            setattr(sc, key, spec_cls(**{k: _deepcopy(v) for k, v in data.get(key, {}).items()}))
        return sc

    def to_dict(self) -> dict:
        return {"name": self.name, **{k: dataclasses.asdict(getattr(self, k)) for k in SECTIONS}}

    def with_changes(self, **sections) -> "Scenario":
        """A copy with some knobs changed: ``sc.with_changes(day={"seed": 3})``."""
        return Scenario.from_dict(sections, base=self)

    def scaled(self, factor: float) -> "Scenario":
        """The same day for a fleet ``factor`` times the size (servers, users, licences,
        peak); used by the tests (``scaled(0.1)``: 140 servers, 1,700 at the peak)."""
        f = self.fleet
        return self.with_changes(
            fleet={"servers": max(len(f.zones) * 3, round(f.servers * factor)),
                   "users": max(10, round(f.users * factor)),
                   "licences": max(1, round(f.licences * factor))},
            demand={"peak_sessions": max(1, round(self.demand.peak_sessions * factor))},
        )

    def validate(self, source="scenario"):
        """Check every knob up front (ranges, sizes, clock times, lists); raise a
        :class:`ScenarioError` naming ``source``, the table and key, and the value."""
        _check_sizes(self, source)
        for (table, key), (lo, hi, lo_open) in RANGES.items():
            _check_range(source, table, key, getattr(getattr(self, table), key), lo, hi, lo_open)
        _check_fleet(self, source)
        _check_demand(self, source)
        _check_clocks(self, source)
        _check_rollout(self, source)
        return self

    @property
    def seconds(self) -> int:
        return int(round(self.day.hours * 3600))


# ---------------------------------------------------------------- validation
#: documented size limits (docs/SCENARIOS.md): checked before anything is allocated
MAX_SERVERS = 100_000
MAX_USERS = 1_000_000
MAX_HOSPITALS = 10_000
MAX_ZONES = 64
MAX_PEAK_SESSIONS = 200_000
#: bound on the day's arrivals: peak_sessions * hours / mean_session_hours * (1 + shift_churn)
MAX_ARRIVALS_BOUND = 2_000_000

_SHARE = (0.0, 1.0, False)
#: (table, key) -> (low, high, low excluded); None = unbounded. Checked in this order.
RANGES = {
    ("day", "seed"): (0, 2**31 - 1, False),
    ("day", "hours"): (1 / 60, 24.0, False),
    ("day", "sample_seconds"): (1, 3600, False),
    ("day", "launch_batch_min"): (1, None, False),
    ("day", "days"): (1, 366, False),
    ("day", "start_weekday"): (0, 6, False),
    ("fleet", "hospitals"): (1, MAX_HOSPITALS, False),
    ("fleet", "hospital_size_skew"): (0.0, 10.0, False),
    ("fleet", "users"): (1, MAX_USERS, False),
    ("fleet", "max_sessions"): (1, 10_000, False),
    ("fleet", "large_every"): (0, None, False),
    ("fleet", "large_max_sessions"): (1, 10_000, False),
    ("fleet", "large_weight"): (MIN_WEIGHT, MAX_WEIGHT, False),
    ("fleet", "imaging_max_sessions"): (1, 10_000, False),
    ("fleet", "remote_max_sessions"): (1, 10_000, False),
    ("fleet", "licences"): (0, 100_000_000, False),
    ("fleet", "imaging_fraction"): _SHARE,
    ("fleet", "remote_fraction"): _SHARE,
    ("fleet", "imaging_user_fraction"): _SHARE,
    ("fleet", "logon_tolerance"): (0, 10_000, False),
    ("fleet", "cpu_full"): (0.0, 100.0, True),
    ("fleet", "memory_full"): (0.0, 100.0, True),
    ("fleet", "sinbin_seconds"): (0.0, 86_400.0, False),
    ("fleet", "pending_timeout"): (0.0, 86_400.0, True),
    ("demand", "peak_sessions"): (0, MAX_PEAK_SESSIONS, False),
    ("demand", "smoothing_minutes"): (0.0, 720.0, False),
    ("demand", "mean_session_hours"): (1e-3, 48.0, False),
    ("demand", "shift_churn"): (0.0, 100.0, False),
    ("demand", "shift_width_minutes"): (0.0, 720.0, True),
    ("demand", "imaging_share"): _SHARE,
    ("demand", "external_share_day"): _SHARE,
    ("demand", "external_share_night"): _SHARE,
    ("demand", "visiting_share"): _SHARE,
    ("sessions", "logon_median_seconds"): (0.0, 3600.0, True),
    ("sessions", "logon_sigma"): (0.0, 5.0, False),
    ("sessions", "logon_min_seconds"): (0.0, 3600.0, False),
    ("sessions", "logon_max_seconds"): (0.0, 3600.0, False),
    ("sessions", "launch_failure_rate"): _SHARE,
    ("sessions", "failure_detect_seconds"): (1, 3600, False),
    ("sessions", "retry_after_seconds"): (1, 3600, False),
    ("sessions", "max_retries"): (0, 100, False),
    ("sessions", "second_app_share"): _SHARE,
    ("sessions", "second_app_close_share"): _SHARE,
    ("sessions", "disconnect_share"): _SHARE,
    ("sessions", "reconnect_share"): _SHARE,
    ("sessions", "reconnect_gap_median_minutes"): (0.0, 1440.0, True),
    ("sessions", "comeback_median_seconds"): (0.0, 86_400.0, True),
    ("sessions", "workstations_per_hospital"): (1, 100_000, False),
    **{("telemetry", k): (0.0, 100.0, False) for k in (
        "cpu_idle", "cpu_per_session", "cpu_per_logon", "cpu_noise", "imaging_cpu_factor", "mem_base",
        "mem_per_session", "mem_per_logon", "mem_noise")},
    ("power", "night_off_records"): _SHARE,
    ("power", "night_off_imaging"): _SHARE,
    ("power", "night_off_remote"): _SHARE,
    ("power", "boot_seconds"): (0, 86_400, False),
    ("power", "shutdown_seconds"): (0, 86_400, False),
    ("power", "policy_interval_seconds"): (1, 86_400, False),
    ("power", "fresh_boot_minutes"): (0.0, 1440.0, False),
    ("power", "watts_idle"): (0.0, 100_000.0, False),
    ("power", "watts_busy"): (0.0, 100_000.0, False),
    ("power", "watts_booting"): (0.0, 100_000.0, False),
    ("faults", "server_crashes"): (0, 1000, False),
    ("faults", "reboot_minutes"): (0.0, 1440.0, False),
    ("faults", "zone_outage_minutes"): (0.0, 1440.0, False),
    ("faults", "slow_servers"): (0, 100_000, False),
    ("faults", "slow_logon_multiplier"): (1.0, 100.0, False),
    ("fleet", "slow_logon_factor"): (0.0, 1000.0, False),
    ("fleet", "slow_min_samples"): (1, 10_000, False),
}


def _fail(source, table, key, value, reason):
    raise ScenarioError(f"{source}: [{table}] {key}", value, reason)


def _check_range(source, table, key, v, lo, hi, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(source, table, key, v, "must be a finite number")
    if (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
        _fail(source, table, key, v, f"must be in {'(' if lo_open else '['}{lo}, "
                                     f"{hi if hi is not None else 'inf'}]")


def _check_sizes(sc, source):
    """The sizes first, so a huge value is refused before anything is allocated."""
    f, dm, d = sc.fleet, sc.demand, sc.day
    if not isinstance(f.zones, list) or not 1 <= len(f.zones) <= MAX_ZONES:
        _fail(source, "fleet", "zones", f.zones, f"must be a list of 1 to {MAX_ZONES} zone names")
    if not all(isinstance(z, str) and z for z in f.zones) or len(set(f.zones)) != len(f.zones):
        _fail(source, "fleet", "zones", f.zones, "must be distinct, non-empty zone names")
    _check_range(source, "fleet", "servers", f.servers, len(f.zones), MAX_SERVERS)
    for key, hi in (("hospitals", MAX_HOSPITALS), ("users", MAX_USERS)):
        _check_range(source, "fleet", key, getattr(f, key), 1, hi)
    _check_range(source, "demand", "peak_sessions", dm.peak_sessions, 0, MAX_PEAK_SESSIONS)
    _check_range(source, "day", "hours", d.hours, 1 / 60, 24.0)
    _check_range(source, "demand", "mean_session_hours", dm.mean_session_hours, 1e-3, 48.0)
    _check_range(source, "demand", "shift_churn", dm.shift_churn, 0.0, 100.0)
    bound = dm.peak_sessions * d.hours / dm.mean_session_hours * (1.0 + dm.shift_churn)
    if bound > MAX_ARRIVALS_BOUND:
        _fail(source, "demand", "peak_sessions", dm.peak_sessions,
              f"peak_sessions * hours / mean_session_hours * (1 + shift_churn) = {bound:,.0f} "
              f"exceeds {MAX_ARRIVALS_BOUND:,} (the day's arrivals would not fit)")


def _check_fleet(sc, source):
    f, fl = sc.fleet, sc.faults
    if sc.day.policy not in POLICIES:
        _fail(source, "day", "policy", sc.day.policy, f"must be one of {', '.join(POLICIES)}")
    if f.imaging_fraction + f.remote_fraction >= 1.0:
        _fail(source, "fleet", "imaging_fraction", f.imaging_fraction,
              "imaging_fraction + remote_fraction must leave records servers")
    rules = [str(r) for r in LoadRule]
    for key in ("records_load_rules", "imaging_load_rules"):
        v = getattr(f, key)
        if not v or not all(isinstance(r, str) and r in rules for r in v):
            _fail(source, "fleet", key, v, f"must be a non-empty list of {', '.join(rules)}")
    if 0.0 < f.slow_logon_factor <= 1.0:
        _fail(source, "fleet", "slow_logon_factor", f.slow_logon_factor, "must be 0 (off) or above 1")
    if fl.zone_outage and fl.zone_outage not in f.zones:
        _fail(source, "faults", "zone_outage", fl.zone_outage, f"not a zone of the fleet ({', '.join(f.zones)})")
    ss = sc.sessions
    if ss.logon_min_seconds > ss.logon_max_seconds:
        _fail(source, "sessions", "logon_min_seconds", ss.logon_min_seconds,
              f"must not exceed logon_max_seconds ({ss.logon_max_seconds})")


def _check_demand(sc, source):
    dm = sc.demand
    for key in ("curve", "weekend_curve"):
        _check_curve(source, key, getattr(dm, key))
    if sc.sessions.warm_start not in ("spread", "settled", "auto"):
        _fail(source, "sessions", "warm_start", sc.sessions.warm_start, "must be 'auto', 'spread' or 'settled'")
    d = sc.day
    if not isinstance(d.holidays, list) or not all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h < d.days
                                                  for h in d.holidays):
        _fail(source, "day", "holidays", d.holidays, f"must be a list of day indices in [0, {d.days - 1}]")


def _check_curve(source, key, curve):
    if not isinstance(curve, list) or len(curve) < 2:
        _fail(source, "demand", key, curve, "must be a list of [clock time, fraction] pairs")
    knots = []
    for point in curve:
        if not isinstance(point, list) or len(point) != 2:
            _fail(source, "demand", key, point, "each point must be [clock time, fraction]")
        knots.append(clock_seconds(point[0], f"{source}: [demand] {key}"))
        v = point[1]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 10):
            _fail(source, "demand", key, point, "a fraction of peak_sessions must be a number in [0, 10]")
    if knots != sorted(knots) or knots[0] > 0 or knots[-1] < DAY_SECONDS:
        _fail(source, "demand", key, curve, "clock times must increase and cover 00:00 to 24:00")


def _check_clocks(sc, source):
    dm, pw, fl = sc.demand, sc.power, sc.faults
    if not isinstance(dm.shift_changes, list):
        _fail(source, "demand", "shift_changes", dm.shift_changes, "must be a list of clock times")
    for t in dm.shift_changes:
        clock_seconds(t, f"{source}: [demand] shift_changes")
    for table, key in (("demand", "day_starts"), ("demand", "day_ends"), ("power", "off_at"),
                       ("power", "on_at"), ("faults", "zone_outage_at")):
        clock_seconds(getattr(getattr(sc, table), key), f"{source}: [{table}] {key}")
    if not isinstance(fl.crash_window, list) or len(fl.crash_window) != 2:
        _fail(source, "faults", "crash_window", fl.crash_window, "must be [start, end] clock times")
    for t in fl.crash_window:
        clock_seconds(t, f"{source}: [faults] crash_window")
    if fl.enabled and fl.server_crashes:
        day_servers = sc.fleet.servers - _night_servers(sc)
        if fl.server_crashes > day_servers:
            _fail(source, "faults", "server_crashes", fl.server_crashes,
                  f"more than the {day_servers} servers on in the day")


def _check_rollout(sc, source):
    """[rollout]: the window inside the day, the planner's own checks."""
    ro = sc.rollout
    start = clock_seconds(ro.start, f"{source}: [rollout] start")
    end = clock_seconds(ro.deadline, f"{source}: [rollout] deadline")
    if end <= start:
        _fail(source, "rollout", "deadline", ro.deadline,
              f"must be after the start ({ro.start}); the window lies inside the simulated day")
    if not 0.0 <= ro.bad_image_launch_failure_pct <= 100.0:
        _fail(source, "rollout", "bad_image_launch_failure_pct", ro.bad_image_launch_failure_pct,
              "must be a share in [0, 100] (%)")
    try:
        rollout_settings(sc)
    except InvalidArgument as exc:
        raise ScenarioError(f"{source}: [rollout] {exc.field}", exc.value, exc.detail) from None


def rollout_settings(sc):
    """The :class:`usher.planner.rollout.RolloutSettings` of the scenario's [rollout] table."""
    from usher.planner.rollout import RolloutSettings

    ro = sc.rollout
    return RolloutSettings(
        image=ro.image, start=clock_seconds(ro.start), deadline=clock_seconds(ro.deadline),
        max_unavailable=ro.max_unavailable if ro.max_unavailable != 0 else None,
        max_unavailable_pct=ro.max_unavailable_pct if ro.max_unavailable_pct > 0 else None,
        buffer_pct=ro.buffer_pct, canary=ro.canary, soak_minutes=ro.soak_minutes,
        register_timeout_seconds=ro.register_timeout_seconds,
        max_failed_launch_pct=ro.max_failed_launch_pct if ro.max_failed_launch_pct > 0 else None,
        failed_launch_min=ro.failed_launch_min, soak_launches=ro.soak_launches, forced_logoff=ro.forced_logoff,
        warn_minutes=tuple(ro.warn_minutes), logoff_lead_minutes=ro.logoff_lead_minutes).check()


def _night_servers(sc) -> int:
    """How many servers the fixed schedule switches off at night (as fleet_layout)."""
    f, pw = sc.fleet, sc.power
    nz = len(f.zones)
    n_img = int(round(f.servers * f.imaging_fraction))
    n_rem = int(round(f.servers * f.remote_fraction))
    spans = {1: (0, n_img), 2: (n_img, n_img + n_rem), 0: (n_img + n_rem, f.servers)}
    share = {0: pw.night_off_records, 1: pw.night_off_imaging, 2: pw.night_off_remote}

    def below(b, z):  # servers i < b in zone z (server i is in zone i % nz)
        return (b - z + nz - 1) // nz if b > z else 0

    total = 0
    for p, (a, b) in spans.items():
        for z in range(nz):
            total += int(round((below(b, z) - below(a, z)) * share[p]))
    return total


def _deepcopy(v):
    if isinstance(v, list):
        return [_deepcopy(x) for x in v]
    return v


def _coerce(field_name, default, value):
    """A TOML value checked against the type of the default it replaces."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(field_name, value, "must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(field_name, value, "must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScenarioError(field_name, value, "must be a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(field_name, value, "must be a string")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ScenarioError(field_name, value, "must be a list")
        return _deepcopy(value)
    return value


# ---------------------------------------------------------------- demand
def demand_curves(sc: Scenario):
    """The demand on the 1-second grid of the day.

    Returns:
        target: ndarray of shape (seconds + 1,), float64: ``N(t)``, the mean number of
            simultaneous sessions the arrivals aim at.
        hazard: ndarray (seconds + 1,): the logoff rate ``mu(t)`` per session per second.
        arrivals: ndarray (seconds + 1,): the arrival rate ``lambda(t)`` per second,
            ``max(0, N'(t) + mu(t) N(t))``.
    """
    dm = sc.demand
    n = sc.seconds + 1
    grid = np.arange(n, dtype=np.float64)
    knots = np.array([clock_seconds(t) for t, _ in dm.curve])
    level = np.array([float(v) for _, v in dm.curve]) * dm.peak_sessions
    day = np.arange(DAY_SECONDS + 1, dtype=np.float64)
    target = np.interp(day, knots, level)
    w = int(dm.smoothing_minutes * 60)
    if w > 1:  # moving average over a wrapped day, so 24:00 meets 00:00
        pad = np.concatenate([target[-w:], target, target[:w]])
        kernel = np.ones(w) / w
        target = np.convolve(pad, kernel, mode="same")[w:-w]
    target = target[np.minimum(grid.astype(np.int64), DAY_SECONDS)]
    churn = np.zeros(n)
    width = dm.shift_width_minutes * 60.0
    for t in dm.shift_changes:
        c = clock_seconds(t)
        for shift in (-DAY_SECONDS, 0.0, DAY_SECONDS):
            churn += np.exp(-0.5 * ((grid - c - shift) / width) ** 2)
    hazard = (1.0 + dm.shift_churn * churn) / (dm.mean_session_hours * 3600.0)
    slope = np.gradient(target)
    arrivals = np.maximum(0.0, slope + hazard * target)
    return target, hazard, arrivals


# ---------------------------------------------------------------- fleet
@dataclass
class FleetLayout:
    """Who and what: the fleet as arrays (index = server / hospital / user number).

    Attributes:
        server_names, server_zone (int zone index), server_pool (int pool index, POOLS order),
        server_max (max_sessions), server_night_off (bool: off at night under the schedule);
        hospital_zone (zone index per hospital), hospital_weight (share of arrivals);
        user_names, user_hospital, user_imaging (bool: entitled to the imaging viewer).
    """

    server_names: list
    server_zone: np.ndarray
    server_pool: np.ndarray
    server_max: np.ndarray
    server_weight: np.ndarray
    server_night_off: np.ndarray
    hospital_zone: np.ndarray
    hospital_weight: np.ndarray
    user_names: list
    user_hospital: np.ndarray
    user_imaging: np.ndarray


def fleet_layout(sc: Scenario) -> FleetLayout:
    """Servers, hospitals and users of the scenario (deterministic in the seed)."""
    f, pw = sc.fleet, sc.power
    rng = np.random.default_rng([sc.day.seed, 11])
    nz = len(f.zones)
    n_img = int(round(f.servers * f.imaging_fraction))
    n_rem = int(round(f.servers * f.remote_fraction))
    zone: Any  # lists while the servers are laid out, then arrays
    pool: Any
    night: Any
    names, zone, pool, mx, wt, night = [], [], [], [], [], []
    counters: dict[tuple[int, int], int] = {}
    for i in range(f.servers):
        z = i % nz
        if i < n_img:
            p, prefix, m, w = 1, "img", f.imaging_max_sessions, 100
        elif i < n_img + n_rem:
            p, prefix, m, w = 2, "ext", f.remote_max_sessions, 100
        else:
            p, prefix, m, w = 0, "rec", f.max_sessions, 100
            k = i - n_img - n_rem
            if f.large_every and k % f.large_every == f.large_every - 1:
                m, w = f.large_max_sessions, f.large_weight
        c = counters.get((p, z), 0)
        counters[(p, z)] = c + 1
        names.append(f"{prefix}-{f.zones[z].split('-')[-1].lower()}-{c:04d}")
        zone.append(z)
        pool.append(p)
        mx.append(m)
        wt.append(w)
    zone, pool = np.array(zone), np.array(pool)
    night = np.zeros(f.servers, dtype=bool)
    share = {0: pw.night_off_records, 1: pw.night_off_imaging, 2: pw.night_off_remote}
    for (p, z), count in counters.items():  # the last servers of each pool and zone
        members = np.nonzero((pool == p) & (zone == z))[0]
        k = int(round(count * share[p]))
        if k:
            night[members[-k:]] = True
    # hospitals: sizes 1/rank^skew, assigned greedily to the least-loaded zone
    sizes = 1.0 / np.arange(1, f.hospitals + 1) ** f.hospital_size_skew
    sizes /= sizes.sum()
    hz = np.zeros(f.hospitals, dtype=np.int64)
    load = np.zeros(nz)
    for h in range(f.hospitals):
        z = int(np.argmin(load))
        hz[h] = z
        load[z] += sizes[h]
    user_h = np.sort(rng.choice(f.hospitals, size=f.users, p=sizes))
    user_img = rng.random(f.users) < f.imaging_user_fraction
    user_names = [f"h{h:02d}-{k:06d}" for k, h in enumerate(user_h.tolist())]
    return FleetLayout(names, zone, pool, np.array(mx), np.array(wt), night, hz, sizes,
                       user_names, user_h, user_img)


def fleet_ops(sc: Scenario, layout: FleetLayout) -> list[dict]:
    """The fleet as trace configuration operations (docs/TRACE_FORMAT.md), at t = 0.

    Every server listed in ``server_night_off`` starts ``off`` (the day starts at night).
    """
    f = sc.fleet
    lb = sc.day.policy
    ops = [
        {"t": 0.0, "op": "settings", "enforce_entitlement": f.enforce_entitlement, "seed": sc.day.seed,
         "sinbin_seconds": float(f.sinbin_seconds), "pending_timeout": float(f.pending_timeout)},
        {"t": 0.0, "op": "licences", "cap": f.licences},
        {"t": 0.0, "op": "pool", "name": RECORDS, "load_balancing": lb,
         "zone_preference": ["user_location", "user_home"], "failover": True,
         "logon_tolerance": f.logon_tolerance, "load_rules": list(f.records_load_rules),
         "cpu_full": float(f.cpu_full), "memory_full": float(f.memory_full)},
        {"t": 0.0, "op": "pool", "name": IMAGING, "load_balancing": lb, "zone_preference": ["user_home"],
         "failover": True, "logon_tolerance": f.logon_tolerance, "load_rules": list(f.imaging_load_rules),
         "cpu_full": float(f.cpu_full), "memory_full": float(f.memory_full)},
        {"t": 0.0, "op": "pool", "name": REMOTE, "load_balancing": lb, "zone_preference": ["user_home"],
         "failover": True, "external_access": True, "logon_tolerance": f.logon_tolerance,
         "load_rules": list(f.records_load_rules)},
    ]
    if f.slow_logon_factor > 0:  # written only when on: a day without the rule traces as before
        for op in ops[2:5]:
            op["slow_logon_factor"] = float(f.slow_logon_factor)
            op["slow_min_samples"] = int(f.slow_min_samples)
    ops += [
        {"t": 0.0, "op": "app", "name": APP_RECORD, "pools": [RECORDS, REMOTE]},
        {"t": 0.0, "op": "app", "name": APP_LABS, "pools": [RECORDS, REMOTE]},
        {"t": 0.0, "op": "app", "name": APP_PACS, "pools": [IMAGING], "tag_restriction": "imaging"},
    ]
    zones = f.zones
    clinical = [APP_RECORD, APP_LABS]
    imaging = [APP_RECORD, APP_LABS, APP_PACS]
    hz = layout.hospital_zone
    for name, h, img in zip(layout.user_names, layout.user_hospital.tolist(), layout.user_imaging.tolist()):
        ops.append({"t": 0.0, "op": "user", "id": name, "home_zone": zones[hz[h]],
                    "apps": imaging if img else clinical})
    for i, name in enumerate(layout.server_names):
        p = int(layout.server_pool[i])
        ops.append({"t": 0.0, "op": "server", "name": name, "zone": zones[layout.server_zone[i]],
                    "pool": POOLS[p], "tags": ["imaging"] if p == 1 else [],
                    "max_sessions": int(layout.server_max[i]), "weight": int(layout.server_weight[i]),
                    "power": "off" if layout.server_night_off[i] else "on", "registered": True,
                    "mode": "enabled", "image": FLEET_IMAGE})
    return ops


def build_scheduler(ops: list[dict]):
    """A ``usher.Scheduler`` configured by applying configuration ops (trace format) in
    order, through the one op dispatcher (:func:`usher.formats.dispatch.apply_ops`).

    The dicts are decoded to op Structs as one list (one typed conversion of the
    whole list, the same Structs as one by one); a list that does not decode is
    applied dict by dict, so the first bad op raises the dispatcher's own error."""
    import msgspec

    import usher
    from usher.formats.dispatch import apply_ops
    from usher.formats.trace import Op

    s = usher.Scheduler()
    try:
        typed: list = msgspec.convert(ops, list[Op])
    except msgspec.ValidationError:
        typed = ops
    apply_ops(s, typed)
    return s
