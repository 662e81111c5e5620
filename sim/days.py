"""Several simulated days in a row, with one power policy that learns across them.

Design: day ``k`` of a run is the scenario's day with seed ``day.seed + k``, the
weekday ``(day.start_weekday + k) % 7`` and, on Saturdays, Sundays and
``day.holidays``, the ``demand.weekend_curve`` instead of ``demand.curve``
(:func:`day_scenario`). Each day is one :func:`usher.sim.day.simulate_day`
(a fresh engine, the scenario's state at 00:00); the power policy object is the
same all along and is told of each new day (``new_day``), so a planner that
learns (the forecast of :class:`usher.planner.autoscale.Autoscale`) has the
earlier days as history. The KPIs of the run sum the days' counts and
server-hours and keep the days' maxima (:func:`run_kpis`); each day's own KPIs
stay in :attr:`RunResult.days`. Day 0 of a one-day run is exactly the day
``simulate_day`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from usher.sim.day import DayResult, simulate_day
from usher.sim.scenario import Scenario

__all__ = ["simulate_days", "day_scenario", "run_kpis", "RunResult", "WEEKDAYS"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

#: KPIs that are the largest over the days (the others that are numbers are summed,
#: ratios are recomputed, the rest is day 0's)
_MAX_KEYS = ("sessions.peak", "licences.peak", "servers.sessions_max", "servers.load_index_max",
             "servers.pending_max", "power.capacity_at_peak")


def day_scenario(sc: Scenario, k: int) -> tuple[Scenario, int, bool]:
    """Day ``k`` of the run: (its scenario, its weekday, whether it is a holiday)."""
    weekday = (sc.day.start_weekday + k) % 7
    holiday = k in sc.day.holidays
    changes: dict = {"day": {"seed": sc.day.seed + k}} if k else {}
    if weekday >= 5 or holiday:
        changes["demand"] = {"curve": [list(p) for p in sc.demand.weekend_curve]}
    return (sc.with_changes(**changes) if changes else sc), weekday, holiday


@dataclass
class RunResult:
    """A run of ``len(days)`` days: the run's KPIs and every day's result."""

    kpis: dict
    days: list

    @property
    def scenario(self):
        return self.days[0].scenario


def run_kpis(days: list) -> dict:
    """The KPIs of a run of days (see the module's docstring)."""
    first = days[0].kpis
    if len(days) == 1:
        return dict(first)
    out = {}
    for key, v in first.items():
        vals = [d.kpis.get(key) for d in days]
        if key.startswith("scenario.") or isinstance(v, (str, bool)) or v is None:
            out[key] = v
        elif key in _MAX_KEYS or key.endswith("_max") or key.endswith("peak"):
            out[key] = max(x for x in vals if x is not None)
        elif key.startswith("power.watts") or key.startswith("zone.") or "mean" in key or "p99" in key or \
                key.startswith("engine.us_per"):
            out[key] = v
        else:
            out[key] = round(sum(x for x in vals if x is not None), 4)
    lb = out.get("power.server_hours_lower_bound")
    out["power.server_hours_ratio"] = round(out["power.server_hours"] / lb, 3) if lb else None
    out["scenario.days"] = len(days)
    return out


def simulate_days(scenario: Scenario | None = None, *, power_policy=None, progress=None, days: int | None = None,
                  **day_kwargs) -> RunResult:
    """Run ``days`` (default ``day.days``) days of ``scenario`` with one power policy.

    Args:
        power_policy: a policy object kept across the days (None: each day's fixed
            schedule). One with a ``new_day`` method is told of each day after the first.
        progress: called as ``progress(k, seconds_done, seconds_total)`` (day ``k``).
        day_kwargs: passed to every :func:`usher.sim.day.simulate_day` call.
    """
    sc = scenario or Scenario()
    n = int(days if days is not None else sc.day.days)
    results: list[DayResult] = []
    for k in range(n):
        sck, weekday, holiday = day_scenario(sc, k)
        if k and power_policy is not None and hasattr(power_policy, "new_day"):
            power_policy.new_day()
        cb = (lambda done, total, k=k: progress(k, done, total)) if progress is not None else None
        results.append(simulate_day(sck, power_policy=power_policy, progress=cb, day_of_run=(k, weekday, holiday),
                                    **day_kwargs))
    return RunResult(run_kpis(results), results)
