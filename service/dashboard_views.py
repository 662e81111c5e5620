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


def _column(rows, name, default):
    """``rows[name]`` as a list, or ``default`` per row when the table has no such field."""
    if name in (rows.dtype.names or ()):
        return rows[name].tolist()
    return [default] * len(rows)


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
            "by_power": dict(Counter(map(str, rows["power"].tolist()))),
            "by_mode": dict(Counter(map(str, rows["mode"].tolist()))),
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
    power = {p: i for i, p in enumerate(POWER_CODES)}
    mode = {m: i for i, m in enumerate(MODE_CODES)}
    images: dict = {}
    image_col = [-1 if i is None else images.setdefault(str(i), len(images)) for i in rows["image"].tolist()]
    flags = []
    for sinbin, slow, last, registered in zip(_column(rows, "sinbinned", False), _column(rows, "slow", False),
                                              _column(rows, "place_last", False), _column(rows, "registered", True)):
        flags.append((FLAG_SINBIN if sinbin else 0) | (FLAG_SLOW if slow else 0)
                     | (FLAG_PLACE_LAST if last else 0) | (0 if registered else FLAG_UNREGISTERED))
    columns = {
        "load_index": rows["load_index"].tolist(),
        "sessions": rows["sessions"].tolist(),
        "max_sessions": rows["max_sessions"].tolist(),
        "pending": rows["pending"].tolist(),
        "power": [power.get(str(p), -1) for p in rows["power"].tolist()],
        "mode": [mode.get(str(m), -1) for m in rows["mode"].tolist()],
        "image": image_col,
        "flags": flags,
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
