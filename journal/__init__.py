"""usher.journal: a crash-safe journal and snapshots for a scheduler.

The journal is a trace (docs/TRACE_FORMAT.md) of every applied operation with its
decision, written with group commit; a snapshot is the pickled state; recovery is the
latest snapshot plus a replay of the journal after it. See docs/SERVICE.md.

    j = usher.journal.open("state/", scheduler=Scheduler.from_files("fleet.toml", "servers.csv"))
    outputs = j.apply([{"op": "launch", "id": "r1", "user": "u1", "app": "EHR"}])
    j.close()
    j = usher.journal.open("state/")          # after a crash: the same state
"""

from usher.journal.records import JournalError
from usher.journal.snapshot import read as read_snapshot
from usher.journal.snapshot import write_atomic as write_snapshot
from usher.journal.store import Journal, has_state, in_memory, open, recover
from usher.journal.writer import FSYNC_POLICIES, JournalWriter

__all__ = ["Journal", "JournalError", "JournalWriter", "FSYNC_POLICIES", "open", "in_memory", "recover", "has_state",
           "read_snapshot", "write_snapshot", "trace_lines"]


def trace_lines(directory):
    """The op lines (bytes, without line feeds) of the journal a directory holds after
    its latest snapshot: a trace that replays onto the snapshot's state."""
    import builtins
    import os

    from usher.journal.records import scan
    from usher.journal.store import _files

    snapshots, segments = _files(directory)
    base = max(snapshots) if snapshots else 0
    starts = sorted(s for s in segments if s >= base)
    for k, start in enumerate(starts):
        with builtins.open(segments[start], "rb") as f:
            records, _ = scan(f.read(), segments[start], last=k == len(starts) - 1)
        for op, _ in records:
            yield op

