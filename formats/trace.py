"""The trace format: operations, decision and error lines, and how a trace is read.

A trace is JSON Lines, one operation per line, each naming a ``usher.Scheduler``
method (``op``) with that method's keyword names, at time ``t``. A replay writes one
:class:`LaunchDecision` line per launch and one :class:`LineError` line per line that
could not be applied. The format is specified in docs/TRACE_FORMAT.md.

Design: the operations are msgspec Structs, a tagged union on ``op`` with unknown
fields forbidden; the configuration operations are the fleet files' record layouts
(``usher.formats.specs``) plus ``t``, so the two formats cannot drift apart. The ops
a planner issues (power, mode, place_last, image, logoff) carry an optional
``reason`` (UNSET: left out of the encoded line) that applying them ignores. The input
is read in blocks of whole lines and each block is decoded at once into Structs; only
a block holding a bad or blank line is decoded again line by line, so that each error
names its own line. A line that cannot be decoded becomes a :class:`BadLine` holding
its :class:`TraceError`, whatever msgspec or the JSON held (an integer beyond 64 bits,
a number beyond a float, nesting deeper than the decoder's stack): decoding never
raises for a line's content. A file that cannot be read to its end raises
:class:`TraceFileError`.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import sys
import zlib
from collections.abc import Iterable

import msgspec
import numpy as np
from msgspec import UNSET, Struct, UnsetType

from usher.core.codes import Outcome, Reason
from usher.errors import InvalidArgument
from usher.formats.errors import TraceError, TraceFileError
from usher.formats.specs import AppSpec, Int64, PoolSpec, ServerSpec, SettingsSpec, UserSpec

__all__ = [
    "TraceError",
    "TraceFileError",
    "OPS",
    "OP_CLASSES",
    "Op",
    "LaunchDecision",
    "LineError",
    "OUTCOME_NAMES",
    "REASON_NAMES",
    "TraceSource",
    "as_op",
]

BLOCK_BYTES = 1 << 20  # bytes read and decoded at once
_ITEMS_PER_BLOCK = 4096  # lines of an iterable taken at once


# ---------------------------------------------------------------- operations
_OPCFG = dict(kw_only=True, forbid_unknown_fields=True, tag_field="op", gc=False)
Name = str | Int64  # a user, launch or session id: text or a 64-bit integer


class SettingsOp(SettingsSpec, tag="settings", **_OPCFG):
    t: float


class LicencesOp(Struct, tag="licences", **_OPCFG):
    t: float
    cap: Int64 | None


class PoolOp(PoolSpec, tag="pool", **_OPCFG):
    t: float


class AppOp(AppSpec, tag="app", **_OPCFG):
    t: float


class UserOp(UserSpec, tag="user", **_OPCFG):
    t: float


class ServerOp(ServerSpec, tag="server", **_OPCFG):
    t: float


class RemoveServerOp(Struct, tag="remove_server", **_OPCFG):
    t: float
    server: str
    force: bool = False


class PowerOp(Struct, tag="power", **_OPCFG):
    t: float
    server: str
    state: str
    reason: str | UnsetType = UNSET  # why (a planner's line for an operator): kept, never applied


class RegisterOp(Struct, tag="register", **_OPCFG):
    t: float
    server: str
    registered: bool


class ModeOp(Struct, tag="mode", **_OPCFG):
    t: float
    server: str
    mode: str
    reason: str | UnsetType = UNSET


class PlaceLastOp(Struct, tag="place_last", **_OPCFG):
    t: float
    servers: list[str]
    flag: bool
    reason: str | UnsetType = UNSET


class ImageOp(Struct, tag="image", **_OPCFG):
    t: float
    server: str
    image: str | None
    reason: str | UnsetType = UNSET


class TelemetryOp(Struct, tag="telemetry", **_OPCFG):
    t: float
    server: str
    cpu: float | None = None
    mem: float | None = None
    disk_queue: float | None = None
    custom: float | None = None


class LaunchOp(Struct, tag="launch", **_OPCFG):
    t: float
    id: Name
    user: str
    app: str
    location: str | None = None
    endpoint: str | None = None
    external: bool = False


class LogonDoneOp(Struct, tag="logon_done", **_OPCFG):
    t: float
    session: Name


class DisconnectOp(Struct, tag="disconnect", **_OPCFG):
    t: float
    session: Name


class LogoffOp(Struct, tag="logoff", **_OPCFG):
    t: float
    session: Name
    reason: str | UnsetType = UNSET


class CloseAppOp(Struct, tag="close_app", **_OPCFG):
    t: float
    session: Name
    app: str


class LaunchFailedOp(Struct, tag="launch_failed", **_OPCFG):
    t: float
    session: Name


OP_CLASSES = (SettingsOp, LicencesOp, PoolOp, AppOp, UserOp, ServerOp, RemoveServerOp, PowerOp,
              RegisterOp, ModeOp, TelemetryOp, LaunchOp, LogonDoneOp, DisconnectOp, LogoffOp,
              CloseAppOp, LaunchFailedOp, PlaceLastOp, ImageOp)
Op = SettingsOp | LicencesOp | PoolOp | AppOp | UserOp | ServerOp | RemoveServerOp | PowerOp | \
    RegisterOp | ModeOp | TelemetryOp | LaunchOp | LogonDoneOp | DisconnectOp | LogoffOp | \
    CloseAppOp | LaunchFailedOp | PlaceLastOp | ImageOp
#: op name -> its Struct
OPS: dict[str, type[Op]] = {cls.__struct_config__.tag: cls for cls in OP_CLASSES}  # type: ignore[misc]  # tags are strs


# ---------------------------------------------------------------- output lines
class LaunchDecision(Struct, gc=False):
    """One decision line. ``session`` is the id of the launch that created the
    session; ``explanation`` is present only with ``explain``."""

    t: float
    id: str | int
    outcome: str
    server: str | None
    zone: str | None
    session: str | int | None
    reason: str | None
    load_index: int | None
    explanation: dict | UnsetType = UNSET


class LineError(Struct, gc=False):
    """One error line: the line was not applied (the state is unchanged)."""

    t: float | None
    line: int
    error: str
    message: str


#: ``Outcome`` code -> its name in decision lines
OUTCOME_NAMES = tuple(str(o) for o in Outcome)
#: ``Reason`` code -> its name in decision lines (None for ``Reason.NONE``)
REASON_NAMES = tuple(None if r == Reason.NONE else str(r) for r in Reason)


# ---------------------------------------------------------------- decoding errors
class BadLine:
    """A line that could not be decoded (stands in for an op in a block)."""

    __slots__ = ("t", "error")

    def __init__(self, t, error):
        self.t = t
        self.error = error


class Blank:
    """An empty line: skipped, not counted."""


BLANK = Blank()
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`")
_NAMED = re.compile(r"field `([^`]+)`")


def _loose(raw):
    """The line as a plain object, if it is JSON at all (for error details)."""
    if isinstance(raw, dict):
        return raw
    try:
        return msgspec.json.decode(raw)
    except (*_DECODE_ERRORS, TypeError, ValueError):
        return None


def _line_t(obj):
    t = obj.get("t") if isinstance(obj, dict) else None
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        return None
    try:
        t = float(t)
    except OverflowError:
        return None
    return t if math.isfinite(t) else None


def _snippet(raw) -> str:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        text = bytes(raw[:200]).decode("utf-8", "replace")
    else:
        text = str(raw)[:200]
    text = text.strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_detail(msg: str, obj: dict):
    """(field, detail) of a msgspec ValidationError message about the object ``obj``."""
    m = _AT.search(msg)
    path = m.group(1) if m else ""
    detail = msg.split(" - at `")[0]
    field = re.split(r"[.\[]", path)[0] if path else None
    named = _NAMED.search(detail)
    if named:
        field = named.group(1) if not path else f"{path}.{named.group(1)}"
        field = field.split(".")[0] if not path else field
    op = obj.get("op")
    if field == "op" and "missing required field" not in detail:
        detail = f"unknown op; expected one of: {', '.join(OPS)}"
    elif detail.startswith("Object contains unknown field"):
        detail = f"unknown field for op {op!r}"
        field = named.group(1) if named else field
    elif detail.startswith("Object missing required field"):
        detail = "required field is missing" + (f" (op {op!r})" if isinstance(op, str) else "")
        field = named.group(1) if named else field
    elif detail.startswith("Expected `int` <=") or detail.startswith("Expected `int` >="):
        detail = "must be an integer from -2**63 to 2**63-1"
    elif detail == "Number out of range":
        detail = "number out of range"
    return field, detail


def trace_error(exc: BaseException, raw) -> BadLine:
    """The BadLine holding the TraceError for a line (text or dict) that msgspec refused."""
    if isinstance(exc, RecursionError):
        return BadLine(None, TraceError("line", _snippet(raw), "nested too deeply"))
    obj = _loose(raw)
    msg = str(exc)
    if isinstance(exc, msgspec.ValidationError) and obj is None and " - at `$." in msg:
        # valid JSON that only a typed decoder refuses (a number beyond a float)
        field, detail = _validation_detail(msg, {})
        return BadLine(None, TraceError(field or "line", None, f"{detail} (line {_snippet(raw)!r})"))
    if not isinstance(exc, msgspec.ValidationError) or obj is None:
        return BadLine(None, TraceError("line", _snippet(raw), f"malformed JSON ({msg})"))
    if not isinstance(obj, dict):
        return BadLine(None, TraceError("line", obj, f"must be a JSON object ({msg.split(' - at `')[0]})"))
    field, detail = _validation_detail(msg, obj)
    value = obj.get(field) if field else None
    return BadLine(_line_t(obj), TraceError(field or "line", value, detail))


class _OpItem(Struct):
    """An op as a Struct's field, for :func:`decode_item`."""

    op: Op


def decode_item(decoder, item):
    """One line of an iterable (JSON text, a dict or an op Struct) as an op, or a
    :class:`BadLine` / :data:`BLANK`."""
    if isinstance(item, OP_CLASSES):
        return item
    if isinstance(item, dict):
        try:  # through a Struct field: msgspec caches a Struct's types, not a bare Union's
            return msgspec.convert({"op": item}, _OpItem).op
        except (msgspec.ValidationError, RecursionError):
            pass
        try:  # the error again, its path the item's own
            return msgspec.convert(item, Op)
        except (msgspec.ValidationError, RecursionError) as e:
            return trace_error(e, item)
    if isinstance(item, str):
        try:
            item = item.encode("utf-8")
        except UnicodeEncodeError as e:
            return BadLine(None, TraceError("line", _snippet(item), f"not UTF-8 text ({e.reason})"))
    if not isinstance(item, (bytes, bytearray, memoryview)):
        return BadLine(None, TraceError("line", repr(item)[:60], "must be a JSON text, a dict or an op"))
    if not item.strip():
        return BLANK
    try:
        return decoder.decode(item)
    except _DECODE_ERRORS as e:
        return trace_error(e, item)


def as_op(item):
    """``item`` (an op Struct, or a dict / JSON text in the trace format) as an op
    Struct. Raises :class:`TraceError` when it is not an operation."""
    op = decode_item(OP_DECODER, item)
    if op.__class__ is BadLine:
        raise op.error
    if op is BLANK:
        raise TraceError("line", item, "is blank: no operation")
    return op


OP_DECODER = msgspec.json.Decoder(Op)


def decode_block(decoder, block) -> tuple[list, int]:
    """(one op per line of ``block`` (bytes or a memoryview), number of blank lines).
    Decoded at once when every line is a valid op, else line by line (``BadLine`` /
    ``BLANK`` in place). msgspec skips blank lines and reads two values on one line,
    so the lines are counted (by numpy: bytes.count is a byte-at-a-time loop)."""
    ends = np.frombuffer(block, np.uint8) == 10
    n_lines = int(np.count_nonzero(ends)) + (0 if len(ends) and ends[-1] else 1)
    try:
        ops = decoder.decode_lines(block)
        if len(ops) == n_lines:
            return ops, 0
    except _DECODE_ERRORS:
        pass
    block = bytes(block)
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    ops = [decode_item(decoder, line) for line in lines]
    return ops, sum(1 for o in ops if o is BLANK)


# ---------------------------------------------------------------- sources
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _read_reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return f"truncated compressed file ({exc})"
    if isinstance(exc, gzip.BadGzipFile):
        return f"not a gzip file ({exc})"
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    return f"cannot read: {exc}"


class TraceSource:
    """A trace input: yields blocks ``(first line number, ops, blank lines)`` in order.

    Args:
        src: a path (``.gz`` read through gzip; ``"-"`` = stdin), bytes, a binary or
            text file, or an iterable of lines (JSON text, dicts or op Structs).

    Raises:
        TraceFileError: the file cannot be opened, or not read to its end.
    """

    def __init__(self, src):
        self.size = None
        self.name = "<trace>"
        self.position = lambda: 0
        self._close = None
        self._stream = None
        self._items = None
        if isinstance(src, (str, os.PathLike)):
            path = os.fspath(src)
            self.name = path
            if path == "-":
                self.name = "<stdin>"
                self._stream = sys.stdin.buffer
            else:
                self._open(path)
        elif isinstance(src, (bytes, bytearray, memoryview)):
            self._stream = io.BytesIO(bytes(src))
        elif hasattr(src, "read"):
            self.name = getattr(src, "name", self.name)
            self._stream = src.buffer if isinstance(src, io.TextIOBase) and hasattr(src, "buffer") else src
        elif isinstance(src, Iterable):
            self._items = src
        else:
            raise InvalidArgument("lines_or_path", src, "must be a path, '-', bytes, a file or an iterable of lines")

    def _open(self, path):
        try:
            raw = open(path, "rb")
            self.size = os.fstat(raw.fileno()).st_size
        except OSError as e:
            raise TraceFileError(path, None, None, None, _read_reason(e)) from None
        self._close = raw
        self.position = raw.tell
        self._stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw

    def close(self):
        if self._close is not None:
            self._close.close()

    def blocks(self, decoder):
        if self._items is not None:
            yield from self._item_blocks(decoder)
            return
        first = 1
        rest = b""
        while True:
            data = self._read(first)
            if isinstance(data, str):
                data = data.encode("utf-8", "surrogatepass")  # (a lone surrogate: refused by the decoder)
            if not data:
                break
            data = rest + data if rest else data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            ops, blanks = decode_block(decoder, memoryview(data)[: cut + 1])  # (a view: no copy)
            yield first, ops, blanks
            first += len(ops)
        if rest:
            yield first, *decode_block(decoder, rest)

    def _read(self, first):
        try:
            return self._stream.read(BLOCK_BYTES)
        except _READ_ERRORS as e:
            where = None if first == 1 else f"after line {first - 1}"
            raise TraceFileError(self.name, where, None, None, _read_reason(e)) from None

    def _item_blocks(self, decoder):
        first = 1
        ops = []
        blanks = 0
        for item in self._items:
            op = decode_item(decoder, item)
            ops.append(op)
            blanks += op is BLANK
            if len(ops) >= _ITEMS_PER_BLOCK:
                yield first, ops, blanks
                first += len(ops)
                ops, blanks = [], 0
        if ops:
            yield first, ops, blanks
