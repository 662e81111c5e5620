"""``usher storm``: a morning logon storm on the built-in default fleet.

The fleet is a small version of the hospital group (3 datacenter zones, one
patient-record pool, one imaging pool on servers tagged ``imaging``, one pool
open to external access); the storm is ``--users`` users logging on within
``--minutes`` minutes, each placed through ``Scheduler.launch_many`` and
completing its logon 30 s later. The summary shows decisions by outcome and
reason, the busiest servers and how long the engine took.
"""

from __future__ import annotations

import time

import click
import numpy as np

import usher


def default_fleet(servers: int = 1400, seed: int = 7, licences: int = 24_000) -> usher.Scheduler:
    """The built-in fleet: ``servers`` hosts over 3 zones and 3 pools."""
    s = usher.Scheduler(seed=seed, licences=licences)
    s.add_pool("records", zone_preference=("user_home", "user_location"), logon_tolerance=2)
    s.add_pool("imaging", zone_preference=("user_home",), load_rules=("sessions", "cpu"))
    s.add_pool("remote", external_access=True, zone_preference=("user_location",))
    s.add_app("patient-record", ["records", "remote"])
    s.add_app("pacs-viewer", ["imaging"], tag_restriction="imaging")
    zones = ("DC-North", "DC-Central", "DC-South")
    n_imaging = servers // 10
    n_remote = servers // 20
    for i in range(servers):
        zone = zones[i % 3]
        if i < n_imaging:
            s.add_server(f"img-{i:04d}", zone, "imaging", tags=("imaging",), max_sessions=15)
        elif i < n_imaging + n_remote:
            s.add_server(f"ext-{i:04d}", zone, "remote", max_sessions=20)
        else:
            big = i % 25 == 0
            s.add_server(f"rec-{i:04d}", zone, "records", max_sessions=30 if big else 20,
                         weight=150 if big else 100)
    return s


@click.command("storm")
@click.option("--users", default=17_000, show_default=True, help="Users logging on.")
@click.option("--minutes", default=60.0, show_default=True, help="Length of the storm.")
@click.option("--servers", default=1400, show_default=True, help="Servers in the built-in fleet.")
@click.option("--seed", default=7, show_default=True, help="Seed of the fleet and the arrivals.")
def storm_command(users: int, minutes: float, servers: int, seed: int):
    """Place a morning logon storm on the built-in fleet and print a summary."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
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
    batch = 500
    completes = []  # (time, session)
    decisions = []
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
        decisions.append(b)
        for when, o, sid in zip(t[lo:hi], b.outcome, b.session):
            if o == usher.Outcome.PLACED:
                completes.append((when + 30.0, int(sid)))
    wall = time.perf_counter() - started

    counts: dict[str, int] = {}
    for b in decisions:
        for k, v in b.counts().items():
            counts[k] = counts.get(k, 0) + v
    table = Table(title=f"Logon storm: {users:,} users in {minutes:g} min on {servers:,} servers")
    table.add_column("decision")
    table.add_column("count", justify="right")
    for k in sorted(counts):
        table.add_row(k, f"{counts[k]:,}")
    console.print(table)
    rows = s.servers()
    on = rows[rows["power"] == "on"]
    console.print(
        f"sessions: {s.live_sessions:,}   licences in use: {s.licences_in_use:,}/{s.licence_cap:,}   "
        f"max sessions on a server: {on['sessions'].max()}   max load index: {on['load_index'].max()}"
    )
    per_pool = {p: on[on["pool"] == p] for p in s.pool_names}
    for p, r in per_pool.items():
        console.print(f"  pool {p}: {len(r)} servers, mean sessions {r['sessions'].mean():.1f}, "
                      f"max {r['sessions'].max()}, mean load index {r['load_index'].mean():.0f}")
    console.print(f"engine time: {engine_s * 1e3:.1f} ms ({engine_s / users * 1e6:.2f} µs per launch); "
                  f"wall time {wall:.2f} s")
