"""What the dashboard shows, read from a scheduler: pure functions, no HTTP.

- :func:`fleet_summary`: the numbers of ``GET /v1/summary`` (sessions, licences,
  servers by power, mode and image, per pool and zone) from one ``servers()`` table,
  plus the pending logons in all;
- :func:`fleet_grid`: the servers as columns for the grid (names, zones and pools
  apart, as the *layout*, since they change only when servers come and go);
- :func:`rollout_progress`: servers on the image most recently set, of the pools
  where an image was set;
- :func:`decision_record`: a launch decision as the dashboard keeps it.

A server view's ``slow`` field (a server whose logons have become slow) is read
with ``.get``-like care: a scheduler without it shows every server as not slow.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from msgspec import UNSET

__all__ = ["fleet_summary", "fleet_grid", "rollout_progress", "decision_record", "jsonable",
           "POWER_CODES", "MODE_CODES"]

#: power states and modes as the grid's small integers (index in the tuple)
POWER_CODES = ("off", "booting", "on", "shutting_down")
MODE_CODES = ("enabled", "drain", "maintenance")

#: bits of the grid's ``flags`` column
FLAG_SINBIN, FLAG_SLOW, FLAG_PLACE_LAST, FLAG_UNREGISTERED = 1, 2, 4, 8


def _strings(values: np.ndarray) -> np.ndarray:
    """A column as an array of ``str`` (a column of enum members as their names)."""
    return values if values.dtype.kind == "U" else np.array([str(v) for v in values.tolist()], dtype=str)


def _flag(rows, name, default) -> np.ndarray:
    """``rows[name]`` as a bool array, or ``default`` per row when the table has no
    such field."""
    if name in (rows.dtype.names or ()):
        return rows[name].astype(bool)
    return np.full(len(rows), default, dtype=bool)


def _codes(values: np.ndarray, names: tuple) -> list:
    """For each of ``values`` (a column of strings), its index in ``names``, or -1."""
    codes = np.full(len(values), -1, dtype=np.int64)
    values = _strings(values)
    for k, name in enumerate(names):
        codes[values == name] = k
    return codes.tolist()


def _counts(values: np.ndarray) -> dict:
    """``dict(Counter(map(str, values.tolist())))`` of a column of strings (the
    values in the order they first appear), counted with numpy."""
    if not len(values):
        return {}
    distinct, first, counts = np.unique(_strings(values), return_index=True, return_counts=True)
    return {str(distinct[k]): int(counts[k]) for k in np.argsort(first).tolist()}


def fleet_summary(scheduler, rows) -> dict:
    """The numbers of ``GET /v1/summary`` (without ``journal``) from ``rows``
    (``scheduler.servers()``), and ``pending``: pending logons in all. Pools and
    zones come in the order of their first server; counted with numpy, not row by row
    (the dashboard reads this every second on the event loop)."""
    sessions, pending = rows["sessions"], rows["pending"]
    images = Counter(rows["image"].tolist())
    if None in images:
        images[""] = images.get("", 0) + images.pop(None)
    return {
        "sessions": scheduler.live_sessions,
        "licences": {"in_use": scheduler.licences_in_use, "cap": scheduler.licence_cap},
        "pending": int(pending.sum()) if len(rows) else 0,
        "servers": {
            "total": len(rows),
            "by_power": _counts(rows["power"]),
            "by_mode": _counts(rows["mode"]),
            "by_image": {str(k): n for k, n in images.items()},
        },
        "pools": _per_group(rows["pool"].tolist(), sessions, pending),
        "zones": _per_group(rows["zone"].tolist(), sessions, pending),
        "now": scheduler.now,
    }


def _per_group(keys: list, sessions, pending) -> dict:
    """``{str(key): {"servers", "sessions", "pending_logons"}}`` over the servers of
    each key (``keys[k]`` the key of server ``k``), in the order keys first appear."""
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    group = np.fromiter(map(index.__getitem__, keys), np.intp, len(keys))
    n = len(index)
    servers = np.bincount(group, minlength=n).tolist()
    live = np.bincount(group, weights=sessions, minlength=n).tolist()
    waiting = np.bincount(group, weights=pending, minlength=n).tolist()
    return {str(k): {"servers": servers[i], "sessions": int(live[i]), "pending_logons": int(waiting[i])}
            for k, i in index.items()}


def fleet_grid(rows) -> tuple[dict, dict]:
    """``(layout, columns)`` of the servers in ``rows`` (``scheduler.servers()``).

    ``layout``: ``name``, ``zone``, ``pool`` (lists, one item per server).
    ``columns``: ``load_index``, ``sessions``, ``max_sessions``, ``pending`` (ints),
    ``power`` (index in :data:`POWER_CODES`, -1 if unknown), ``mode`` (index in
    :data:`MODE_CODES`), ``image`` (index in ``images``, -1: none), ``flags``
    (bits: 1 sin-binned, 2 slow, 4 place last, 8 not registered), and ``images``.
    """
    layout = {"name": [str(n) for n in rows["name"].tolist()], "zone": [str(z) for z in rows["zone"].tolist()],
              "pool": [str(p) for p in rows["pool"].tolist()]}
    images: dict = {}
    image_col = [-1 if i is None else images.setdefault(str(i), len(images)) for i in rows["image"].tolist()]
    flags = ((_flag(rows, "sinbinned", False) * FLAG_SINBIN) | (_flag(rows, "slow", False) * FLAG_SLOW)
             | (_flag(rows, "place_last", False) * FLAG_PLACE_LAST)
             | (~_flag(rows, "registered", True) * FLAG_UNREGISTERED))
    columns = {
        "load_index": rows["load_index"].tolist(),
        "sessions": rows["sessions"].tolist(),
        "max_sessions": rows["max_sessions"].tolist(),
        "pending": rows["pending"].tolist(),
        "power": _codes(rows["power"], POWER_CODES),
        "mode": _codes(rows["mode"], MODE_CODES),
        "image": image_col,
        "flags": flags.astype(np.int64).tolist(),
        "images": list(images),
    }
    return layout, columns


def rollout_progress(rows, target: str | None, pools: set) -> dict | None:
    """Servers of ``pools`` on image ``target`` (the image most recently set), how
    many there are in all, and how many of the others are draining; None without a
    target."""
    if target is None:
        return None
    total = on_target = draining = 0
    for pool, image, mode in zip(rows["pool"].tolist(), rows["image"].tolist(), rows["mode"].tolist()):
        if str(pool) not in pools:
            continue
        total += 1
        if image == target:
            on_target += 1
        elif str(mode) == "drain":
            draining += 1
    return {"image": target, "on_image": on_target, "servers": total, "draining": draining}


def decision_record(op, out) -> dict:
    """A launch decision (``LaunchDecision`` ``out`` of the launch ``op``) as the
    dashboard keeps it, with its explanation when the request asked for one."""
    record = {"t": out.t, "id": out.id, "user": op.user, "app": op.app, "location": op.location,
              "outcome": out.outcome, "reason": out.reason, "server": out.server, "zone": out.zone,
              "load_index": out.load_index}
    if out.explanation is not UNSET:
        record["explanation"] = out.explanation
    return record


def jsonable(view: dict) -> dict:
    """A scheduler view with JSON values only (sets as sorted lists, tuples as
    lists, NaN as None)."""
    out = {}
    for k, v in view.items():
        if isinstance(v, (frozenset, set)):
            v = sorted(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out
