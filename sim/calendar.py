"""The day's calendar: what happens at which 1-second tick, by kind of event.

Design: a calendar queue — per kind, a dict from tick to a list of items in the
order they were scheduled — which is cheaper than a heap for ~10^5-10^6 events on
a fixed grid. The loop pops a tick's bucket when it runs that tick; a bucket made
for a tick already run is never run.

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
    """Three calendar queues: ``servers``, ``sessions`` and ``launches`` (dicts
    tick -> list, appended to directly by the handlers)."""

    __slots__ = ("servers", "sessions", "launches")

    def __init__(self):
        self.servers: defaultdict = defaultdict(list)
        self.sessions: defaultdict = defaultdict(list)
        self.launches: defaultdict = defaultdict(list)

    def at_server(self, tick: int, item: tuple):
        self.servers[tick].append(item)

    def pending(self) -> int:
        """Items still scheduled (all kinds)."""
        return sum(len(b) for q in (self.servers, self.sessions, self.launches) for b in q.values())
