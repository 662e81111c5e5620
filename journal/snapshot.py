"""Snapshots: a pickle written atomically (write to a temporary file, fsync, rename,
fsync the directory), so that a snapshot file under its final name is always whole."""

from __future__ import annotations

import os
import pickle
import tempfile

from usher.journal.records import JournalError

__all__ = ["write_atomic", "read"]

#: the pickle protocol of snapshots (5: out-of-band buffers, Python >= 3.8)
PROTOCOL = 5


def write_atomic(path, obj) -> None:
    """Pickle ``obj`` to ``path`` atomically: a reader sees the old file or the new
    one, never part of one, whatever the moment of a crash."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pickle", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def fsync_directory(directory) -> None:
    """fsync a directory, so that a rename or a new file in it is durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path):
    """The object a snapshot holds; JournalError when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as e:
        raise JournalError("snapshot", os.fspath(path), f"cannot be read ({type(e).__name__}: {e})") from None
