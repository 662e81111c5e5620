"""The simulator (``usher simulate``): shape of the day, KPIs, replay, faults, CLI.

Most tests run a tenth of the hospital day (140 servers, 1,700 sessions at the
peak, ~1.5 s); the full day (1,400 servers, 17,000) runs once.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from click.testing import CliRunner

from usher import Outcome, Reason
from usher.cli import main
from usher.sim.scenario import Scenario, ScenarioError, clock_seconds, demand_curves
from usher.planner.power import FixedSchedule, PowerPolicy
from usher.sim.day import simulate_day
from usher.sim.sinks import SERIES_COLUMNS, ZONE_COLUMNS
from usher.sim.trace import TraceWriter

SMALL = Scenario().scaled(0.1)
TIMING_KEYS = ("run.", "engine.seconds", "engine.launch_seconds", "engine.us_per", "trace.")
HERE = os.path.dirname(__file__)
SMALL_TOML = os.path.join(HERE, "..", "docs", "examples", "scenario-small.toml")


def _stable(kpis):
    return {k: v for k, v in kpis.items() if not k.startswith(TIMING_KEYS)}


@pytest.fixture(scope="module")
def small_day():
    return simulate_day(SMALL, keep_decisions=True)


@pytest.fixture(scope="module")
def fault_day(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "day.jsonl"
    writer = TraceWriter(str(path))
    result = simulate_day(SMALL.with_changes(faults={"enabled": True}), trace=writer, keep_decisions=True)
    writer.close()
    return result, path


# ---------------------------------------------------------------- scenario
def test_small_scenario_is_a_tenth():
    assert SMALL.fleet.servers == 140
    assert SMALL.demand.peak_sessions == 1700
    assert SMALL.fleet.licences == 2400


def test_demand_curve_mean_hits_the_configured_peak():
    target, hazard, arrivals = demand_curves(Scenario())
    assert abs(target.max() - 17_000) / 17_000 < 0.01
    assert (arrivals >= 0).all() and (hazard > 0).all()
    # shift changes: the logoff rate is highest at 07:00, 15:00 and 23:00
    for t in ("07:00", "15:00", "23:00"):
        k = int(clock_seconds(t))
        assert hazard[k] > 3 * hazard[int(clock_seconds("11:00"))]


def test_scenario_toml_overrides_and_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "x"\n[fleet]\nservers = 30\n[demand]\npeak_sessions = 200\n'
                 '[day]\npolicy = "vertical"\n')
    sc = Scenario.from_toml(p)
    assert (sc.name, sc.fleet.servers, sc.demand.peak_sessions, sc.day.policy) == ("x", 30, 200, "vertical")
    assert sc.fleet.licences == 24_000  # untouched knobs keep the embedded day's value
    p.write_text("[fleet]\nservrs = 30\n")
    with pytest.raises(ScenarioError, match="servrs"):
        Scenario.from_toml(p)
    p.write_text("[fleat]\nservers = 30\n")
    with pytest.raises(ScenarioError, match="fleat"):
        Scenario.from_toml(p)
    p.write_text('[fleet]\nservers = "many"\n')
    with pytest.raises(ScenarioError, match="integer"):
        Scenario.from_toml(p)
    with pytest.raises(ScenarioError, match="policy"):
        Scenario().with_changes(day={"policy": "diagonal"})
    assert Scenario.from_toml(SMALL_TOML).fleet.servers == 140


# ---------------------------------------------------------------- shape
def test_small_day_has_its_shape(small_day):
    k = small_day.kpis
    assert abs(k["sessions.peak"] - 1700) <= 0.05 * 1700
    assert k["sessions.night_trough"] < 0.2 * k["sessions.peak"]
    assert 8 * 3600 <= clock_seconds(k["sessions.peak_time"]) <= 12 * 3600
    s = small_day.series["sessions"]
    t = small_day.series["t"]
    # quiet night, sharp morning ramp, slow decay
    assert s[(t >= 2 * 3600) & (t < 5 * 3600)].max() < 0.2 * k["sessions.peak"]
    assert s[t == 7 * 3600][0] < s[t == 9 * 3600][0]
    assert s[t == 16 * 3600][0] > s[t == 20 * 3600][0] > s[t == 23 * 3600][0]


def test_full_day_hits_its_shape():
    result = simulate_day()
    k = result.kpis
    print(f"\nfull day: {k['run.wall_seconds']:.2f} s (build {k['run.build_seconds']:.2f} s, "
          f"loop {k['run.loop_seconds']:.2f} s, engine {k['engine.seconds']:.2f} s)")
    assert k["scenario.servers"] == 1400
    assert abs(k["sessions.peak"] - 17_000) <= 0.05 * 17_000
    assert k["sessions.night_trough"] < 0.15 * 17_000
    assert k["licences.peak"] <= 24_000
    assert k["launches.rejected"] == 0
    assert k["books.mismatch"] == 0 and k["books.unexpected_decisions"] == 0


# ---------------------------------------------------------------- KPIs
def test_kpis_add_up(small_day):
    k, d, ser = small_day.kpis, small_day.decisions, small_day.series
    n = len(d["outcome"])
    assert k["launches.total"] == n == k["engine.decisions"]
    for o, key in ((Outcome.PLACED, "placed"), (Outcome.RECONNECTED, "reconnected"),
                   (Outcome.SHARED, "shared"), (Outcome.REJECTED, "rejected")):
        assert k[f"launches.{key}"] == int((d["outcome"] == int(o)).sum())
        assert int(ser[key].sum()) == k[f"launches.{key}"]
    assert sum(k[f"launches.{x}"] for x in ("placed", "reconnected", "shared", "rejected")) == n
    reasons = [r for r in Reason if r != Reason.NONE]
    assert sum(k[f"rejected.{r}"] for r in reasons) == k["launches.rejected"]
    for r in reasons:
        assert k[f"rejected.{r}"] == int((d["reason"] == int(r)).sum())
    assert int(ser["launches"].sum()) == n
    # new sessions: first launches, retries and comebacks that were placed
    assert k["launches.placed"] >= k["logons.requested"] - k["logons.no_idle_user"] - k["logons.denied"]
    assert k["sessions.peak"] >= ser["sessions"].max()
    assert k["licences.peak"] <= k["licences.cap"]
    assert k["servers.pending_max"] >= ser["pending_max"].max()
    assert k["servers.load_index_max"] <= 10_000
    assert k["power.server_hours"] > 0 and k["power.energy_kwh"] > 0
    assert k["engine.us_per_decision"] > 0
    assert set(SERIES_COLUMNS) == set(ser)
    assert len({len(v) for v in ser.values()}) == 1
    for zs in small_day.zones.values():
        assert set(zs) == set(ZONE_COLUMNS[2:])
    # per-zone sessions add up to the fleet's (servers that are on; booting ones hold none)
    total = sum(zs["sessions"] for zs in small_day.zones.values())
    assert np.all(total <= ser["sessions"])


def test_books_balance_without_faults(small_day):
    k = small_day.kpis
    assert k["sessions.lost"] == 0
    assert k["books.mismatch"] == 0 and k["books.lost_unbooked"] == 0
    assert k["books.unexpected_decisions"] == 0
    # every session still open at midnight is one the engine holds
    assert k["sessions.at_end"] == small_day.scheduler.live_sessions


# ---------------------------------------------------------------- faults
def test_faults_lose_no_session_from_the_books(fault_day):
    result, _ = fault_day
    k = result.kpis
    assert k["faults.server_crashes"] == 3 and k["faults.zone_outages"] == 1
    assert k["sessions.lost"] > 0
    assert k["books.lost_reported"] == k["sessions.lost"]
    assert k["books.lost_unbooked"] == 0  # the engine lost nothing the books did not hold
    assert k["books.mismatch"] == 0  # ... and the books hold nothing the engine lost
    assert k["books.unexpected_decisions"] == 0
    assert 0 < k["sessions.lost_relaunched"] <= k["sessions.lost"]
    assert int(result.series["lost"].sum()) == k["sessions.lost"]
    # while the zone is dark its servers are off and its users fail over
    t = result.series["t"]
    z = result.zones["DC-South"]
    dark = (t >= clock_seconds("10:35")) & (t < clock_seconds("11:30"))
    assert (z["servers_on"][dark] == 0).all()
    assert len(result.fault_windows) == 4


# ---------------------------------------------------------------- replay
def test_exported_day_replays_to_the_same_decisions(fault_day):
    import usher.formats.replay as replay_mod
    result, path = fault_day
    with open(path) as fh:
        first = json.loads(fh.readline())
    assert first["op"] == "settings"
    replayed = replay_mod.replay(str(path))
    assert replayed.errors == []
    d = result.decisions
    names = result.server_names
    outcomes = [str(Outcome(o)) for o in range(4)]
    assert len(replayed.decisions) == len(d["outcome"])
    for i, rd in enumerate(replayed.decisions):
        mine = (d["id"][i], outcomes[d["outcome"][i]],
                names[d["server"][i]] if d["server"][i] >= 0 else None,
                str(Reason(d["reason"][i])) if d["reason"][i] > 0 else None,
                int(d["load_index"][i]) if d["load_index"][i] >= 0 else None, d["session"][i])
        theirs = (rd.id, rd.outcome, rd.server, rd.reason, rd.load_index, rd.session)
        assert mine == theirs, f"launch {i}"
    assert replayed.scheduler.live_sessions == result.scheduler.live_sessions


# ---------------------------------------------------------------- determinism
def test_a_seed_gives_the_same_day(small_day):
    again = simulate_day(SMALL, keep_decisions=True)
    assert _stable(again.kpis) == _stable(small_day.kpis)
    for c in SERIES_COLUMNS:
        np.testing.assert_array_equal(again.series[c], small_day.series[c])
    for key in ("outcome", "reason", "server", "load_index"):
        np.testing.assert_array_equal(again.decisions[key], small_day.decisions[key])
    other = simulate_day(SMALL.with_changes(day={"seed": 2, "hours": 6.0}))
    assert other.kpis["launches.total"] != small_day.kpis["launches.total"]


# ---------------------------------------------------------------- power
class AlwaysOn:
    """A power policy that wants every server on."""

    interval_seconds = 300

    def __init__(self):
        self.calls = 0

    def initial(self, view):
        return np.ones(len(view.power), dtype=bool)

    def plan(self, view):
        self.calls += 1
        assert view.sessions.shape == view.power.shape == view.down.shape
        return None  # no change


def test_power_policy_is_pluggable():
    assert isinstance(FixedSchedule(SMALL, np.zeros(3, dtype=bool)), PowerPolicy)
    policy = AlwaysOn()
    assert isinstance(policy, PowerPolicy)
    sc = SMALL.with_changes(day={"hours": 3.0})
    fixed = simulate_day(sc)
    k = simulate_day(sc, power_policy=policy).kpis
    n_night = int(fixed.series["servers_powered"][0])
    assert k["power.boots"] == 140 - n_night  # the night set boots at once
    assert k["power.shutdowns"] == 0
    assert policy.calls == 3 * 3600 // 300 - 1
    assert k["power.server_hours"] > fixed.kpis["power.server_hours"]


def test_fixed_schedule_switches_the_night_set():
    result = simulate_day(SMALL.with_changes(day={"hours": 7.0}))
    ser = result.series
    t = ser["t"]
    on_at = clock_seconds(SMALL.power.on_at) + SMALL.power.boot_seconds + 60
    assert ser["servers_on"][t < clock_seconds("05:00")].max() < ser["servers_on"][t >= on_at].min()
    assert ser["servers_on"][-1] == 140
    assert result.kpis["logons.on_fresh_server"] > 0


# ---------------------------------------------------------------- CLI
def test_cli_writes_outputs_that_parse(tmp_path):
    out = tmp_path / "out"
    trace = tmp_path / "day.jsonl"
    r = CliRunner().invoke(main, ["simulate", "--scenario", SMALL_TOML, "--seed", "3", "--faults",
                                  "--out", str(out), "--export-trace", str(trace), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "Peak simultaneous sessions" in r.output
    k = json.loads((out / "kpis.json").read_text())
    assert k["scenario.seed"] == 3 and k["scenario.faults"] is True and k["scenario.servers"] == 140
    assert all("." in key for key in k)  # flat keys
    assert all(not isinstance(v, (dict, list)) for v in k.values())
    with open(out / "timeseries.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(SERIES_COLUMNS)
    assert len(rows) == 24 * 3600 // 30
    assert sum(int(float(x["launches"])) for x in rows) == k["launches.total"]
    with open(out / "zones.csv") as fh:
        zrows = list(csv.DictReader(fh))
    assert list(zrows[0]) == list(ZONE_COLUMNS) and len(zrows) == 3 * len(rows)
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    lines = trace.read_text().splitlines()
    assert len(lines) == k["trace.lines"]
    ops = {json.loads(x)["op"] for x in lines}
    assert {"settings", "licences", "pool", "app", "user", "server", "launch", "logon_done",
            "logoff", "disconnect", "close_app", "launch_failed", "power", "mode", "telemetry"} <= ops


def test_cli_compare_and_sweep(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["simulate", "--scenario", SMALL_TOML, "--compare", "horizontal,vertical",
                             "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    both = json.loads(r.output)
    assert set(both) == {"horizontal", "vertical"}
    assert both["horizontal"]["logons.requested"] == both["vertical"]["logons.requested"]  # same day
    assert both["vertical"]["scenario.policy"] == "vertical"
    r = runner.invoke(main, ["simulate", "--scenario", SMALL_TOML, "--sweep", "--seeds", "1-2",
                             "--policies", "horizontal", "--jobs", "2", "--json", "--no-progress",
                             "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    sweep = json.loads(r.output)
    assert [d["scenario.seed"] for d in sweep["days"]] == [1, 2]
    assert sweep["speedup"] > 0 and sweep["workers"] == 2
    assert (tmp_path / "sweep.csv").exists()
    r = runner.invoke(main, ["simulate", "--scenario", SMALL_TOML, "--sweep", "--seeds", "x"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["simulate", "--compare", "horizontal,diagonal"])
    assert r.exit_code == 2


def test_licence_starved_day_keeps_its_books_and_replays(tmp_path):
    """With the licence cap far below demand, launches are refused and retried, so a
    user can disconnect before a delayed logon completes and a second app can be
    refused: the day must still run, balance its books and replay to the same decisions."""
    import usher.formats.replay as replay_mod
    path = tmp_path / "starved.jsonl"
    writer = TraceWriter(str(path))
    sc = SMALL.with_changes(faults={"enabled": True}, fleet={"licences": 600})
    result = simulate_day(sc, trace=writer, keep_decisions=True)
    writer.close()
    k = result.kpis
    assert k["launches.rejected"] > 0 and k["logons.denied"] > 0 and k["logons.retried"] > 0
    assert k["licences.peak"] <= 600
    assert k["books.mismatch"] == 0 and k["books.unexpected_decisions"] == 0
    replayed = replay_mod.replay(str(path))
    assert replayed.errors == []
    d = result.decisions
    assert [(r.id, r.outcome) for r in replayed.decisions] == \
        [(d["id"][i], str(Outcome(d["outcome"][i]))) for i in range(len(d["outcome"]))]
