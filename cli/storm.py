"""``usher storm``: a morning logon storm on the built-in default fleet.

The fleet and the storm are :mod:`usher.sim.storm`; this module prints. The
fleet is a small version of the hospital group (3 datacenter zones, one
patient-record pool, one imaging pool on servers tagged ``imaging``, one pool
open to external access); the storm is ``--users`` users logging on within
``--minutes`` minutes, each placed through ``Scheduler.launch_many`` and
completing its logon 30 s later. The summary shows decisions by outcome and
reason, the busiest servers and how long the engine took.
"""

from __future__ import annotations

import click

from usher.sim.storm import run_storm

__all__ = ["storm_command"]


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
    r = run_storm(users, minutes, servers, seed)
    s, counts, engine_s, wall = r.scheduler, r.counts, r.engine_seconds, r.wall_seconds
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
