"""What a capacity planner reads after ``usher simulate``: tables, files, a picture.

- :func:`kpi_table` / :func:`compare_table`: rich tables of the headline KPIs;
- :func:`write_outputs`: ``kpis.json`` (every KPI, flat keys), ``timeseries.csv``
  (one row per sample), ``zones.csv`` (one row per sample and zone) and
  ``report.png`` into a folder;
- :func:`plot_day`: the picture (matplotlib, Agg backend, no display needed);
- :func:`plot_compare`: policies of the same day side by side (``compare.png``).

The KPI keys and CSV columns are documented in docs/SCENARIOS.md.
"""

from __future__ import annotations

import json
import os

import numpy as np

from usher.sim.day import DayResult
from usher.sim.scenario import clock_seconds
from usher.sim.sinks import CsvSink, feed

__all__ = ["HEADLINE", "kpi_table", "compare_table", "write_outputs", "write_series", "plot_day", "plot_compare"]


def _int(v):
    return "-" if v is None else f"{int(v):,}"


def _f1(v):
    return "-" if v is None else f"{v:,.1f}"


def _f2(v):
    return "-" if v is None else f"{v:,.2f}"


def _s(v):
    return "-" if v is None else str(v)


#: (label, key, format) rows of the KPI table; zone rows are added per zone
HEADLINE = [
    ("Launches", "launches.total", _int),
    ("  placed (new sessions)", "launches.placed", _int),
    ("  reconnected", "launches.reconnected", _int),
    ("  shared (second app)", "launches.shared", _int),
    ("  rejected", "launches.rejected", _int),
    ("    full", "rejected.full", _int),
    ("    no_server", "rejected.no_server", _int),
    ("    licence_exhausted", "rejected.licence_exhausted", _int),
    ("    logon_tolerance", "rejected.logon_tolerance", _int),
    ("Logons requested (users arriving)", "logons.requested", _int),
    ("  denied (gave up after retries)", "logons.denied", _int),
    ("  failed launches (launch_failed)", "logons.failed", _int),
    ("  on a server fresh from boot", "logons.on_fresh_server", _int),
    ("Peak simultaneous sessions", "sessions.peak", _int),
    ("  at", "sessions.peak_time", _s),
    ("  configured peak", "scenario.peak_target", _int),
    ("Night trough (00:00-06:00)", "sessions.night_trough", _int),
    ("Licence peak / cap", None, None),
    ("Sessions lost to faults (all reported)", "sessions.lost", _int),
    ("Sessions per server: max / p99 peak", None, None),
    ("Load index: max / p99 peak", None, None),
    ("Load index mean at peak", "servers.load_index_mean_at_peak", _f1),
    ("Max concurrent logons on one server", "servers.pending_max", _int),
    ("Server-hours powered", "power.server_hours", _f1),
    ("Server-hours lower bound", "power.server_hours_lower_bound", _f1),
    ("Server-hours / lower bound", "power.server_hours_ratio", _f2),
    ("Server-hours draining", "power.draining_server_hours", _f1),
    ("Boots", "power.boots", _int),
    ("Shutdowns", "power.shutdowns", _int),
    ("Logons on draining servers", "logons.on_draining", _int),
    ("Forced logoffs", "power.forced_logoffs", _int),
    ("Energy (kWh)", "power.energy_kwh", _f1),
    ("Engine time per decision (us)", "engine.us_per_decision", _f2),
    ("Engine time (s) / whole run (s)", None, None),
]


def _row_value(k: dict, label: str, key, fmt) -> str:
    if key is not None:
        return fmt(k.get(key))
    if label.startswith("Licence"):
        return f"{_int(k.get('licences.peak'))} / {_int(k.get('licences.cap'))}"
    if label.startswith("Sessions per server"):
        return f"{_int(k.get('servers.sessions_max'))} / {_f1(k.get('servers.sessions_p99_peak'))}"
    if label.startswith("Load index: max"):
        return f"{_int(k.get('servers.load_index_max'))} / {_f1(k.get('servers.load_index_p99_peak'))}"
    if label.startswith("Engine time (s)"):
        return f"{_f2(k.get('engine.seconds'))} / {_f2(k.get('run.wall_seconds'))}"
    return "-"


def _zone_rows(kpis_list):
    zones = []
    for k in kpis_list:
        for key in k:
            if key.startswith("zone.") and key.endswith(".sessions_peak"):
                z = key[5:-len(".sessions_peak")]
                if z not in zones:
                    zones.append(z)
    rows = []
    for z in zones:
        rows.append((f"Zone {z}: peak sessions", f"zone.{z}.sessions_peak", _int))
        rows.append((f"  imbalance (max/mean LI) at peak", f"zone.{z}.imbalance_at_peak", _f2))
    return rows


def kpi_table(kpis: dict, title: str | None = None):
    """A rich Table of the headline KPIs of one day."""
    from rich.table import Table

    title = title or (f"{kpis.get('scenario.name')}: policy {kpis.get('scenario.policy')}, "
                      f"seed {kpis.get('scenario.seed')}"
                      + (", faults on" if kpis.get("scenario.faults") else ""))
    table = Table(title=title)
    table.add_column("KPI")
    table.add_column("value", justify="right")
    for label, key, fmt in HEADLINE + _zone_rows([kpis]):
        table.add_row(label, _row_value(kpis, label, key, fmt))
    return table


def compare_table(results: dict, title: str = "Policies side by side"):
    """A rich Table with one column per run: ``results`` maps a column name to KPIs."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("KPI")
    for name in results:
        table.add_column(name, justify="right")
    for label, key, fmt in HEADLINE + _zone_rows(list(results.values())):
        table.add_row(label, *[_row_value(k, label, key, fmt) for k in results.values()])
    return table


# ---------------------------------------------------------------- files
def write_series(result: DayResult, folder) -> tuple[str, str]:
    """``timeseries.csv`` and ``zones.csv`` in ``folder`` (through a
    :class:`usher.sim.sinks.CsvSink`); returns their paths."""
    return feed(CsvSink(folder), result.series, result.zones).paths


def write_outputs(result: DayResult, folder, picture: bool = True) -> list[str]:
    """kpis.json, timeseries.csv, zones.csv and (``picture``) report.png in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    kp = os.path.join(folder, "kpis.json")
    with open(kp, "w") as fh:
        json.dump(result.kpis, fh, indent=1)
        fh.write("\n")
    paths.append(kp)
    paths.extend(write_series(result, folder))
    if getattr(result, "actions", None):
        paths.append(write_actions(result.actions, os.path.join(folder, "actions.csv")))
    if picture:
        png = os.path.join(folder, "report.png")
        plot_day(result, png)
        paths.append(png)
    return paths


# ---------------------------------------------------------------- the picture
def _hours_axis(ax, hours):
    ax.set_xlim(0, hours)
    step = 2 if hours > 8 else 1
    ax.set_xticks(np.arange(0, hours + 0.01, step))
    ax.set_xticklabels([f"{int(h):02d}:00" for h in np.arange(0, hours + 0.01, step)], fontsize=8)
    ax.grid(True, alpha=0.25)


def _shade_faults(ax, result):
    for start, end, label in result.fault_windows:
        ax.axvspan(start / 3600, end / 3600, color="#d62728", alpha=0.10, lw=0)


def plot_day(result: DayResult, path) -> str:
    """report.png: sessions against powered capacity, load index percentiles, the
    zones, logons and rejections; a slide-ready picture of the day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, ser = result.kpis, result.series
    hours = result.scenario.day.hours
    h = ser["t"] / 3600.0
    timeline = getattr(result, "rollout_timeline", None)
    if timeline:  # a third row: the rollout's servers by image and state
        fig, ax = plt.subplot_mosaic([["a1", "a2"], ["a3", "a4"], ["a5", "a5"]], figsize=(16, 14), dpi=110,
                                     height_ratios=(1, 1, 0.8))
        a1, a2, a3, a4 = ax["a1"], ax["a2"], ax["a3"], ax["a4"]
        _rollout_panel(ax["a5"], result, hours)
    else:
        fig, axes = plt.subplots(2, 2, figsize=(16, 10), dpi=110)
        (a1, a2), (a3, a4) = axes
    title = (f"{k['scenario.name']} — policy {k['scenario.policy']}, seed {k['scenario.seed']}"
             f"{', faults on' if k['scenario.faults'] else ''} — {k['scenario.servers']:,} servers, "
             f"{k['scenario.zones']} zones\n"
             f"peak {k['sessions.peak']:,} sessions at {k['sessions.peak_time']} · "
             f"{k['launches.rejected']:,} rejected launches, {k['logons.denied']:,} denied logons · "
             f"max {k['servers.pending_max']} concurrent logons on one server · "
             f"{k['power.server_hours']:,.0f} server-hours, {k['power.energy_kwh']:,.0f} kWh")
    fig.suptitle(title, fontsize=12)

    # 1. sessions vs powered capacity; the demand curve on top (it follows the sessions
    # closely), the legend below the panel so it hides neither the night nor the peak
    a1.fill_between(h, 0, ser["capacity"], step="post", color="#c7dcef", label="powered capacity (seats on servers that are on)")
    a1.plot(h, ser["sessions"], color="#08519c", lw=1.8, label="simultaneous sessions")
    a1.plot(h, ser["target"], color="#e7298a", lw=1.3, ls=(0, (4, 2)), zorder=5,
            label="demand curve (configured)")
    cap = k.get("licences.cap")
    if cap:
        a1.axhline(cap, color="#6a3d9a", ls="--", lw=1, label=f"licence cap {cap:,}")
    a1.plot(h, ser["pending"] * 10, color="#ff7f0e", lw=0.8, label="logons in progress ×10")
    a1.set_title("Sessions over the day against powered capacity", fontsize=11)
    a1.set_ylabel("sessions / seats")
    a1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, frameon=False)
    a1.set_ylim(0, max(float(ser["capacity"].max()), float(cap or 0), float(ser["sessions"].max())) * 1.1)
    _hours_axis(a1, hours)
    _shade_faults(a1, result)

    # 2. load index percentiles
    a2.fill_between(h, ser["li_p50"], ser["li_p99"], color="#fdd0a2", label="p50 – p99")
    a2.plot(h, ser["li_mean"], color="#a63603", lw=1.2, label="mean")
    a2.plot(h, ser["li_p99"], color="#e6550d", lw=1.0, label="p99")
    a2.plot(h, ser["li_max"], color="#7f2704", lw=0.7, ls="--", label="max")
    a2.axhline(10000, color="k", lw=0.6, alpha=0.5)
    a2.set_ylim(0, 10500)
    a2.set_title("Load index across powered-on servers (10000 = full)", fontsize=11)
    a2.set_ylabel("load index")
    a2.legend(fontsize=8, loc="upper left")
    _hours_axis(a2, hours)
    _shade_faults(a2, result)

    # 3. zones
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tw = a3.twinx()
    for c, (z, zs) in zip(colors, result.zones.items()):
        a3.plot(h, zs["sessions"], color=c, lw=1.5, label=f"{z} sessions")
        imb = np.where(zs["li_mean"] >= 1000, zs["imbalance"], np.nan)
        tw.plot(h, imb, color=c, lw=0.8, ls=":", alpha=0.9)
    tw.set_ylabel("imbalance: max / mean load index (dotted)", fontsize=8)
    tw.set_ylim(1.0, max(2.0, float(np.nanmax([np.nanmax(np.where(zs["li_mean"] >= 1000, zs["imbalance"], np.nan))
                                                 if np.any(zs["li_mean"] >= 1000) else 1.0
                                                 for zs in result.zones.values()])) * 1.1))
    a3.set_title("Per zone: sessions (solid) and imbalance of the patient-record pool (dotted)", fontsize=11)
    a3.set_ylabel("sessions")
    a3.set_ylim(0, max(1.0, max(float(zs["sessions"].max()) for zs in result.zones.values())) * 1.3)
    a3.legend(fontsize=8, loc="upper left")
    _hours_axis(a3, hours)
    _shade_faults(a3, result)

    # 4. logons and rejections per 5 minutes
    S = result.scenario.day.sample_seconds
    per = max(1, int(round(300 / S)))
    n = len(h) // per * per
    hb = h[:n:per]
    placed = ser["placed"][:n].reshape(-1, per).sum(1)
    a4.fill_between(hb, 0, placed, step="post", color="#d9d9d9", label="new sessions placed")
    a4.set_ylabel("per 5 min")
    tw4 = a4.twinx()
    bottom = np.zeros(len(hb))
    reasons = [c for c in ser if c.startswith("rejected_")]
    reds = ["#67000d", "#a50f15", "#cb181d", "#ef3b2c", "#fb6a4a", "#fc9272", "#fcbba1", "#fee0d2"]
    any_rej = False
    for c, col in zip(reasons, reds):
        v = ser[c][:n].reshape(-1, per).sum(1)
        if v.sum() > 0:
            any_rej = True
            tw4.bar(hb, v, width=per * S / 3600, bottom=bottom, align="edge", color=col,
                    label=f"rejected: {c[len('rejected_'):]}")
            bottom += v
    lost = ser["lost"][:n].reshape(-1, per).sum(1)
    if lost.sum() > 0:
        a4.plot(hb[lost > 0], lost[lost > 0], "kx", ms=6, label="sessions lost (faults)")
    tw4.set_ylabel("rejected launches per 5 min (bars)", fontsize=8)
    if not any_rej and lost.sum() == 0:
        a4.text(0.5, 0.9, "no rejected launch, no lost session", transform=a4.transAxes, ha="center",
                fontsize=10, color="#238b45")
    tw4.set_ylim(0, max(1.0, float(bottom.max() if any_rej else 0)) * 1.15)
    h1, l1 = a4.get_legend_handles_labels()
    h2, l2 = tw4.get_legend_handles_labels()
    a4.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
    a4.set_title("Logons and rejections per 5 minutes (shift changes show as logon bursts)", fontsize=11)
    _hours_axis(a4, hours)
    _shade_faults(a4, result)

    fig.text(0.01, 0.005, "usher simulate · red bands: faults (server crash, zone outage) · "
             f"energy model: {k['power.watts_idle']:.0f} W idle to {k['power.watts_busy']:.0f} W at 100 % cpu, "
             f"{k['power.watts_booting']:.0f} W booting", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.015, 1, 0.955))
    fig.savefig(path)
    plt.close(fig)
    return str(path)


#: colours of the rollout statuses (usher.planner.rollout.STATUS_NAMES order)
_ROLLOUT_COLOURS = {"old": "#bdbdbd", "draining": "#fdae6b", "rebooting": "#e6550d", "updated": "#31a354",
                    "staged": "#a1d99b", "rollback": "#de2d26"}


def _rollout_panel(ax, result, hours):
    """Servers by rollout status (stacked) and servers on per image over the day,
    from ``DayResult.rollout_timeline`` (columns ``usher.planner.compose.TIMELINE_COLUMNS``)."""
    from usher.planner.compose import TIMELINE_COLUMNS

    tl = np.asarray(result.rollout_timeline, dtype=np.float64)
    col = {c: tl[:, j] for j, c in enumerate(TIMELINE_COLUMNS)}
    h = col["t"] / 3600.0
    names = [c for c in _ROLLOUT_COLOURS if c in col]
    ax.stackplot(h, *[col[c] for c in names], colors=[_ROLLOUT_COLOURS[c] for c in names],
                 labels=[f"servers {c}" for c in names], step="post", alpha=0.9)
    ax.plot(h, col["new_on"], color="#006d2c", lw=1.4, label="on, new image")
    ax.plot(h, col["old_on"], color="#252525", lw=1.2, ls="--", label="on, old image")
    k = result.kpis
    ro = result.scenario.rollout
    ax.axvspan(clock_seconds(ro.start) / 3600, clock_seconds(ro.deadline) / 3600, color="#3182bd", alpha=0.06, lw=0)
    state = "halted" if k.get("rollout.halted") else ("finished" if "rollout.finished_at" in k else "not finished")
    ax.set_title(f"Rollout of {k.get('rollout.image', ro.image)} ({ro.start}–{ro.deadline}, blue band): "
                 f"{k.get('rollout.updated', 0):,} / {k.get('rollout.servers', 0):,} servers updated, {state}, "
                 f"{k.get('rollout.forced_logoffs', 0)} forced logoffs, {k.get('rollout.rolled_back', 0)} rolled back",
                 fontsize=11)
    ax.set_ylabel("servers")
    ax.set_ylim(0, float(tl[:, 1:1 + len(names)].sum(1).max()) * 1.05 if len(tl) else 1.0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _hours_axis(ax, hours)


def write_actions(actions: list, path) -> str:
    """actions.csv: the power planner's actions carried out (time, kind, server, reason)."""
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t", "clock", "kind", "server", "reason"])
        for now, kind, i, reason in actions:
            w.writerow([int(now), f"{int(now) // 3600:02d}:{int(now) % 3600 // 60:02d}", kind, i, reason])
    return str(path)


def plot_power_compare(runs: dict, path) -> str:
    """compare.png of ``--compare-power``: one chart, the same day(s) under each
    power policy — powered seats against sessions, rejected launches (cumulative),
    server-hours (with the lower bound) and energy. ``runs`` maps a policy name to
    a :class:`usher.sim.days.RunResult`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 9), dpi=110)
    (a1, a2), (a3, a4) = axes
    names = list(runs)
    for j, (name, run) in enumerate(runs.items()):
        h = np.concatenate([d.series["t"] / 3600.0 + 24.0 * k for k, d in enumerate(run.days)])
        cap = np.concatenate([d.series["capacity"] for d in run.days])
        ses = np.concatenate([d.series["sessions"] for d in run.days])
        rej = np.cumsum(np.concatenate([d.series["rejected"] for d in run.days]))
        line, = a1.plot(h, cap, lw=1.2, label=f"{name}: powered seats")
        if j == 0:
            a1.plot(h, ses, lw=1.6, color="black", label="sessions")
        a2.plot(h, rej, lw=1.2, color=line.get_color(), label=f"{name} ({int(rej[-1]) if len(rej) else 0:,})")
    k = [runs[n].kpis for n in names]
    x = np.arange(len(names))
    a3.bar(x, [kk["power.server_hours"] for kk in k], color=[f"C{i}" for i in range(len(names))])
    lb = k[0].get("power.server_hours_lower_bound")
    if lb:
        a3.axhline(lb, color="black", ls="--", lw=1, label=f"lower bound {lb:,.0f}")
        a3.legend(fontsize=8)
    for i, kk in enumerate(k):
        r = kk.get("power.server_hours_ratio")
        a3.text(i, kk["power.server_hours"], f"{kk['power.server_hours']:,.0f}" + (f"\n{r:.2f}x" if r else ""),
                ha="center", va="bottom", fontsize=8)
    a4.bar(x, [kk["power.energy_kwh"] for kk in k], color=[f"C{i}" for i in range(len(names))])
    for i, kk in enumerate(k):
        a4.text(i, kk["power.energy_kwh"], f"{kk['power.energy_kwh']:,.0f}", ha="center", va="bottom", fontsize=8)
    for ax in (a3, a4):
        ax.set_xticks(x)
        ax.set_xticklabels(names)
    for ax, title in ((a1, "Powered seats against sessions"), (a2, "Rejected launches (cumulative)"),
                      (a3, "Server-hours"), (a4, "Energy (kWh)")):
        ax.set_title(title, fontsize=11)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.25)
    for ax in (a1, a2):
        ax.set_xlabel("hours from the start")
        ax.legend(fontsize=8)
    k0 = k[0]
    fig.suptitle(f"{k0['scenario.name']}, seed {k0['scenario.seed']}, {k0.get('scenario.days', 1)} day(s)"
                 f"{', faults on' if k0['scenario.faults'] else ''}: power policies side by side", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def plot_compare(results: dict, path) -> str:
    """compare.png: the same day under each policy, one line per policy in three
    panels side by side — simultaneous sessions, servers on, rejected launches per
    5 minutes. ``results`` maps a policy name to its :class:`DayResult`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(18, 5.5), dpi=110)
    first = next(iter(results.values()))
    hours = first.scenario.day.hours
    S = first.scenario.day.sample_seconds
    per = max(1, int(round(300 / S)))
    for name, r in results.items():
        ser = r.series
        h = ser["t"] / 3600.0
        k = r.kpis
        a1.plot(h, ser["sessions"], lw=1.4, label=f"{name} (peak {k['sessions.peak']:,})")
        a2.plot(h, ser["servers_on"], lw=1.4, label=f"{name} ({k['power.server_hours']:,.0f} server-hours)")
        n = len(h) // per * per
        rej = ser["rejected"][:n].reshape(-1, per).sum(1)
        a3.step(h[:n:per], rej, where="post", lw=1.2, label=f"{name} ({k['launches.rejected']:,} rejected)")
    for ax, title, ylabel in ((a1, "Simultaneous sessions", "sessions"), (a2, "Servers on", "servers"),
                              (a3, "Rejected launches per 5 minutes", "per 5 min")):
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
        _hours_axis(ax, hours)
        _shade_faults(ax, first)
    k = first.kpis
    fig.suptitle(f"{k['scenario.name']}, seed {k['scenario.seed']}"
                 f"{', faults on' if k['scenario.faults'] else ''}: policies side by side", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return str(path)
