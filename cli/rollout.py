"""``usher rollout plan``: the waves an image rollout would run on a fleet.

The fleet is read as ``usher replay`` reads it (``Scheduler.from_files``: pools,
apps and settings in TOML, servers in CSV or Parquet), less its ``[[user]]`` tables:
a plan needs the servers and their pools, and a hospital's fleet file is mostly
users (42,000 in the embedded fleet's: parsing and adding them is most of the time
a full read takes). Should the file without them not read (a header-like line
inside a multi-line value), the whole file is read as it is. The planner is
:class:`usher.planner.rollout.Rollout`, dry-run on the fleet as it is in the files
(its sessions, if any, as demand). Printed: the canary, the off servers that take
the image at their next boot (``staged``), then each wave with its servers per pool
and zone; ``--json`` prints the same as one JSON document.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter

import click
import numpy as np

from usher.planner.power import FleetView

__all__ = ["rollout_command"]

_POWER = {"off": 0, "booting": 1, "on": 2, "shutting_down": 3}
_MODE = {"enabled": 0, "drain": 1, "maintenance": 2}


def _window(text: str) -> tuple[float, float]:
    """'22:00-06:00' -> (start, deadline) in seconds; a window that crosses
    midnight ends the next day."""
    try:
        a, b = text.split("-")
        start, end = (int(x.split(":")[0]) * 3600 + int(x.split(":")[1]) * 60 for x in (a, b))
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: expected HH:MM-HH:MM", param_hint="--window") from None
    return float(start), float(end if end > start else end + 86_400)


def fleet_view(s) -> FleetView:
    """A planner's view of a scheduler's servers (every present one, by position)."""
    rows = s.servers()
    zones, pools = sorted(set(rows["zone"])), list(s.pool_names)
    n = len(rows)
    return FleetView(
        0.0, np.array([_POWER[p] for p in rows["power"]]), np.array([_MODE[m] for m in rows["mode"]]),
        rows["sessions"].astype(np.int64), rows["pending"].astype(np.int64), rows["load_index"].astype(np.int64),
        rows["max_sessions"].astype(np.int64), np.array([zones.index(z) for z in rows["zone"]]),
        np.array([pools.index(p) for p in rows["pool"]]), np.zeros(n, bool), np.ones(n, bool), zones, pools,
        registered=rows["registered"].astype(bool), image=list(rows["image"]))


_HEADER = re.compile(r"^\s*\[\[?\s*[A-Za-z0-9_.\"' -]+\s*\]\]?\s*(#.*)?$")
_USER = re.compile(r"^\s*\[\[\s*user\s*\]\]\s*(#.*)?$")


def without_users(text: str) -> str:
    """The TOML text less its ``[[user]]`` tables (each from its header up to the next
    table header)."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if _HEADER.match(line):
            skipping = bool(_USER.match(line))
        if not skipping:
            out.append(line)
    return "".join(out)


def load_servers(fleet_path, servers_path):
    """A scheduler with the fleet's settings, pools, apps and servers, without its
    users (:func:`without_users`); the whole file when that does not read."""
    import usher

    with open(fleet_path, "rb") as fh:
        raw = fh.read()
    try:
        lean = without_users(raw.decode("utf-8"))
    except UnicodeDecodeError:
        lean = None
    if lean is not None and len(lean) < len(raw):
        fd, tmp = tempfile.mkstemp(suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(lean)
            return usher.Scheduler.from_files(tmp, servers_path)
        except usher.UsherError:
            pass  # read the whole file: its own error, at its own line
        finally:
            os.unlink(tmp)
    return usher.Scheduler.from_files(fleet_path, servers_path)


@click.group("rollout")
def rollout_command():
    """Plan an image rollout (see docs/ROLLOUT.md)."""


@rollout_command.command("plan")
@click.option("--fleet", "fleet_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Pools, apps and settings (TOML).")
@click.option("--servers", "servers_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Servers (CSV or Parquet).")
@click.option("--image", required=True, help="The new image.")
@click.option("--window", default="22:00-06:00", show_default=True, help="Maintenance window HH:MM-HH:MM.")
@click.option("--max-unavailable", default=None, type=click.IntRange(1),
              help="Servers of one pool in one zone out at once (wins over --max-unavailable-pct).")
@click.option("--max-unavailable-pct", default=50.0, show_default=True, type=click.FloatRange(0, 100, min_open=True),
              help="Else this share (%) of each pool in each zone.")
@click.option("--canary", default=2, show_default=True, type=click.IntRange(0), help="Canary servers.")
@click.option("--buffer", "buffer_pct", default=10.0, show_default=True, help="Free seats kept over demand, %.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plan_command(fleet_path, servers_path, image, window, max_unavailable, max_unavailable_pct, canary, buffer_pct,
                 as_json):
    """Print the waves a rollout of IMAGE would run on the fleet."""
    from usher.planner.rollout import Rollout, RolloutSettings

    t0 = time.perf_counter()
    s = load_servers(fleet_path, servers_path)
    start, deadline = _window(window)
    view = fleet_view(s)
    settings = RolloutSettings(image, start=start, deadline=deadline, max_unavailable=max_unavailable,
                               max_unavailable_pct=max_unavailable_pct, canary=canary, buffer_pct=buffer_pct)
    waves = Rollout(settings).waves(view)
    names = s.servers()["name"]
    groups = [f"{view.pool_names[p]}/{view.zone_names[z]}" for p, z in zip(view.pool, view.zone)]
    seconds = time.perf_counter() - t0
    doc = {"image": image, "window": window, "servers": len(names), "plan_seconds": round(seconds, 3),
           "waves": [dict(w, servers=[names[i] for i in w["servers"]],
                          groups=dict(Counter(groups[i] for i in w["servers"]))) for w in waves]}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"rollout of {image} on {len(names):,} servers, window {window}: {len(waves)} steps "
               f"(planned in {seconds:.2f} s)")
    for w in doc["waves"]:
        spread = ", ".join(f"{g} {c}" for g, c in sorted(w["groups"].items()))
        click.echo(f"  {w['wave']:>3} {w['kind']:<8} {len(w['servers']):>5} servers  {spread}")
