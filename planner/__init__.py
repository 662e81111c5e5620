"""Planners above the placement engine: power policies (which servers are wanted on).

A planner is shown a view of the fleet and answers with what it wants; the simulator
(and a live broker) carries that out through the :class:`usher.Scheduler` API.
"""
