"""The day's calendar: what happens at which 1-second tick, by kind of event.

Design: a calendar queue — per kind, a bucket per tick holding its items in the
order they were scheduled — which is cheaper than a heap for ~10^5-10^6 events on
a fixed grid. The loop takes a tick's bucket when it runs that tick; a bucket made
for a tick already run (or outside the day) is never run. Server events are a
dict from tick to a list; the visits' events, the most numerous, are two
:class:`usher.sim._events.TickQueue` of C records (a list per tick of the day in
one pool), which the compiled handlers fill and the compiled loop takes, and
Python code reaches with ``schedule(tick, item)``, ``take(tick)`` and ``peek(tick)``.

Items:

- server events ``(kind, i)``: ``S_BOOTED`` / ``S_OFF`` (a boot or a shutdown
  finishes on server ``i``), ``S_CRASH`` (server ``i``), ``S_ZONE_DARK`` (zone
  ``i``), ``S_RECOVER`` (server ``i`` may be powered again);
- session events ``(kind, visit, generation, session)``: ``E_LOGON``,
  ``E_FAIL``, ``E_DISCONNECT``, ``E_CLOSE`` (the second app closes), ``E_END``
  (the visit is over); stale when the visit's generation moved on;
- launches ``(visit, generation, kind)``: ``L_NEW``, ``L_SECOND`` (a second app),
  ``L_RECONNECT``.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = ["Calendar"]

# launch kinds
L_NEW, L_SECOND, L_RECONNECT = 0, 1, 2
# session event kinds
E_LOGON, E_FAIL, E_DISCONNECT, E_CLOSE, E_END = 0, 1, 2, 3, 4
# server event kinds
S_BOOTED, S_OFF, S_CRASH, S_ZONE_DARK, S_RECOVER = 0, 1, 2, 3, 4


class Calendar:
    """Three calendar queues of a day of ``T`` ticks: ``servers`` (a dict tick ->
    list, appended to directly by the handlers), ``sessions`` and ``launches``
    (:class:`usher.sim._events.SessionQueue`, :class:`usher.sim._events.LaunchQueue`)."""

    __slots__ = ("servers", "sessions", "launches")

    def __init__(self, T: int):
        from usher.sim._events import LaunchQueue, SessionQueue  # they read this module's constants

        self.servers: defaultdict = defaultdict(list)
        self.sessions = SessionQueue(T)
        self.launches = LaunchQueue(T)

    def at_server(self, tick: int, item: tuple):
        self.servers[tick].append(item)

    def pending(self) -> int:
        """Items still scheduled (all kinds)."""
        return len(self.sessions) + len(self.launches) + sum(len(b) for b in self.servers.values())
