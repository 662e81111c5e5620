"""``usher simulate``: a hospital group's day, with numbers and pictures.

Runs the embedded scenario (docs/SCENARIOS.md) or one overridden by a TOML
file through :func:`usher.sim.day.simulate_day`, prints a KPI table, and
optionally writes the KPIs, the time series and a picture (``--out``), the day
as a replay trace (``--export-trace``), policies side by side (``--compare``),
or a sweep over seeds and policies run in parallel processes (``--sweep``).
"""

from __future__ import annotations

import json
import os
import sys

import click

from usher.sim.scenario import POLICIES, Scenario, ScenarioError
from usher.sim.sweep import sweep

__all__ = ["simulate_command", "parse_seeds"]


class ScenarioFailure(click.ClickException):
    """A scenario that cannot be run: one line on stderr, exit status 2."""

    exit_code = 2


def _console():
    """stdout's rich Console: the terminal's width, or unlimited when piped (a table
    is never cut at 80 columns in a file)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=1_000)


def parse_seeds(text: str) -> list[int]:
    """``"1-8"``, ``"1,3,5"`` or ``"1-4,9"`` as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise click.BadParameter(f"{part!r}: seeds are N, N-M or lists of those") from None
    if not seeds:
        raise click.BadParameter("no seed given")
    return seeds


def _policies(text: str) -> list[str]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    for p in out:
        if p not in POLICIES:
            raise click.BadParameter(f"{p!r}: policies are {', '.join(POLICIES)}")
    if not out:
        raise click.BadParameter("no policy given")
    return out


class _Bar:
    """A rich progress bar on stderr (or nothing)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                               TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False

    def day(self, label: str):
        """A callback for simulate_day's ``progress``."""
        if self._p is None:
            return None
        task = self._p.add_task(label, total=1.0, info="00:00")

        def cb(done, total):
            self._p.update(task, completed=done / total, info=f"{int(done) // 3600:02d}:{int(done) % 3600 // 60:02d}")

        return cb

    def counter(self, label: str, total: int):
        if self._p is None:
            return None
        task = self._p.add_task(label, total=total, info=f"0/{total}")
        state = {"n": 0}

        def cb():
            state["n"] += 1
            self._p.update(task, advance=1, info=f"{state['n']}/{total}")

        return cb


@click.command("simulate")
@click.option("--policy", type=click.Choice(POLICIES), default=None,
              help="Load balancing of every pool (default: the scenario's, horizontal).")
@click.option("--seed", type=int, default=None, help="Seed of the day (default: the scenario's, 1).")
@click.option("--scenario", "scenario_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file overriding knobs of the embedded day (docs/SCENARIOS.md).")
@click.option("--faults/--no-faults", default=None,
              help="Switch the scenario's faults on (server crashes, a zone dark for an hour).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write kpis.json, timeseries.csv, zones.csv and report.png here.")
@click.option("--compare", default=None, metavar="P1,P2",
              help="Run these policies on the same seeded day and print them side by side.")
@click.option("--export-trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Write the day as a replay trace (JSON Lines, gzip when the name ends in .gz); "
                   "`usher replay` gives the same decisions.")
@click.option("--trace-telemetry", type=click.Choice(["rules", "all"]), default="rules", show_default=True,
              help="Telemetry in the trace: only servers whose load rules read it, or all.")
@click.option("--sweep", "do_sweep", is_flag=True, help="Run every seed x policy in parallel processes.")
@click.option("--seeds", default="1-8", show_default=True, help="Seeds of the sweep: 1-8, 1,3,5 ...")
@click.option("--policies", default=",".join(POLICIES), show_default=True, help="Policies of the sweep.")
@click.option("--jobs", type=int, default=None, help="Processes of the sweep (default: all cores).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the KPIs as JSON instead of a table.")
def simulate_command(policy, seed, scenario_path, faults, out_dir, compare, trace_path, trace_telemetry,
                     do_sweep, seeds, policies, jobs, progress, as_json):
    """Simulate a hospital group's day on the placement engine and report KPIs."""
    console = _console()
    try:
        sc = Scenario.from_toml(scenario_path) if scenario_path else Scenario()
        changes = {}
        if policy is not None:
            changes["policy"] = policy
        if seed is not None:
            changes["seed"] = seed
        sc = sc.with_changes(day=changes) if changes else sc
        if faults is not None:
            sc = sc.with_changes(faults={"enabled": faults})
    except ScenarioError as exc:
        raise ScenarioFailure(str(exc)) from None
    if progress is None:
        progress = sys.stderr.isatty()
    if do_sweep and (compare or trace_path):
        raise click.UsageError("--sweep does not go with --compare or --export-trace")
    if compare and trace_path:
        raise click.UsageError("--export-trace writes one day: leave out --compare")

    if do_sweep:
        _run_sweep(console, sc, parse_seeds(seeds), _policies(policies), jobs, progress, out_dir, as_json)
        return
    if compare:
        _run_compare(console, sc, _policies(compare), progress, out_dir, as_json)
        return

    from usher.sim.day import simulate_day
    from usher.sim.report import kpi_table, write_outputs
    from usher.sim.trace import TraceWriter

    writer = TraceWriter(trace_path, telemetry=trace_telemetry) if trace_path else None
    with _Bar(progress) as bar:
        result = simulate_day(sc, trace=writer, progress=bar.day(f"{sc.name} ({sc.day.policy}, seed {sc.day.seed})"))
    if writer is not None:
        writer.close()
    paths = write_outputs(result, out_dir) if out_dir else []
    k = result.kpis
    if as_json:
        click.echo(json.dumps(k, indent=1))
    else:
        console.print(kpi_table(k))
        console.print(f"simulated {sc.day.hours:g} h in {k['run.wall_seconds']:.2f} s "
                      f"(fleet built in {k['run.build_seconds']:.2f} s, day loop {k['run.loop_seconds']:.2f} s, "
                      f"engine {k['engine.seconds']:.2f} s for {k['engine.ops']:,} operations)")
        if writer is not None:
            console.print(f"trace: {trace_path} ({writer.lines:,} lines)")
        for p in paths:
            console.print(f"wrote {p}")


def _run_compare(console, sc, policies, progress, out_dir, as_json):
    from usher.sim.day import simulate_day
    from usher.sim.report import compare_table, plot_compare, write_outputs

    results = {}
    with _Bar(progress) as bar:
        for p in policies:
            day = sc.with_changes(day={"policy": p})
            r = simulate_day(day, progress=bar.day(f"{p} (seed {day.day.seed})"))
            results[p] = r
            if out_dir:
                write_outputs(r, os.path.join(out_dir, p))
    kp = {p: r.kpis for p, r in results.items()}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "compare.json"), "w") as fh:
            json.dump(kp, fh, indent=1)
            fh.write("\n")
        plot_compare(results, os.path.join(out_dir, "compare.png"))
    if as_json:
        click.echo(json.dumps(kp, indent=1))
        return
    console.print(compare_table(kp, title=f"{sc.name}, seed {sc.day.seed}: policies side by side"
                                + (", faults on" if sc.faults.enabled else "")))
    console.print("wall time: " + ", ".join(f"{p} {k['run.wall_seconds']:.2f} s" for p, k in kp.items()))
    if out_dir:
        console.print(f"wrote {out_dir}/compare.json, {out_dir}/compare.png and one folder per policy")


def _run_sweep(console, sc, seeds, policies, jobs, progress, out_dir, as_json):
    from rich.table import Table

    n = len(seeds) * len(policies)
    with _Bar(progress) as bar:
        rows, elapsed, workers = sweep(sc, seeds, policies, jobs, progress=bar.counter("days", n))
    serial = sum(k["run.process_seconds"] for k in rows)
    speedup = serial / elapsed if elapsed > 0 else float("nan")
    if out_dir:
        import csv

        os.makedirs(out_dir, exist_ok=True)
        keys = list(rows[0].keys())
        with open(os.path.join(out_dir, "sweep.csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow(r)
    if as_json:
        click.echo(json.dumps({"days": rows, "elapsed_seconds": elapsed, "workers": workers,
                               "speedup": speedup}, indent=1))
        return
    cols = [("peak", "sessions.peak"), ("rejected", "launches.rejected"), ("denied", "logons.denied"),
            ("lost", "sessions.lost"), ("logons/srv", "servers.pending_max"),
            ("kWh", "power.energy_kwh"), ("s", "run.process_seconds")]
    table = Table(title=f"Sweep: {len(seeds)} seeds x {len(policies)} policies ({sc.name}"
                  + (", faults on" if sc.faults.enabled else "") + ")")
    table.add_column("seed", justify="right")
    table.add_column("policy")
    for label, _ in cols:
        table.add_column(label, justify="right")
    for r in rows:
        table.add_row(str(r["scenario.seed"]), r["scenario.policy"], *[_num(r[key]) for _, key in cols])
    for p in policies:
        sel = [r for r in rows if r["scenario.policy"] == p]
        table.add_row("mean", p, *[_num(sum(r[key] for r in sel) / len(sel)) for _, key in cols],
                      style="bold")
    console.print(table)
    console.print(f"{n} days in {elapsed:.2f} s on {workers} processes; one process would take "
                  f"{serial:.2f} s: speed-up {speedup:.2f}x")
    if out_dir:
        console.print(f"wrote {os.path.join(out_dir, 'sweep.csv')}")


def _num(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"
