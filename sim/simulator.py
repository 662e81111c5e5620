"""The simulated day's public names in one place (``usher.sim.simulator``).

The day lives in :mod:`usher.sim.day` (loop and state), :mod:`usher.sim.handlers`
and :mod:`usher.sim.launches` (the handlers), :mod:`usher.sim.sinks` (metrics),
:mod:`usher.sim.trace` (the replay trace) and :mod:`usher.planner.power` (power
policies); this module re-exports what scripts and benchmarks import.
"""

from usher.planner.power import FixedSchedule, FleetView, PowerPolicy
from usher.sim.day import SERIES_COLUMNS, ZONE_COLUMNS, DayResult, simulate_day
from usher.sim.trace import TraceWriter

__all__ = ["PowerPolicy", "FixedSchedule", "FleetView", "DayResult", "TraceWriter", "simulate_day",
           "SERIES_COLUMNS", "ZONE_COLUMNS"]
