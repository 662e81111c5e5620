"""The launch handler: the tick's launches decided by the engine, then their
consequences.

Design: the decisions of a tick come first, all of them, through
``Scheduler.launch_many`` when the tick holds at least ``day.launch_batch_min``
launches (a storm), else one ``launch()`` each: launch_many costs a fixed call
overhead plus a small cost per row against one launch() per row, so batching
only pays for large ticks. The tick's launch lines go to the trace before any
consequence (a logoff of a denied visit's extra session, of a session a
reconnect replaced), since the engine decided every launch of the tick first and
a replay must too. Then each decision is applied in order by the handler of its
launch kind (:func:`on_new`, :func:`on_second`, :func:`on_reconnect`).

The handler is compiled, with the session events and the new visits
(sim/_events.pyx); this module names its parts.
"""

from __future__ import annotations

from usher.sim._events import PLACED, REJECTED, RECONNECTED, SHARED, app_and_endpoint, decide, launches, \
    on_new, on_reconnect, on_second

__all__ = ["launches", "decide", "app_and_endpoint", "on_new", "on_second", "on_reconnect", "PLACED",
           "RECONNECTED", "SHARED", "REJECTED"]
