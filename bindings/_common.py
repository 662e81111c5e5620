"""What the parts of :class:`usher.Scheduler` share: the input checks its methods
call, the user-index kinds, the lock decorator, and (for type checkers only) the
attributes and methods of the scheduler that its mixins use. Imports no part of
the scheduler."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from usher import _engine
from usher import validate as _v
from usher.core.codes import parse_enum
from usher.errors import InvalidArgument

_SLOT_MASK = (1 << 32) - 1
_P64 = ctypes.POINTER(ctypes.c_int64)


def _ptr(array: np.ndarray):
    """An int64 array as a C pointer, for kernels called through ctypes."""
    return array.ctypes.data_as(_P64)


# ---------------------------------------------------------------- validation
# the rules live in usher.validate; these names are what the methods below call
def _check_int(field, value, lo=None, hi=None, allow_none=False):
    if value is None and allow_none:
        return None
    return _v.integer(field, value, lo, hi)


def _filled(n, value):
    """An int64 array of n copies of value (cheaper than np.full for small n)."""
    a = np.empty(n, dtype=np.int64)
    a.fill(value)
    return a


def _int64_rows(a: np.ndarray) -> np.ndarray:
    """An integer array as contiguous int64 rows: ``a`` itself when it already is one
    (no reshape: a batch's index arrays usually are)."""
    if a.ndim == 1 and a.dtype == np.int64 and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int64)


_check_float = _v.real
_check_bool = _v.flag
_check_name = _v.name
_as_names = _v.names


def _as_enums(field, value, enum_cls) -> tuple:
    """A name, an enum member, or a sequence of them, as enum members."""
    if value is None:
        return ()
    if isinstance(value, (str, enum_cls)):
        value = (value,)
    if isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise InvalidArgument(field, value, "must be a name or a list of names")
    return tuple(parse_enum(enum_cls, field, v) for v in value)


_ZEROS = np.zeros(4096)  # stand-in column for a telemetry field not given (never written)
_ZEROS.flags.writeable = False
_INT64 = np.dtype(np.int64)


def _telemetry_column(field, values, n):
    """One telemetry field of a batch as a contiguous float64 array of length n
    (numbers only; the kernel checks each row's range, in row order)."""
    return _v.number_array(field, values, n)


#: what a user index holds (``Scheduler._user_kind``; the same codes in _engine.pyx)
USER_DIRECTORY, USER_IMPLICIT, USER_FREE = 0, 1, 2
#: the sweep (``Engine._sweep``) runs once this many implicit users and endpoints
#: were added, or as many as it kept the time before (the users, and the endpoints
#: live sessions name), or a quarter of the records it read, whichever is more
SWEEP_FLOOR: int = _engine.SWEEP_FLOOR


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _serialised(method: _Method) -> _Method:
    """Run ``method`` under the scheduler's lock: every check that reads the
    state (a duplicate name, an unknown pool, the clock) and every write of one
    configuration call happen in one critical section."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._locked():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]  # functools.wraps keeps the signature


if TYPE_CHECKING:

    class _Host(_engine.Engine):
        """What the mixins of ``Scheduler`` use of it (defined in scheduler.py and
        the other mixins; the compiled base's part is in _engine.pyi)."""

        _seed: int
        _tags: dict[str, int]
        _server_images: list[str | None]
        _server_tagsets: list[tuple[str, ...]]
        _user_apps: list[frozenset]
        _pool_config: list[dict]
        _app_config: list[dict]
        _header: np.ndarray
        _clockv: np.ndarray
        _t: dict[str, np.ndarray]
        _n_app_pools: int

        def _alloc(self, table: str, array: np.ndarray, cap_slot: str | None) -> Any: ...
        def _grow(self, table: str, needed: int, cap_slot: str | None, fill: Any = ...) -> Any: ...
        def _locked(self) -> Any: ...
        def _zone_index(self, zone: Any, field: Any) -> Any: ...
        def _tag_mask(self, field: Any, tags: Any) -> int: ...
else:
    _Host = object
