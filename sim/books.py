"""The simulator's own ledger of live sessions, checked against the engine.

Design: the engine is the only one that decides; the simulator keeps its own
books (session id -> visit and server) so it can tell when the two disagree. A
fault checks that the sessions the engine reports lost are exactly the booked ones
on that server; at the end of the day the books must equal the engine's sessions
server by server. Mismatches are counted as KPIs (``books.*``), never hidden.

:class:`Visit` and :class:`Books` are extension types of the compiled per-event
code (sim/_events.pyx), which reads and writes them on every event.
"""

from __future__ import annotations

from usher.sim._events import Books, Visit

__all__ = ["Visit", "Books"]
