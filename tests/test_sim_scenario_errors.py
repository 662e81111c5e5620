"""Bad scenario files: ``usher simulate --scenario bad.toml`` exits 2 with one line
that names the file, the key and the value, and no traceback; sizes are refused
before anything is allocated."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from usher.cli import main
from usher.sim.scenario import MAX_HOSPITALS, MAX_USERS, Scenario, ScenarioError, clock_seconds

#: (TOML text, key named in the message, value as the message shows it)
BAD = [
    ("[fleet]\ncpu_full = 0", "[fleet] cpu_full", "0.0"),
    ("[fleet]\nmemory_full = 150", "[fleet] memory_full", "150.0"),
    ("[fleet]\nlarge_weight = 0", "[fleet] large_weight", "0"),
    ('[demand]\ncurve = [["00:00", nan], ["24:00", 0.1]]', "[demand] curve", "nan"),
    ('[demand]\ncurve = [["00:00", -0.5], ["24:00", 0.1]]', "[demand] curve", "-0.5"),
    ('[demand]\ncurve = [["07:00"]]', "[demand] curve", "'07:00'"),
    ('[demand]\ncurve = [["00:00", 0.1], ["12:00", 0.5]]', "[demand] curve", "'12:00'"),
    ('[power]\noff_at = "25:99"', "[power] off_at", "'25:99'"),
    ('[demand]\nshift_changes = ["7h"]', "[demand] shift_changes", "'7h'"),
    ('[faults]\ncrash_window = ["08:00"]', "[faults] crash_window", "['08:00']"),
    ("[fleet]\nusers = 1000000000", "[fleet] users", "1000000000"),
    ("[fleet]\nhospitals = 100000000", "[fleet] hospitals", "100000000"),
    ("[fleet]\nservers = 0", "[fleet] servers", "0"),
    ("[fleet]\nzones = []", "[fleet] zones", "[]"),
    ('[fleet]\nzones = ["a", "a"]', "[fleet] zones", "['a', 'a']"),
    ('[fleet]\nrecords_load_rules = ["bogus"]', "[fleet] records_load_rules", "['bogus']"),
    ("[demand]\npeak_sessions = -5", "[demand] peak_sessions", "-5"),
    ('[demand]\npeak_sessions = "many"', "[demand] peak_sessions", "'many'"),
    ("[demand]\nmean_session_hours = 0.001", "[demand] peak_sessions", "17000"),
    ("[day]\nhours = 0", "[day] hours", "0.0"),
    ("[day]\nsample_seconds = 0", "[day] sample_seconds", "0"),
    ('[day]\npolicy = "diagonal"', "[day] policy", "'diagonal'"),
    ("[sessions]\nlogon_min_seconds = 200.0", "[sessions] logon_min_seconds", "200.0"),
    ("[sessions]\nworkstations_per_hospital = 0", "[sessions] workstations_per_hospital", "0"),
    ("[telemetry]\ncpu_noise = -1", "[telemetry] cpu_noise", "-1.0"),
    ("[power]\npolicy_interval_seconds = 0", "[power] policy_interval_seconds", "0"),
    ("[faults]\nenabled = true\nserver_crashes = 1000", "[faults] server_crashes", "1000"),
    ("[fleet]\nbogus = 1", "[fleet] bogus", "1"),
    ("[nonsense]\nx = 1", "[nonsense]", "None"),
    ("[fleet\nservers = 3", "", "None"),
]


@pytest.mark.parametrize("text, key, value", BAD, ids=[b[1] or "not-toml" for b in BAD])
def test_bad_scenario_exits_2_on_one_line(tmp_path, text, key, value):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", str(path)])
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit)
    out = r.output.strip()
    assert "Traceback" not in out
    assert len(out.splitlines()) == 1, out
    assert str(path) in out
    assert (key in out and value in out) if key else "not valid TOML" in out


def test_sizes_are_refused_before_allocating():
    # the limits are checked first: these would otherwise allocate gigabytes or loop for minutes
    for fleet in ({"users": MAX_USERS + 1}, {"hospitals": MAX_HOSPITALS + 1}, {"servers": 10**9}):
        with pytest.raises(ScenarioError):
            Scenario().with_changes(fleet=fleet)
    Scenario().with_changes(fleet={"users": MAX_USERS, "hospitals": MAX_HOSPITALS})  # the limits are allowed


@pytest.mark.parametrize("text", ["25:00", "24:01", "07:60", "07:30:60", "-1:00", "nan:00", "7", "07:3x"])
def test_clock_times_outside_the_day_are_refused(text):
    with pytest.raises(ScenarioError):
        clock_seconds(text)


@pytest.mark.parametrize("text, seconds", [("00:00", 0.0), ("07:30", 27_000.0), ("24:00", 86_400.0),
                                           ("07:30:15", 27_015.0), (3600, 3600.0)])
def test_clock_times_in_the_day(text, seconds):
    assert clock_seconds(text) == seconds


@pytest.mark.parametrize("kind", ["missing", "directory", "not_toml"])
def test_a_scenario_file_that_cannot_be_read_names_the_file_and_the_reason(tmp_path, kind):
    path = tmp_path / "day.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not_toml":
        path.write_text("[fleet\nservers = ")
    res = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", str(path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    message = res.output.strip().splitlines()[-1]  # a directory is refused by the option itself (usage + error)
    assert message.startswith("Error:") and str(path) in message and "=None" not in message
    reason = {"missing": "No such file", "directory": "is a directory", "not_toml": "not valid TOML"}[kind]
    assert reason in message
    with pytest.raises(ScenarioError):  # the error is a ScenarioError (an UsherError) in the API too
        Scenario.from_toml(path)
