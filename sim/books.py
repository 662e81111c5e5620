"""The simulator's own ledger of live sessions, checked against the engine.

Design: the engine is the only one that decides; the simulator keeps its own
books (session id -> visit and server) so it can tell when the two disagree. A
fault checks that the sessions the engine reports lost are exactly the booked ones
on that server; at the end of the day the books must equal the engine's sessions
server by server. Mismatches are counted as KPIs (``books.*``), never hidden.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Visit", "Books"]


class Visit:
    """One user's stay: from the first launch to the planned logoff.

    ``a``: arrival index (into the presampled columns); ``user``/``uname``: user
    index and id; ``kind``: K_* visit kind; ``h``/``role``: hospital and idle-list
    role (0 clinical, 1 imaging); ``app``, ``loc``, ``ext``, ``ep``: what is launched
    from where; ``end``: planned logoff tick; ``gen``: generation (events of an older
    one are stale); ``sid``: the visit's main session (-1 none); ``labs``: the
    session the second app runs in (-1 none); ``extras``: further sessions of the
    visit; ``tries``: retries so far; ``fail``: the next placement's logon fails;
    ``first``: no placement yet."""

    __slots__ = ("a", "user", "uname", "kind", "app", "loc", "ext", "ep", "end", "gen", "sid",
                 "tries", "fail", "extras", "first", "h", "role", "labs")


class Books:
    """Live sessions as the simulator saw them placed.

    Attributes:
        entries: dict session id -> (visit, server index).
        launching: session ids whose logon has not completed (a user may disconnect,
            or a failure may be due, before it does).
        booked: list of int, booked sessions per server.
        names: session id -> id of the launch that created it (kept when tracing or
            keeping decisions).
    """

    __slots__ = ("entries", "launching", "booked", "names", "naming")

    def __init__(self, n_servers: int, naming: bool):
        self.entries: dict = {}
        self.launching: set = set()
        self.booked = [0] * n_servers
        self.names: dict = {}
        self.naming = naming

    def book(self, sid: int, visit: Visit, server: int, launch_name: str | None):
        self.entries[sid] = (visit, server)
        self.launching.add(sid)
        self.booked[server] += 1
        if self.naming:
            self.names[sid] = launch_name

    def unbook(self, sid: int):
        """Take ``sid`` off the books; its (visit, server), or None if not booked."""
        entry = self.entries.pop(sid, None)
        if entry is not None:
            self.booked[entry[1]] -= 1
        return entry

    def __contains__(self, sid) -> bool:
        return sid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def balance(self, engine_sessions: np.ndarray, engine_live: int) -> bool:
        """True when the books equal the engine's sessions server by server."""
        return bool(np.array_equal(engine_sessions, np.array(self.booked, dtype=np.int64))
                    and len(self.entries) == engine_live)
