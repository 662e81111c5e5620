"""Planners above the placement engine: power policies (which servers are wanted on).

A planner is shown a view of the fleet and answers with what it wants; the simulator
(and a live broker) carries that out through the :class:`usher.Scheduler` API.
"""

POWER_POLICIES = ("fixed", "citrix", "autoscale")


def power_policy(name: str, settings=None, interval_seconds: int = 60):
    """A power policy by name: ``fixed`` (None: the scenario's fixed schedule, made
    by the simulator), ``citrix`` (:class:`usher.planner.autoscale.Citrix`) or
    ``autoscale`` (:class:`usher.planner.autoscale.Autoscale`); ``settings`` a
    :class:`usher.planner.settings.PlannerSettings` for the last two."""
    from usher.errors import InvalidArgument
    from usher.planner.autoscale import Autoscale, Citrix

    if name == "fixed":
        return None
    if name == "citrix":
        return Citrix(settings, interval_seconds)
    if name == "autoscale":
        return Autoscale(settings, interval_seconds)
    raise InvalidArgument("power", name, f"must be one of {', '.join(POWER_POLICIES)}")
