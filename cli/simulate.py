"""``usher simulate``: a hospital group's day, with numbers and pictures.

Runs the embedded scenario (docs/SCENARIOS.md) or one overridden by a TOML
file through :func:`usher.sim.day.simulate_day`, prints a KPI table, and
optionally writes the KPIs, the time series and a picture (``--out``), the day
as a replay trace (``--export-trace``), policies side by side (``--compare``),
or a sweep over seeds and policies run in parallel processes (``--sweep``), on this
machine or on a Dask cluster (``--cluster``).
"""

from __future__ import annotations

import json
import os
import sys

import click

from usher.planner import POWER_POLICIES, power_policy
from usher.planner.settings import PlannerSettings, SettingsError
from usher.sim.scenario import POLICIES, Scenario, ScenarioError
from usher.sim.sweep import ClusterError, sweep

__all__ = ["simulate_command", "parse_seeds", "parse_rollout"]


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


def parse_rollout(text: str) -> dict:
    """``"w2022-2507@00:00-06:00"`` as changes of the [rollout] table."""
    image, sep, window = text.partition("@")
    start, dash, end = window.partition("-")
    if not (image and sep and dash and start and end):
        raise click.BadParameter(f"{text!r}: --rollout is IMAGE@HH:MM-HH:MM", param_hint="--rollout")
    return {"enabled": True, "image": image, "start": start.strip(), "deadline": end.strip()}


def _names(text: str, allowed, kind: str, kinds: str) -> list[str]:
    """The comma-separated names of ``text``, each one of ``allowed`` (BadParameter otherwise)."""
    out = [p.strip() for p in text.split(",") if p.strip()]
    for p in out:
        if p not in allowed:
            raise click.BadParameter(f"{p!r}: {kinds} are {', '.join(allowed)}")
    if not out:
        raise click.BadParameter(f"no {kind} given")
    return out


def _policies(text: str) -> list[str]:
    return _names(text, POLICIES, "policy", "policies")


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


def planner_settings(power: str, path) -> PlannerSettings:
    """The settings of ``--power-settings FILE``: the file's keys over the chosen planner's
    own defaults (citrix's for ``citrix``, autoscale's otherwise), so a file that sets one
    key changes that key only."""
    from usher.planner.autoscale import autoscale_settings, citrix_settings

    base = (citrix_settings() if power == "citrix" else autoscale_settings()).default
    return PlannerSettings.from_toml(path, base=base)


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
@click.option("--picture/--no-picture", default=True, show_default=True,
              help="With --out: draw report.png (one a day, compare.png for the comparisons).")
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
@click.option("--cluster", default=None, metavar="tcp://HOST:PORT|local",
              help="Run the sweep's days on this Dask scheduler's workers, or on a LocalCluster of --jobs "
                   "processes (pip install \".[cluster]\"; docs/SCENARIOS.md).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the KPIs as JSON instead of a table.")
@click.option("--power", type=click.Choice(POWER_POLICIES), default="autoscale", show_default=True,
              help="Power policy: the scenario's fixed schedule, a reactive Citrix-like baseline, or autoscale "
                   "(docs/AUTOSCALE.md).")
@click.option("--power-settings", "power_settings", type=click.Path(dir_okay=False), default=None,
              help="TOML file of citrix / autoscale settings per pool and zone (docs/AUTOSCALE.md).")
@click.option("--days", type=click.IntRange(1, 366), default=None,
              help="Days run one after the other (default: the scenario's day.days, 1).")
@click.option("--rollout", "rollout", default=None, metavar="IMAGE@HH:MM-HH:MM",
              help="Roll IMAGE out in that window of the day, with the power policy (docs/ROLLOUT.md); "
                   "the other settings from the scenario's [rollout] table.")
@click.option("--compare-power", default=None, metavar="P1,P2",
              help="Run these power policies on the same seeded day(s): a table and compare.png in --out.")
def simulate_command(policy, seed, scenario_path, faults, out_dir, picture, compare, trace_path, trace_telemetry,
                     do_sweep, seeds, policies, jobs, cluster, progress, as_json, power, power_settings, days, compare_power,
                     rollout):
    """Simulate a hospital group's day on the placement engine and report KPIs."""
    console = _console()
    try:
        sc = Scenario.from_toml(scenario_path) if scenario_path else Scenario()
        changes = {}
        if policy is not None:
            changes["policy"] = policy
        if seed is not None:
            changes["seed"] = seed
        if days is not None:
            changes["days"] = days
        sc = sc.with_changes(day=changes) if changes else sc
        if faults is not None:
            sc = sc.with_changes(faults={"enabled": faults})
        if rollout is not None:
            sc = sc.with_changes(rollout=parse_rollout(rollout))
        settings = planner_settings(power, power_settings) if power_settings else None
    except (ScenarioError, SettingsError) as exc:
        raise ScenarioFailure(str(exc)) from None
    if progress is None:
        progress = sys.stderr.isatty()
    if do_sweep and (compare or trace_path):
        raise click.UsageError("--sweep does not go with --compare or --export-trace")
    if compare and trace_path:
        raise click.UsageError("--export-trace writes one day: leave out --compare")
    if cluster is not None and not do_sweep:
        raise click.UsageError("--cluster runs a sweep's days: add --sweep")

    if compare_power:
        if do_sweep or compare or trace_path:
            raise click.UsageError("--compare-power does not go with --sweep, --compare or --export-trace")
        _run_compare_power(console, sc, _power_list(compare_power), settings, progress, out_dir, as_json, picture)
        return
    if (power != "fixed" or sc.day.days > 1) and not (do_sweep or compare):
        if trace_path and sc.day.days > 1:
            raise click.UsageError("--export-trace writes one day: leave out --days")
        _run_days(console, sc, power, settings, progress, out_dir, as_json, trace_path, trace_telemetry, picture)
        return
    if do_sweep:
        _run_sweep(console, sc, parse_seeds(seeds), _policies(policies), jobs, cluster, progress, out_dir, as_json)
        return
    if compare:
        _run_compare(console, sc, _policies(compare), progress, out_dir, as_json, picture)
        return

    from usher.sim.day import simulate_day
    from usher.sim.report import kpi_table, write_outputs
    from usher.sim.trace import TraceWriter

    writer = TraceWriter(trace_path, telemetry=trace_telemetry) if trace_path else None
    with _Bar(progress) as bar:
        result = simulate_day(sc, trace=writer, progress=bar.day(f"{sc.name} ({sc.day.policy}, seed {sc.day.seed})"))
    if writer is not None:
        writer.close()
    paths = write_outputs(result, out_dir, picture) if out_dir else []
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


def _power_list(text: str) -> list[str]:
    return _names(text, POWER_POLICIES, "power policy", "power policies")


def _days(sc, power, settings, bar, trace=None):
    """Run the scenario's days under power policy ``power``; a RunResult."""
    from usher.sim.days import simulate_days

    pol = power_policy(power, settings, sc.power.policy_interval_seconds)
    n = sc.day.days
    cbs = [bar.day(f"{power}: day {k + 1}/{n} ({sc.day.policy}, seed {sc.day.seed + k})") for k in range(n)]
    prog = (lambda k, done, total: cbs[k](done, total)) if cbs and cbs[0] is not None else None
    extra = {"trace": trace} if trace is not None else {}
    return simulate_days(sc, power_policy=pol, progress=prog, **extra)


def _write_run(run, folder, picture: bool = True) -> list[str]:
    from usher.sim.report import write_outputs

    if len(run.days) == 1:
        return write_outputs(run.days[0], folder, picture)
    paths = []
    for k, d in enumerate(run.days):
        paths.extend(write_outputs(d, os.path.join(folder, f"day-{k + 1}"), picture))
    os.makedirs(folder, exist_ok=True)
    kp = os.path.join(folder, "kpis.json")
    with open(kp, "w") as fh:
        json.dump(run.kpis, fh, indent=1)
        fh.write("\n")
    return [kp, *paths]


def _run_days(console, sc, power, settings, progress, out_dir, as_json, trace_path, trace_telemetry, picture=True):
    from usher.sim.report import kpi_table
    from usher.sim.trace import TraceWriter

    writer = TraceWriter(trace_path, telemetry=trace_telemetry) if trace_path else None
    with _Bar(progress) as bar:
        run = _days(sc, power, settings, bar, writer)
    if writer is not None:
        writer.close()
    paths = _write_run(run, out_dir, picture) if out_dir else []
    k = run.kpis
    if as_json:
        click.echo(json.dumps(k, indent=1))
        return
    console.print(kpi_table(k, title=f"{sc.name}: power {power}, policy {sc.day.policy}, seed {sc.day.seed}, "
                            f"{len(run.days)} day(s)" + (", faults on" if sc.faults.enabled else "")))
    console.print(f"simulated {len(run.days)} day(s) in {k['run.wall_seconds']:.2f} s")
    for p in paths:
        console.print(f"wrote {p}")


def _run_compare_power(console, sc, powers, settings, progress, out_dir, as_json, picture=True):
    from usher.sim.report import compare_table, plot_power_compare

    runs = {}
    with _Bar(progress) as bar:
        for p in powers:
            runs[p] = _days(sc, p, settings, bar)
            if out_dir:
                _write_run(runs[p], os.path.join(out_dir, p), picture)
    kp = {p: r.kpis for p, r in runs.items()}
    if out_dir:
        _write_compare(out_dir, kp, plot_power_compare if picture else None, runs)
    if as_json:
        click.echo(json.dumps(kp, indent=1))
        return
    console.print(compare_table(kp, title=f"{sc.name}, seed {sc.day.seed}, {sc.day.days} day(s), policy "
                                f"{sc.day.policy}: power policies side by side"
                                + (", faults on" if sc.faults.enabled else "")))
    if out_dir:
        console.print(f"wrote {out_dir}/compare.json{', compare.png' if picture else ''} and one folder per "
                      "power policy")


def _write_compare(out_dir, kpis: dict, plot, results: dict) -> None:
    """``compare.json`` (the KPIs side by side) and ``compare.png`` (drawn by ``plot``;
    None: no picture)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.json"), "w") as fh:
        json.dump(kpis, fh, indent=1)
        fh.write("\n")
    if plot is not None:
        plot(results, os.path.join(out_dir, "compare.png"))


def _run_compare(console, sc, policies, progress, out_dir, as_json, picture=True):
    from usher.sim.day import simulate_day
    from usher.sim.report import compare_table, plot_compare, write_outputs

    results = {}
    with _Bar(progress) as bar:
        for p in policies:
            day = sc.with_changes(day={"policy": p})
            r = simulate_day(day, progress=bar.day(f"{p} (seed {day.day.seed})"))
            results[p] = r
            if out_dir:
                write_outputs(r, os.path.join(out_dir, p), picture)
    kp = {p: r.kpis for p, r in results.items()}
    if out_dir:
        _write_compare(out_dir, kp, plot_compare if picture else None, results)
    if as_json:
        click.echo(json.dumps(kp, indent=1))
        return
    console.print(compare_table(kp, title=f"{sc.name}, seed {sc.day.seed}: policies side by side"
                                + (", faults on" if sc.faults.enabled else "")))
    console.print("wall time: " + ", ".join(f"{p} {k['run.wall_seconds']:.2f} s" for p, k in kp.items()))
    if out_dir:
        console.print(f"wrote {out_dir}/compare.json{', compare.png' if picture else ''} and one folder per policy")


def _run_sweep(console, sc, seeds, policies, jobs, cluster, progress, out_dir, as_json):
    from rich.table import Table

    n = len(seeds) * len(policies)
    try:
        with _Bar(progress) as bar:
            rows, elapsed, workers = sweep(sc, seeds, policies, jobs, progress=bar.counter("days", n),
                                           cluster=cluster)
    except ClusterError as exc:
        raise ScenarioFailure(str(exc)) from None
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
                               "cluster": cluster, "speedup": speedup}, indent=1))
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
    where = f"{workers} processes" if cluster is None else f"{workers} Dask workers ({cluster})"
    console.print(f"{n} days in {elapsed:.2f} s on {where}; one process would take "
                  f"{serial:.2f} s: speed-up {speedup:.2f}x")
    if out_dir:
        console.print(f"wrote {os.path.join(out_dir, 'sweep.csv')}")


def _num(v) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"
