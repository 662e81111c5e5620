"""A morning logon storm on the built-in default fleet (``usher storm``).

The fleet is a small version of the hospital group (3 datacenter zones, one
patient-record pool, one imaging pool on servers tagged ``imaging``, one pool
open to external access); the storm is ``users`` users logging on within
``minutes`` minutes, placed through ``Scheduler.launch_many`` in batches of 500,
each placed logon completing 30 s after its launch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import usher

__all__ = ["default_fleet", "run_storm", "StormResult"]

ZONES = ("DC-North", "DC-Central", "DC-South")


def default_fleet(servers: int = 1400, seed: int = 7, licences: int = 24_000) -> usher.Scheduler:
    """The built-in fleet: ``servers`` hosts over 3 zones and 3 pools (a tenth imaging,
    a twentieth remote, every 25th records server a larger host)."""
    s = usher.Scheduler(seed=seed, licences=licences)
    s.add_pool("records", zone_preference=("user_home", "user_location"), logon_tolerance=2)
    s.add_pool("imaging", zone_preference=("user_home",), load_rules=("sessions", "cpu"))
    s.add_pool("remote", external_access=True, zone_preference=("user_location",))
    s.add_app("patient-record", ["records", "remote"])
    s.add_app("pacs-viewer", ["imaging"], tag_restriction="imaging")
    n_imaging = servers // 10
    n_remote = servers // 20
    for i in range(servers):
        zone = ZONES[i % 3]
        if i < n_imaging:
            s.add_server(f"img-{i:04d}", zone, "imaging", tags=("imaging",), max_sessions=15)
        elif i < n_imaging + n_remote:
            s.add_server(f"ext-{i:04d}", zone, "remote", max_sessions=20)
        else:
            big = i % 25 == 0
            s.add_server(f"rec-{i:04d}", zone, "records", max_sessions=30 if big else 20,
                         weight=150 if big else 100)
    return s


@dataclass
class StormResult:
    """A storm: ``counts`` (decisions by outcome/reason label), the engine after
    it, the engine's seconds and the wall seconds of the storm."""

    users: int
    minutes: float
    servers: int
    counts: dict
    scheduler: usher.Scheduler
    engine_seconds: float
    wall_seconds: float


def run_storm(users: int = 17_000, minutes: float = 60.0, servers: int = 1400, seed: int = 7,
              batch: int = 500) -> StormResult:
    """Place the storm: arrival times uniform over ``minutes``, 8 % imaging users,
    5 % of the others external, a third of logons from another zone than home."""
    s = default_fleet(servers, seed)
    rng = np.random.default_rng(seed)
    zones = s.zone_names
    t = np.sort(rng.uniform(0.0, minutes * 60.0, users))
    imaging = rng.random(users) < 0.08
    external = (~imaging) & (rng.random(users) < 0.05)
    user_ids = [f"user{k:05d}" for k in range(users)]
    for k, u in enumerate(user_ids):
        s.add_user(u, home_zone=zones[k % len(zones)])
    apps = np.where(imaging, "pacs-viewer", "patient-record").tolist()
    locations = [zones[(k + int(rng.integers(0, 3) == 0)) % len(zones)] for k in range(users)]

    started = time.perf_counter()
    engine_s = 0.0
    completes: list[tuple[float, int]] = []  # (time, session)
    counts: dict[str, int] = {}
    for lo in range(0, users, batch):
        hi = min(users, lo + batch)
        # logons that finished before this batch starts
        due = [c for c in completes if c[0] <= t[lo]]
        completes = [c for c in completes if c[0] > t[lo]]
        t0 = time.perf_counter()
        for when, sid in due:
            s.logon_complete(sid, now=max(when, s.now or when))
        b = s.launch_many(user_ids[lo:hi], apps[lo:hi], locations=locations[lo:hi],
                          external=external[lo:hi], now=t[lo:hi])
        engine_s += time.perf_counter() - t0
        for key, v in b.counts().items():
            counts[key] = counts.get(key, 0) + v
        for when, o, sid in zip(t[lo:hi], b.outcome, b.session):
            if o == usher.Outcome.PLACED:
                completes.append((when + 30.0, int(sid)))
    wall = time.perf_counter() - started
    return StormResult(users, minutes, servers, counts, s, engine_s, wall)
