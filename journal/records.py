"""Journal records: one applied operation per line, framed so that a torn write is seen.

A record is one line of three tab-separated fields::

    <crc32, 8 hex digits> TAB <the op, a trace line> TAB <its decision line, or empty> LF

The op is the operation exactly as a trace holds it (docs/TRACE_FORMAT.md), with ``t``
filled in; the decision is the decision line ``usher replay`` writes for it (launches
only). JSON text never holds a raw tab or line feed, so the fields split without
parsing, and ``cut -f2`` of a journal is a trace. The CRC (zlib's CRC-32) covers the
bytes between the first tab and the line feed.

Design: a record is valid only when it ends with its line feed and its CRC matches.
A crash in the middle of an append leaves at most the last record of the last segment
incomplete or wrong; :func:`scan` stops there and reports where the good records end,
so recovery drops that record whole and never applies part of it. A bad record that
is followed by good ones is not a torn write but damage, and raises
:class:`JournalError`.
"""

from __future__ import annotations

import zlib

from usher.errors import UsherError
from usher.journal import _frame

__all__ = ["JournalError", "encode", "encode_many", "encode_texts", "scan", "split"]


class JournalError(UsherError):
    """A journal or snapshot directory that cannot be used: damaged records in the
    middle of a segment, a snapshot that cannot be read, a missing segment."""


def encode(op: bytes, decision: bytes = b"") -> bytes:
    """The record of ``op`` (a trace line, JSON bytes) and its ``decision`` line."""
    body = op + b"\t" + decision
    return b"%08x\t%s\n" % (zlib.crc32(body), body)


def encode_many(ops, decisions) -> list[bytes]:
    """The records of the ops ``ops[k]`` and their decision lines ``decisions[k]``
    (JSON bytes, ``b""`` for none): :func:`encode` of each, in bulk. Lists of bytes
    are framed by the compiled ``usher.journal._frame`` (the same bytes, one object
    written in place a record); anything else here."""
    if type(ops) is list and type(decisions) is list:
        return _frame.encode_many(ops, decisions)
    crc = zlib.crc32
    return [b"%08x\t%s\n" % (crc(body), body) for body in map(b"\t".join, zip(ops, decisions))]


def encode_texts(ops: bytes, decisions: bytes) -> list[bytes]:
    """:func:`encode_many` of the lines of two texts (each line ended by a line feed,
    as many in each): the op lines of a request and their decision lines, framed
    without splitting them first."""
    return _frame.encode_texts(ops, decisions)


def split(record: bytes) -> tuple[bytes, bytes] | None:
    """(op, decision) of one record line without its line feed, or None when its
    frame or CRC is wrong."""
    if len(record) < 10 or record[8:9] != b"\t":
        return None
    body = record[9:]
    try:
        crc = int(record[:8], 16)
    except ValueError:
        return None
    if zlib.crc32(body) != crc:
        return None
    op, tab, decision = body.partition(b"\t")
    if not tab:
        return None
    return op, decision


def scan(data: bytes, name: str = "<journal>", last: bool = True) -> tuple[list, int]:
    """The valid records of a segment's bytes and the length of their prefix.

    Returns ``([(op, decision), ...], good_bytes)``. A final record that is incomplete
    (no line feed) or fails its CRC is a torn write when ``last`` (the segment being
    appended to when the process stopped): it is left out and ``good_bytes`` ends
    before it. Raises :class:`JournalError` for a bad record followed by more data,
    or for a torn record in a segment that is not the last."""
    records: list[tuple[bytes, bytes]] = []
    pos = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            rec = None
        else:
            rec = split(data[pos:end])
        if rec is None:
            tail = end < 0 or data.find(b"\n", end + 1) < 0
            if last and tail:
                return records, pos
            raise JournalError("journal", name, f"damaged record at byte {pos} (record {len(records) + 1})")
        records.append(rec)
        pos = end + 1
    return records, pos
