"""The checks at the API's edge: every argument of every public method goes
through one of these before any kernel, table or dict sees it.

Design: one rule per kind of value, stated once (docs/SEMANTICS.md, *Input
rules*), and each checker raises :class:`usher.InvalidArgument` naming the field
and the value — never a TypeError, OverflowError or KeyError of Python's own.
A checker returns the value in the form the engine stores (an exact ``str``, a
Python ``int`` or ``float``, a contiguous 1-D ndarray), so a value that passed
cannot fail later on a conversion half-way through a change. The rules:

- ids and names (users, endpoints, apps, pools, servers, zones, tags, images):
  a non-empty ``str`` (numpy's str included), stored as an exact ``str``;
- flags: ``bool`` or ``numpy.bool_`` (not 0/1, not "false");
- integers: ``int`` or a numpy integer (not ``bool``), within a documented
  range; counts within ``[.., MAX_COUNT]`` (int32);
- real numbers: ``int``, ``float`` or a numpy number (not ``bool``), finite,
  within a documented range;
- times: real numbers in ``[-MAX_TIME, MAX_TIME]``;
- session ids: integers in ``[0, 2**63 - 1]``;
- arrays: 1-D, of the right kind (integer, bool or real), of the length of the
  batch; checked with whole-array numpy operations, never a Python loop per row.

The hot single-launch path checks the same rules inline in ``_engine.pyx``
(a type test or two per argument); these functions are the reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from usher.errors import InvalidArgument

__all__ = [
    "MAX_COUNT", "MAX_TIME", "MAX_SESSION_ID",
    "name", "optional_name", "names", "flag", "integer", "optional_integer", "number", "real",
    "time", "session_id", "sequence", "index_array", "flag_array", "number_array", "real_array",
    "time_array",
]

#: The largest count (sessions, licences, instances, tolerance): int32.
MAX_COUNT = 2**31 - 1
#: The largest magnitude of a time in seconds (about 31.7 million years): far
#: beyond any clock, far below where a double loses whole seconds.
MAX_TIME = 1e15
#: Session ids are int64 (``generation << 32 | slot``) and never negative.
MAX_SESSION_ID = 2**63 - 1

_INTEGER_TYPES = (int, np.integer)
_REAL_TYPES = (int, float, np.integer, np.floating)


def _short(value: Any) -> Any:
    """An argument fit for an error message (a big array as its shape)."""
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return value


def name(field: str, value: Any) -> str:
    """A non-empty string, as an exact ``str``."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(field, _short(value), "must be a non-empty string")
    return value if type(value) is str else str(value)


def optional_name(field: str, value: Any) -> str | None:
    """None, or :func:`name`."""
    return None if value is None else name(field, value)


def names(field: str, value: Any) -> tuple[str, ...]:
    """None (no names), one name, or an iterable of names, as a tuple of strs."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (name(field, value),)
    if isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise InvalidArgument(field, _short(value), "must be a string or a list of strings")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise InvalidArgument(field, _short(value), "must be a 1-D list of strings")
    return tuple(name(field, v) for v in value)


def flag(field: str, value: Any) -> bool:
    """``True`` / ``False`` (numpy's bool included)."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise InvalidArgument(field, _short(value), "must be true or false")


def integer(field: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool) in ``[lo, hi]``, as a Python int."""
    if isinstance(value, bool) or isinstance(value, np.bool_) or not isinstance(value, _INTEGER_TYPES):
        raise InvalidArgument(field, _short(value), "must be an integer")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise InvalidArgument(field, value, f"must be in {rng}")
    return v


def optional_integer(field: str, value: Any, lo: int | None = None, hi: int | None = None) -> int | None:
    """None, or :func:`integer`."""
    return None if value is None else integer(field, value, lo, hi)


def number(field: str, value: Any) -> float:
    """A real number (not a bool) as a Python float, NaN and infinities kept for
    a kernel that checks the range itself (telemetry); an int beyond a double's
    range is refused."""
    if isinstance(value, bool) or isinstance(value, np.bool_) or not isinstance(value, _REAL_TYPES):
        raise InvalidArgument(field, _short(value), "must be a number")
    try:
        return float(value)
    except OverflowError:
        raise InvalidArgument(field, value, "must be finite") from None


def real(field: str, value: Any, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False) -> float:
    """A finite real number (not a bool) in ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_open``), as a Python float."""
    if isinstance(value, bool) or isinstance(value, np.bool_) or not isinstance(value, _REAL_TYPES):
        raise InvalidArgument(field, _short(value), "must be a number")
    try:
        v = float(value)
    except OverflowError:  # an int beyond a double's range
        raise InvalidArgument(field, value, "must be finite") from None
    if math.isnan(v) or math.isinf(v):
        raise InvalidArgument(field, value, "must be finite")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidArgument(field, value, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise InvalidArgument(field, value, f"must be <= {hi}")
    return v


def time(field: str, value: Any) -> float:
    """A time in seconds: a finite real number within ``±MAX_TIME``."""
    if type(value) is float and -MAX_TIME <= value <= MAX_TIME:
        return value
    v = real(field, value)
    if not -MAX_TIME <= v <= MAX_TIME:
        raise InvalidArgument(field, value, f"must be within ±{MAX_TIME:g} seconds")
    return v


def session_id(field: str, value: Any) -> int:
    """A session id: an integer in ``[0, 2**63 - 1]``."""
    return integer(field, value, 0, MAX_SESSION_ID)


def sequence(field: str, value: Any) -> list[Any] | tuple[Any, ...] | np.ndarray:
    """A batch argument: a list or tuple as is, a 1-D ndarray as is, any other
    iterable (not a str, bytes or dict) as a list. Refuses scalars and
    multi-dimensional arrays."""
    if type(value) is list or type(value) is tuple:
        return value
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise InvalidArgument(field, _short(value), "must be one-dimensional")
        return value
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise InvalidArgument(field, _short(value), "must be a sequence")
    try:
        return list(value)
    except Exception as exc:  # an iterable that fails while iterated
        raise InvalidArgument(field, _short(value), f"cannot be read: {exc}") from None


def _length(field: str, a: Any, n: int | None) -> None:
    if n is not None and len(a) != n:
        raise InvalidArgument(field, f"length {len(a)}", f"must have length {n}")


def index_array(field: str, value: Any, n: int | None = None) -> np.ndarray:
    """A 1-D integer ndarray (signed or unsigned) as contiguous int64 (``value``
    itself when it already is one); indices are checked against their table by
    the caller. Unsigned values beyond int64 are refused here."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        raise InvalidArgument(field, _short(value), "must be an integer array")
    if value.ndim != 1:
        raise InvalidArgument(field, _short(value), "must be one-dimensional")
    _length(field, value, n)
    if value.dtype.kind == "u" and value.dtype.itemsize >= 8 and value.size and value.max() > np.iinfo(np.int64).max:
        k = int(np.argmax(value > np.iinfo(np.int64).max))
        raise InvalidArgument(f"{field}[{k}]", int(value[k]), "out of range")
    if value.dtype == np.int64 and value.flags.c_contiguous:
        return value
    return np.ascontiguousarray(value, dtype=np.int64)


def _as_array(field: str, value: Any, n: int | None) -> np.ndarray:
    """``value`` (a list, tuple or ndarray) as a 1-D ndarray of length n."""
    value = sequence(field, value)
    try:
        a = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(field, _short(value), "must be an array of numbers") from None
    if a.ndim != 1:
        raise InvalidArgument(field, _short(value), "must be one-dimensional")
    _length(field, a, n)
    return a


def flag_array(field: str, value: Any, n: int | None = None) -> np.ndarray:
    """A 1-D array of flags (bools, or a bool ndarray) as contiguous int64 0/1."""
    a = _as_array(field, value, n)
    if a.dtype.kind != "b" and a.size:
        raise InvalidArgument(field, _short(value), "must hold true or false only")
    return a.astype(np.int64)


def number_array(field: str, value: Any, n: int | None = None) -> np.ndarray:
    """A 1-D array of real numbers (no bools, strings or objects) as contiguous
    float64; NaN and infinities kept for a kernel that checks each row."""
    a = _as_array(field, value, n)
    if a.dtype.kind not in "iuf" and a.size:
        raise InvalidArgument(field, _short(value), "must hold numbers only")
    return np.ascontiguousarray(a, dtype=np.float64)


def real_array(field: str, value: Any, n: int | None = None, lo: float | None = None,
               hi: float | None = None) -> np.ndarray:
    """A 1-D array of finite real numbers (no bools, strings or objects) within
    ``[lo, hi]``, as contiguous float64."""
    a = number_array(field, value, n)
    bad = ~np.isfinite(a)
    if lo is not None:
        bad |= a < lo
    if hi is not None:
        bad |= a > hi
    if bad.any():
        k = int(np.argmax(bad))
        why = "must be finite" if not math.isfinite(a[k]) else f"must be in [{lo}, {hi}]"
        raise InvalidArgument(f"{field}[{k}]", float(a[k]), why)
    return a


def time_array(field: str, value: Any, n: int | None = None) -> np.ndarray:
    """A 1-D array of non-decreasing times (:func:`time`'s rule each), as
    contiguous float64."""
    a = real_array(field, value, n, -MAX_TIME, MAX_TIME)
    if a.shape[0] > 1:
        back = a[1:] < a[:-1]
        if back.any():
            k = int(np.argmax(back)) + 1
            raise InvalidArgument(f"{field}[{k}]", float(a[k]), "times must not decrease")
    return a
