"""The day's handlers run alone on a small day at a chosen tick, and the frictions
of ``usher simulate`` (gzip traces, piped tables, the compare chart, per-zone peaks)."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from usher.cli import main
from usher.sim.calendar import E_END, L_NEW, S_BOOTED, S_CRASH, S_RECOVER, S_ZONE_DARK
from usher.sim.day import Day
from usher.sim.handlers import apply_power, new_visits, server_events, session_events
from usher.sim.launches import launches
from usher.sim.scenario import Scenario
from usher.sim.sinks import SERIES_COLUMNS, ZONE_COLUMNS, CsvSink, KpiSink, MetricSink, SeriesSink
from usher.sim.stats import BOOTING, OFF, ON
from usher.sim.trace import TraceWriter

TINY = Scenario().scaled(0.02).with_changes(day={"hours": 2.0})


@pytest.fixture
def day():
    return Day(TINY.copy().validate())


def _placed_visit(d, tick=10):
    """Place one new visit at ``tick`` through the handlers; returns (visit, session)."""
    d.arrivals.counts[tick] = max(d.arrivals.counts[tick], 1)
    reqs = []
    new_visits(d, tick, reqs)
    v = reqs[0][0]
    launches(d, reqs[:1], tick, float(tick))
    assert v.sid >= 0 and v.sid in d.books
    return v, v.sid


def test_crash_takes_the_server_down_and_schedules_its_recovery(day):
    d = day
    i = int(np.nonzero(d.power_v == ON)[0][0])
    server_events(d, [(S_CRASH, i)], 100, 100.0)
    assert d.power_v[i] == OFF and d.state.down[i]
    assert d.state.tally["crashes"] == 1
    back = 100 + int(d.sc.faults.reboot_minutes * 60)
    assert (S_RECOVER, i) in d.cal.servers[back]
    server_events(d, [(S_RECOVER, i)], back, float(back))
    assert not d.state.down[i]


def test_a_crash_loses_the_booked_sessions_and_the_user_comes_back(day):
    d = day
    v, sid = _placed_visit(d)
    srv = d.books.entries[sid][1]
    server_events(d, [(S_CRASH, srv)], 20, 20.0)
    t = d.state.tally
    assert t["lost"] >= 1 and t["mismatch"] == 0 and t["lost_unbooked"] == 0
    assert sid not in d.books and v.sid == -1
    back = 20 + d.arrivals.comeback[v.a]
    assert (v, v.gen, L_NEW) in d.cal.launches.peek(back) or back >= min(v.end, d.T)


def test_zone_dark_takes_every_server_of_the_zone(day):
    d = day
    server_events(d, [(S_ZONE_DARK, 0)], 50, 50.0)
    members = d.layout.server_zone == 0
    assert (d.power_v[members] == OFF).all() and d.state.down[members].all()
    assert not d.state.down[~members].any()


def test_end_of_visit_logs_off_and_frees_the_user(day):
    d = day
    v, sid = _placed_visit(d)
    idle_before = d.state.idle.count(v.h, v.role)
    session_events(d, [(E_END, v, v.gen, sid)], 30, 30.0)
    assert sid not in d.books and v.sid == -1
    assert d.state.idle.count(v.h, v.role) == idle_before + 1
    assert d.s.live_sessions == len(d.books)
    # the same event again is stale (the visit's generation moved on)
    session_events(d, [(E_END, v, v.gen - 1, sid)], 31, 31.0)
    assert d.state.idle.count(v.h, v.role) == idle_before + 1


def test_power_boots_what_is_wanted_and_drains_what_is_not(day):
    d = day
    off = np.nonzero(d.power_v == OFF)[0]
    assert len(off)
    apply_power(d, 0, 0.0, np.ones(len(d.power_v), dtype=bool))
    assert (d.power_v[off] == BOOTING).all()
    assert d.state.tally["boots"] == len(off)
    boot_tick = d.sc.power.boot_seconds
    assert sorted(i for k, i in d.cal.servers[boot_tick] if k == S_BOOTED) == off.tolist()
    server_events(d, d.cal.servers.pop(boot_tick), boot_tick, float(boot_tick))
    assert (d.power_v[off] == ON).all()
    wish = np.ones(len(d.power_v), dtype=bool)
    wish[off] = False  # empty servers: drained and shut down at once
    apply_power(d, boot_tick + 1, boot_tick + 1.0, wish)
    assert d.state.tally["shutdowns"] == len(off)


class _Recorder:
    def __init__(self):
        self.samples, self.kpi, self.opened, self.closed = 0, None, None, False

    def open(self, zones, n_samples):
        self.opened = (list(zones), n_samples)

    def sample(self, row, zone_rows):
        assert len(row) == len(SERIES_COLUMNS) and len(zone_rows[0]) == len(ZONE_COLUMNS) - 2
        self.samples += 1

    def kpis(self, kpis):
        self.kpi = kpis

    def close(self):
        self.closed = True


def test_a_sink_sees_every_sample_and_the_kpis(tmp_path):
    from usher.sim.day import simulate_day

    rec = _Recorder()
    assert isinstance(rec, MetricSink) and isinstance(CsvSink(tmp_path), MetricSink)
    assert isinstance(SeriesSink(), MetricSink) and isinstance(KpiSink(), MetricSink)
    csv_sink = CsvSink(tmp_path / "live")
    r = simulate_day(TINY, sinks=[rec, csv_sink])
    assert rec.opened == (TINY.fleet.zones, len(r.series["t"])) and rec.samples == len(r.series["t"])
    assert rec.kpi == r.kpis and rec.closed
    from usher.sim.report import write_series

    after = write_series(r, tmp_path / "after")
    for live, late in zip(csv_sink.paths, after):
        assert open(live).read() == open(late).read()


# ---------------------------------------------------------------- frictions
def test_a_gz_trace_is_gzip_and_replays(tmp_path):
    path = tmp_path / "day.jsonl.gz"
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", _tiny_toml(tmp_path),
                                  "--export-trace", str(path)])
    assert r.exit_code == 0, r.output
    with gzip.open(path, "rb") as fh:
        first = json.loads(fh.readline())
    assert first["op"] == "settings"
    rr = CliRunner().invoke(main, ["replay", str(path)])
    assert rr.exit_code == 0, rr.output


def test_trace_writer_gz_is_reproducible(tmp_path):
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        w = TraceWriter(str(tmp_path / name))
        w.append({"t": 0.0, "op": "licences", "cap": 3})
        w.close()
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == b'{"t":0.0,"op":"licences","cap":3}\n'


def test_sweep_table_is_not_cut_when_piped(tmp_path):
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", _tiny_toml(tmp_path), "--sweep",
                                  "--seeds", "1", "--policies", "horizontal", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    header = next(line for line in lines if "seed" in line and "policy" in line)
    assert header.rstrip().endswith("s ┃") and "…" not in r.output  # every column, nothing cut
    summary = next(line for line in lines if "days in" in line)
    assert "speed-up" in summary  # one line
    from usher.cli.simulate import _console

    assert _console().width > 200  # stdout is not a terminal here: no 80-column cut


def test_compare_writes_a_combined_chart(tmp_path):
    out = tmp_path / "cmp"
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", _tiny_toml(tmp_path),
                                  "--compare", "horizontal,vertical", "--out", str(out)])
    assert r.exit_code == 0, r.output
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_no_picture_writes_the_numbers_only(tmp_path):
    """``--no-picture``: the KPIs and CSV files of each day and comparison, no PNG;
    the numbers equal those written with the pictures."""
    toml = _tiny_toml(tmp_path)
    runs = {
        "day": ["--power", "fixed"], "days": ["--days", "2"], "compare": ["--compare", "horizontal,vertical"],
        "power": ["--compare-power", "fixed,autoscale"]}
    for name, extra in runs.items():
        plain, bare = tmp_path / f"{name}-png", tmp_path / f"{name}-bare"
        for out, flag in ((plain, []), (bare, ["--no-picture"])):
            r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", toml, *extra, "--out", str(out),
                                          *flag])
            assert r.exit_code == 0, r.output
        pngs = sorted(p.relative_to(plain) for p in plain.rglob("*.png"))
        assert pngs and not list(bare.rglob("*.png")), name
        written = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.suffix in (".csv", ".json"))
        assert written == sorted(p.relative_to(bare) for p in bare.rglob("*") if p.is_file()), name
        for rel in written:
            if rel.suffix == ".csv":
                assert (plain / rel).read_bytes() == (bare / rel).read_bytes(), rel


def test_zone_imbalance_is_read_at_the_zones_own_peak():
    from usher.sim.day import simulate_day

    r = simulate_day(Scenario().scaled(0.1).with_changes(day={"hours": 12.0}, faults={"enabled": True}))
    for z, zs in r.zones.items():
        j = int(np.argmax(zs["sessions"]))
        imb = zs["imbalance"][j]
        want = round(float(imb), 3) if math.isfinite(imb) else None
        assert r.kpis[f"zone.{z}.imbalance_at_peak"] == want


def _tiny_toml(tmp_path) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text("[day]\nhours = 2.0\n[fleet]\nservers = 30\nusers = 800\nlicences = 500\n"
                    "[demand]\npeak_sessions = 300\n")
    return str(path)


def test_a_run_of_marks_is_carried_out_as_one_mark_at_a_time():
    """apply_actions carries a run of place-last marks out in one engine call: the
    engine, the trace lines, the log and the counts are those of one call per mark."""
    from usher.core import state as st
    from usher.planner.power import BOOT, PLACE_FIRST, PLACE_LAST, Action
    from usher.sim.handlers import apply_actions

    traces = []
    days = []
    for batched in (True, False):
        lines: list = []
        d = Day(TINY.copy().validate())
        d.calls.append = lines.append  # the trace lines, in the order applied
        on = np.nonzero(d.power_v == ON)[0].tolist()
        assert len(on) >= 5
        off = np.nonzero(d.power_v == OFF)[0].tolist()
        acts = [Action(PLACE_LAST, on[0], "a"), Action(PLACE_LAST, 10 ** 6, "bad"), Action(PLACE_LAST, on[2], ""),
                Action(PLACE_FIRST, on[0], "b"), Action(BOOT, off[0], "boot") if off else Action(PLACE_FIRST, on[3], "c"),
                Action(PLACE_LAST, on[4], "d")]
        if batched:
            apply_actions(d, 5, 5.0, acts)
        else:
            for a in acts:  # one action per call: no run is longer than one mark
                apply_actions(d, 5, 5.0, [a])
        traces.append(lines)
        days.append(d)
    a, b = days
    assert traces[0] == traces[1] and len([x for x in traces[0] if x["op"] == "place_last"]) == 4
    assert a.state.tally == b.state.tally and a.state.tally["refused"] == 1 and a.state.tally["marks"] == 4
    assert a.state.actions == b.state.actions and a.calls.ops == b.calls.ops
    marked = a.s.servers()["place_last"]
    assert marked.tolist() == b.s.servers()["place_last"].tolist() and marked[on[2]] and marked[on[4]]
    assert not marked[on[0]]  # marked, then unmarked
    for f in st.SERVER_INT_FIELDS:
        np.testing.assert_array_equal(a.s.server_field(f), b.s.server_field(f), err_msg=f)
