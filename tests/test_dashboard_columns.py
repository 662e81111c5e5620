"""The dashboard's fleet columns (``fleet_grid``, ``fleet_summary``), counted with
numpy, against plain row-by-row references."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import usher
from usher.service.dashboard_views import (
    FLAG_PLACE_LAST,
    FLAG_SINBIN,
    FLAG_SLOW,
    FLAG_UNREGISTERED,
    MODE_CODES,
    POWER_CODES,
    fleet_grid,
    fleet_summary,
)


def _fleet(n: int) -> usher.Scheduler:
    s = usher.Scheduler(seed=2)
    s.add_pool("p")
    s.add_pool("q")
    s.add_app("a", ["p", "q"])
    modes, powers = ("drain", "enabled", "maintenance"), ("on", "booting", "off", "on", "shutting_down")
    for k in range(n):
        s.add_server(f"s{k}", f"z{k % 3}", "pq"[k % 2], power=powers[k % 5], mode=modes[k % 3],
                     image=None if k % 4 else f"img{k % 8}")
    for k in range(n):
        s.launch(f"u{k}", "a", now=1.0)
    if n > 4:
        s.set_place_last([1, 4], True, now=2.0)
        s.set_registered(3, False, now=2.0)
    return s


def _grid_reference(rows):
    """``fleet_grid``'s columns row by row."""
    power = {p: i for i, p in enumerate(POWER_CODES)}
    mode = {m: i for i, m in enumerate(MODE_CODES)}
    flags = [(FLAG_SINBIN if r["sinbinned"] else 0) | (FLAG_SLOW if r["slow"] else 0)
             | (FLAG_PLACE_LAST if r["place_last"] else 0) | (0 if r["registered"] else FLAG_UNREGISTERED)
             for r in rows]
    return {"power": [power.get(str(r["power"]), -1) for r in rows],
            "mode": [mode.get(str(r["mode"]), -1) for r in rows], "flags": flags}


@pytest.mark.parametrize("n", [0, 1, 3, 40])
def test_grid_and_summary_are_the_row_by_row_counts(n):
    s = _fleet(n)
    rows = s.servers()
    _, columns = fleet_grid(rows)
    want = _grid_reference(rows)
    for k in ("power", "mode", "flags"):
        assert columns[k] == want[k], k
        assert all(type(v) is int for v in columns[k])
    summary = fleet_summary(s, rows)["servers"]
    for key, field in (("by_power", "power"), ("by_mode", "mode")):
        counted = dict(Counter(map(str, rows[field].tolist())))
        assert summary[key] == counted
        assert list(summary[key]) == list(counted)  # the order they first appear in


def test_grid_reads_enum_members_and_unknown_names():
    rows = _fleet(10).servers()
    other = np.zeros(len(rows), dtype=[("power", "O"), ("mode", "U11"), ("sinbinned", "?"), ("name", "O"),
                                       ("zone", "O"), ("pool", "O"), ("image", "O"), ("load_index", "i8"),
                                       ("sessions", "i8"), ("max_sessions", "i8"), ("pending", "i8")])
    for f in other.dtype.names:
        other[f] = rows[f]
    other["power"] = [usher.Power.ON if p == "on" else p for p in rows["power"].tolist()]
    other["mode"][0] = "unknown"
    _, columns = fleet_grid(other)
    assert columns["power"] == _grid_reference(rows)["power"]
    assert columns["mode"][0] == -1 and columns["mode"][1:] == _grid_reference(rows)["mode"][1:]
    # fields the table lacks: not slow, not place-last, registered
    assert columns["flags"] == [FLAG_SINBIN if r["sinbinned"] else 0 for r in rows]
