"""``Scheduler``'s batch launch: ``launch_many`` and the index look-ups it takes
(a mixin of :class:`usher.Scheduler`; see scheduler.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from usher import _engine
from usher import validate as _v
from usher._common import (
    USER_FREE,
    _filled,
    _Host,
)
from usher.core import state as st
from usher.decisions import Decisions
from usher.errors import (
    InvalidArgument,
    UnknownApp,
    UnknownUser,
)


def _objects_as_list(values):
    """An object ndarray of a batch as a list of its items (the same objects): the
    per-row loops in ``_engine`` read a list's items directly, and an array's
    through numpy's iterator, a few times slower."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values.tolist()
    return values


class _Batches(_Host):
    """Batch launches (a logon storm) and the user and app indices they take."""

    # ------------------------------------------------------------ batch launch
    def user_indices(self, users: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices of known users (for ``launch_many`` with integer arrays and
        ``launch_by_index``). The index of a user a launch created holds while
        the user has a live session (see docs/SEMANTICS.md, *Memory*)."""
        users = _v.sequence("users", users)
        k = _engine.first_not_id(users)
        if k >= 0:
            raise InvalidArgument(f"users[{k}]", users[k], "must be a non-empty string")
        with self._locked():
            out = self._find_users(users)
        unknown = np.flatnonzero(out < 0)
        if len(unknown):
            k = int(unknown[0])
            raise UnknownUser(f"users[{k}]", users[k], "no such user")
        return out

    def app_indices(self, apps: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices of apps (for ``launch_many`` with integer arrays)."""
        apps = _v.sequence("apps", apps)
        k = _engine.first_not_id(apps)
        if k >= 0:
            raise InvalidArgument(f"apps[{k}]", apps[k], "must be a non-empty string")
        get = self._apps.get
        out = [get(a) for a in apps]
        if None in out:
            k = out.index(None)
            raise UnknownApp(f"apps[{k}]", apps[k], "no such app")
        return np.array(out, dtype=np.int64)

    def launch_many(self, users: Sequence[str] | np.ndarray, apps: Sequence[str] | np.ndarray,
                    locations: Sequence[str | None] | None = None, endpoints: Sequence[str | None] | None = None,
                    external: Sequence[bool] | np.ndarray | None = None,
                    now: float | Sequence[float] | np.ndarray | None = None) -> Decisions:
        """Place a batch of launches (a logon storm); exactly the decisions of the
        same launches one by one, in order.

        Args:
            users, apps: sequences of names (or int64 index arrays from
                ``user_indices`` / ``app_indices``), equal length.
            locations, endpoints: sequences (None entries allowed) or None.
            external: sequence of bools or None.
            now: one time for all rows, or a non-decreasing sequence.

        Returns:
            :class:`Decisions`. Any invalid row raises and nothing is applied.
        """
        if not (isinstance(now, float) and -_v.MAX_TIME <= now <= _v.MAX_TIME):
            now = self._batch_time(now)
        self._lock_acquire()
        try:
            if now is None:
                now = _v.time("now", self._clock())  # read once, under the lock, whichever path decides
            # user indices or ids, app indices or names, zone and endpoint names or None
            # (lists, tuples or object arrays), bools, one time: the compiled path (None:
            # not that shape, or a value to refuse, which the path below names)
            rows = self._launch_compiled(users, apps, now, locations, endpoints, external)
            if rows is not None:
                return Decisions(rows, self._names)
            out = self._launch_general(users, apps, locations, endpoints, external, now)
        finally:
            self._lock_release()
        return Decisions(out, self._names)

    @staticmethod
    def _batch_time(now):
        """A batch's ``now`` checked: None, one time, or a 1-D array of times."""
        if now is None:
            return None
        if isinstance(now, (list, tuple, np.ndarray)):
            return _v.time_array("now", now)
        return _v.time("now", now)

    def _launch_general(self, users, apps, locations, endpoints, external, now):
        """``launch_many``'s general path: every argument checked, new users and
        endpoints added, then the kernel (lock held, ``now`` checked)."""
        users = _objects_as_list(_v.sequence("users", users))
        apps = _objects_as_list(_v.sequence("apps", apps))
        n = len(users)
        if len(apps) != n:
            raise InvalidArgument("apps", f"length {len(apps)}", f"must have length {n} like users")
        by_index = isinstance(users, np.ndarray) and users.dtype.kind in "iu"
        if not by_index:
            k = _engine.first_not_id(users)
            if k >= 0:
                raise InvalidArgument(f"users[{k}]", _v._short(users[k]), "must be a non-empty string")
        a_idx = self._app_rows(apps, n)
        loc = self._optional_rows("locations", locations, n)
        eps = self._optional_rows("endpoints", endpoints, n)
        ext = _filled(n, 0) if external is None else _v.flag_array("external", external, n)
        if isinstance(now, np.ndarray):
            if now.shape[0] != n:
                raise InvalidArgument("now", f"length {now.shape[0]}", f"must have length {n}")
            nows = now
        else:
            nows = np.empty(n, dtype=np.float64)
            nows.fill(now)
        if n:
            self._time_check(float(nows[0]))
        if not by_index:
            self._maybe_sweep_py()  # before any id is looked up: nothing found below is forgotten
        u_idx = self._user_rows(users, n)
        loc_idx = _filled(n, -1)
        if loc is not None:  # a zone no server uses: -2 (no candidates there)
            _engine.rows_from_names(loc, self._zones, loc_idx, -1, -2)
        ep_idx = _filled(n, -1)
        if eps is not None:
            ep_idx = np.empty(n, dtype=np.int64)
            self._endpoint_rows_into(eps, ep_idx)
        out = np.empty((n, st.N_D), dtype=np.int64)  # the kernel writes every field of every row
        self._prepare_rows(n)
        self._launch_arrays(u_idx, a_idx, loc_idx, ep_idx, ext, nows, out)
        return out

    def _prepare_rows(self, n):
        if self._dirty:
            self._relayout()
        self._reserve(n)

    def _app_rows(self, apps, n) -> np.ndarray:
        if isinstance(apps, np.ndarray) and apps.dtype.kind in "iu":
            idx = _v.index_array("apps", apps, n)
            k = _engine.first_outside(idx, len(self._app_names))
            if k >= 0:
                raise UnknownApp(f"apps[{k}]", int(idx[k]), "no such app")
            return idx
        k = _engine.first_not_id(apps)
        if k >= 0:
            if apps[k] is None:
                raise UnknownApp(f"apps[{k}]", None, "no such app")
            raise InvalidArgument(f"apps[{k}]", _v._short(apps[k]), "must be a non-empty string")
        out = np.empty(n, dtype=np.int64)
        _engine.rows_from_names(apps, self._apps, out, -1, -1)
        k = _engine.first_outside(out, len(self._app_names))  # not an app: -1
        if k >= 0:
            raise UnknownApp(f"apps[{k}]", apps[k], "no such app")
        return out

    def _user_rows(self, users, n) -> np.ndarray:
        """User indices; unknown users are created (not enforced) or -1. Called
        with the lock held, after every other check of the batch."""
        if isinstance(users, np.ndarray) and users.dtype.kind in "iu":
            idx = _v.index_array("users", users, n)
            k = _engine.first_outside(idx, len(self._user_names))
            if k < 0 and self._user_free:
                free = self._user_kind[idx] == USER_FREE
                k = int(np.argmax(free)) if free.any() else -1
            if k >= 0:
                raise InvalidArgument(f"users[{k}]", int(idx[k]), "no such user index")
            return idx
        out = np.empty(n, dtype=np.int64)
        self._user_rows_into(users, out)
        return out

    @staticmethod
    def _optional_rows(field, values, n):
        """Locations or endpoints of a batch: None, or n strs or Nones."""
        if values is None:
            return None
        values = _objects_as_list(_v.sequence(field, values))
        if len(values) != n:
            raise InvalidArgument(field, f"length {len(values)}", f"must have length {n}")
        k = _engine.first_not_id(values, True)
        if k >= 0:
            raise InvalidArgument(f"{field}[{k}]", _v._short(values[k]), "must be a non-empty string or None")
        return values
