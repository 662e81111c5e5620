"""Every operation the day applies to the engine: timed, counted and traced.

Design: one place wraps the engine: every timed call is in :class:`EngineCalls`
(``timed`` for any call; ``session`` and ``launch_each``, the two that run ~10^5
times a day, time inline to save a call level). The methods are the day's
operations, each written to the trace (docs/TRACE_FORMAT.md) in the order
applied, so ``usher replay`` of the trace reproduces the same decisions. The
class is an extension type of the compiled per-event code (sim/_events.pyx).
"""

from __future__ import annotations

from usher.sim._events import EngineCalls

__all__ = ["EngineCalls"]
