"""The dashboard's server side: the history ring, the sink and its endpoints (the
real ASGI app in process over an in-memory journal), the page's files as package
data, and ``usher demo`` playing a small day against a live ``usher serve``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from importlib import resources

import numpy as np
import pytest
from starlette.testclient import TestClient

import usher
import usher.journal as journal
from journal_workload import PRELUDE, stream
from usher.service.app import create_app
from usher.service.dashboard import Dashboard
from usher.service.dashboard_views import FLAG_SINBIN, FLAG_SLOW, fleet_grid
from usher.service.history import History, percentiles
from usher.service.metrics import Metrics


# ---------------------------------------------------------------- the ring
def test_history_buckets_by_operation_time_and_drops_the_oldest():
    h = History(bucket_seconds=60, buckets=3)
    assert h.at(0.0) is h.at(59.9)
    assert h.at(60.0).start == 60.0
    h.at(125.0).outcomes["placed"] += 1
    h.at(190.0)  # a fourth bucket: the first falls off
    assert [b.start for b in h.buckets()] == [60.0, 120.0, 180.0]
    assert h.at(10.0) is None  # before the ring
    assert h.at(float("nan")) is None
    assert [b["t"] for b in h.as_json(since=130.0)] == [120.0, 180.0]
    with pytest.raises(ValueError):
        History(bucket_seconds=0)
    with pytest.raises(ValueError):
        History(buckets=0)


def test_history_logon_percentiles_pool_the_last_buckets():
    h = History(bucket_seconds=10, buckets=100)
    values = {"Z0": [], "Z1": []}
    for k in range(40):
        zone = "Z0" if k % 3 else "Z1"
        h.at(float(k)).add_logon(zone, float(k % 7) + 1)
        values[zone].append(float(k % 7) + 1)
    got = h.logon_percentiles(last=100)
    for zone, v in values.items():
        assert got[zone]["n"] == len(v)
        assert [got[zone]["p50"], got[zone]["p95"]] == [round(float(x), 1) for x in np.percentile(v, [50, 95])]
    assert percentiles([]) == [None, None]


# ---------------------------------------------------------------- the app
@pytest.fixture
def app():
    j = journal.in_memory(clock=lambda: 0.0)
    dash = Dashboard(j, interval=0.05)
    return create_app(j, metrics=Metrics(j), dashboard=dash), j, dash


def _count_lines(texts):
    outcomes, reasons = Counter(), Counter()
    for text in texts:
        for line in text.splitlines():
            d = json.loads(line)
            if "outcome" in d:
                outcomes[d["outcome"]] += 1
                if d["reason"]:
                    reasons[d["reason"]] += 1
    return outcomes, reasons


def test_state_equals_the_summary_and_counts_every_decision(app):
    application, j, dash = app
    with TestClient(application) as c:
        assert c.post("/v1/ops", json=PRELUDE).status_code == 200
        answers = [c.post("/v1/ops", json=stream(seed, 150, t0=1.0 + 1000 * seed, prefix=f"s{seed}-")).text
                   for seed in (1, 2, 3)]
        state = c.get("/v1/dashboard/state").json()
        summary = c.get("/v1/summary").json()
    for key in ("sessions", "licences", "servers", "pools", "zones", "now"):
        assert state["summary"][key] == summary[key], key
    assert state["summary"]["pending"] == sum(z["pending_logons"] for z in summary["zones"].values())
    outcomes, reasons = _count_lines(answers)
    assert outcomes["rejected"] > 0 and outcomes["placed"] > 0
    got_outcomes, got_reasons = Counter(), Counter()
    for b in state["history"]:
        got_outcomes.update(b["outcomes"])
        got_reasons.update(b["rejected"])
        assert b["launches"] == sum(b["outcomes"].values())
    assert got_outcomes == outcomes
    assert got_reasons == reasons
    names = state["layout"]["name"]
    servers = {s["name"]: s for s in TestClient(application).get("/v1/servers").json()}
    assert sorted(names) == sorted(servers)
    for i, name in enumerate(names):
        assert state["fleet"]["load_index"][i] == servers[name]["load_index"]
        assert state["fleet"]["sessions"][i] == servers[name]["sessions"]
    assert state["actions"] and all(a["op"] in ("power", "mode") for a in state["actions"])


def test_logon_durations_are_launch_to_logon_done_per_zone(app):
    application, j, dash = app
    ops = [*PRELUDE,
           {"t": 10, "op": "launch", "id": "a", "user": "u0", "app": "b", "location": "Z0"},
           {"t": 11, "op": "launch", "id": "b", "user": "u1", "app": "b", "location": "Z1"},
           {"t": 30, "op": "logon_done", "session": "a"},
           {"t": 51, "op": "logon_done", "session": "b"}]
    with TestClient(application) as c:
        lines = [json.loads(x) for x in c.post("/v1/ops", json=ops).text.splitlines()]
        state = c.get("/v1/dashboard/state").json()
    zone = {d["id"]: d["zone"] for d in lines}
    assert state["logon"][zone["a"]]["p50"] == 20.0 or zone["a"] == zone["b"]
    durations = Counter()
    for b in state["history"]:
        for z, numbers in b["logon"].items():
            durations[z] += numbers["n"]
    assert durations == Counter([zone["a"], zone["b"]])
    if zone["a"] != zone["b"]:
        assert state["logon"][zone["b"]]["p95"] == 40.0


def test_the_sink_only_appends_on_the_request_path():
    j = journal.in_memory(clock=lambda: 0.0)
    dash = Dashboard(j)
    _submit(j, PRELUDE)
    launch_ops, launch_out = _submit(j, [{"t": 1, "op": "launch", "id": "x", "user": "u0", "app": "a"}])
    dash.on_applied(launch_ops, launch_out)  # outside an event loop: nothing folded yet
    assert dash.history.buckets() == [] and len(dash.decisions) == 0
    assert dash.turn()
    assert sum(b.outcomes.total() for b in dash.history.buckets()) == 1
    assert dash.decisions[-1]["id"] == "x"
    assert not dash.turn()  # nothing new: no work


def _submit(j, items):
    ops, outputs, ticket = j.submit(items)
    return ops, outputs


def test_search_a_user_a_server_and_nothing(app):
    application, j, dash = app
    with TestClient(application) as c:
        c.post("/v1/ops", json=PRELUDE)
        c.post("/v1/ops?explain=true", json=[{"t": 5, "op": "launch", "id": "k1", "user": "u2", "app": "a"}])
        user = c.get("/v1/dashboard/search", params={"q": "u2"}).json()
        assert [s["id"] for s in user["sessions"]] == ["k1"]
        assert user["decisions"][0]["id"] == "k1" and "pools" in user["decisions"][0]["explanation"]
        server = c.get("/v1/dashboard/search", params={"q": user["sessions"][0]["server"]}).json()
        assert server["server"]["name"] == user["sessions"][0]["server"]
        assert [s["id"] for s in server["sessions"]] == ["k1"]
        missing = c.get("/v1/dashboard/search", params={"q": "nobody"})
        assert missing.status_code == 404 and missing.json()["field"] == "q"
        empty = c.get("/v1/dashboard/search", params={"q": " "})
        assert empty.status_code == 422 and empty.json()["field"] == "q"


def test_fleet_actions_show_why_and_the_search_shows_a_servers_actions(app):
    application, j, dash = app
    why = "P: forecast 12 sessions at 07:40 needs 4 seats, 9 ready <script>alert(1)</script>"
    ops = [{"t": 5, "op": "mode", "server": "s1", "mode": "drain", "reason": why},
           {"t": 6, "op": "place_last", "servers": ["s2", "s3"], "flag": True, "reason": "rollout: next wave"},
           {"t": 7, "op": "power", "server": "s1", "state": "off"},
           {"t": 8, "op": "image", "server": "s9", "image": "v2", "reason": "not a server: refused"}]
    with TestClient(application) as c:
        c.post("/v1/ops", json=PRELUDE)
        c.post("/v1/ops", json=ops)
        state = c.get("/v1/dashboard/state").json()
        found = c.get("/v1/dashboard/search", params={"q": "s1"}).json()
        other = c.get("/v1/dashboard/search", params={"q": "s3"}).json()
    got = [(a["op"], a["server"], a["value"], a["reason"]) for a in state["actions"] if a["t"] >= 5]
    assert got == [("mode", "s1", "drain", why), ("place_last", "s2", True, "rollout: next wave"),
                   ("place_last", "s3", True, "rollout: next wave"), ("power", "s1", "off", None)]
    assert [(a["op"], a["reason"]) for a in found["actions"]] == [("power", None), ("mode", why)]  # newest first
    assert [a["reason"] for a in other["actions"]] == ["rollout: next wave"]
    js = resources.files("usher.service").joinpath("static", "dashboard.js").read_text()
    assert "innerHTML" not in js.split("function actionItem")[1].split("\n}")[0]  # the reason is text, not markup


def test_the_event_stream_starts_with_the_whole_state():
    j = journal.in_memory(clock=lambda: 0.0)
    dash = Dashboard(j)
    application = create_app(j, dashboard=dash)
    with TestClient(application) as c:
        c.post("/v1/ops", json=PRELUDE)
        with c.stream("GET", "/v1/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            first = next(r.iter_lines())
    assert first.startswith("data: ")
    state = json.loads(first[len("data: "):])
    assert state["summary"]["servers"]["total"] == 3
    assert len(state["layout"]["name"]) == 3 and state["history"]


def test_the_page_is_open_the_data_needs_the_token():
    j = journal.in_memory(clock=lambda: 0.0)
    with TestClient(create_app(j, token="sekrit")) as c:
        for path in ("/", "/static/dashboard.js", "/static/dashboard.css"):
            assert c.get(path).status_code == 200, path
        for path in ("/v1/dashboard/state", "/v1/dashboard/history", "/v1/events", "/v1/dashboard/search?q=x"):
            assert c.get(path).status_code == 401, path
        assert c.get("/v1/dashboard/state", headers={"authorization": "Bearer sekrit"}).status_code == 200
        assert c.get("/static/other.js").status_code == 401
    with TestClient(create_app(j, dashboard=False)) as c:
        assert c.get("/").status_code == 404


def test_the_page_ships_in_the_package_and_names_no_other_host():
    static = resources.files("usher.service").joinpath("static")
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = static.joinpath(name).read_text()
        urls = re.findall(r"[a-z]+://[^\s\"'`)]+", text)
        assert all(u.startswith("http://www.w3.org/") for u in urls), (name, urls)  # XML namespaces only
    html = static.joinpath("index.html").read_text()
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["/static/dashboard.css", "/openapi.json", "/metrics",
                                                          "/static/dashboard.js"]


def test_the_grid_marks_the_engines_slow_and_sinbinned_servers():
    s = usher.Scheduler(seed=1)
    s.add_pool("p", zone_preference=(), logon_tolerance=100, slow_logon_factor=2.0, slow_min_samples=3)
    s.add_app("a", ["p"])
    for k in range(3):
        s.add_server(f"s{k}", "z", "p", max_sessions=1000)
    t, k = 0.0, 0
    while min(r["logons"] for r in s.servers()) < 3:  # s0's logons take 6x longer
        k += 1
        d = s.launch(f"u{k}", "a", now=t)
        t += 60.0 if d.server == "s0" else 10.0
        s.logon_complete(d.session, now=t)
        s.logoff(d.session, now=t)
    rows = s.servers()
    assert [bool(x) for x in rows["slow"]] == [True, False, False]
    layout, columns = fleet_grid(rows)
    assert [bool(f & FLAG_SLOW) for f in columns["flags"]] == [True, False, False]
    assert not any(f & FLAG_SINBIN for f in columns["flags"])
    rows["sinbinned"][1] = True
    layout, columns = fleet_grid(rows)
    assert [bool(f & FLAG_SINBIN) for f in columns["flags"]] == [False, True, False]


# ---------------------------------------------------------------- usher demo
SMALL_DAY = """
name = "small-day"
[day]
hours = 2.0
[fleet]
hospitals = 3
servers = 40
users = 1500
licences = 1500
[demand]
peak_sessions = 400
"""


def test_usher_demo_plays_the_day_against_a_live_service(tmp_path):
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL_DAY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-m", "usher.cli", "demo", "--scenario", str(scenario), "--speed", "100000",
                          "--listen", f"127.0.0.1:{port}", "--exit-at-end", "--quiet", "--power", "autoscale"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    m = re.search(r"the day is over \(([\d,]+) operations applied, ([\d,]+) refused\)", out.stderr)
    assert m, out.stderr
    applied, refused = (int(x.replace(",", "")) for x in m.groups())
    # the same day written as a trace in process: every line was sent and applied
    import io

    from usher.planner import power_policy
    from usher.sim.days import simulate_days
    from usher.sim.scenario import Scenario
    from usher.sim.trace import TraceWriter

    sc = Scenario.from_toml(str(scenario))
    buf = io.BytesIO()
    writer = TraceWriter(buf)
    simulate_days(sc, power_policy=power_policy("autoscale", None, sc.power.policy_interval_seconds), trace=writer)
    writer.close()
    assert refused == 0
    assert applied == writer.lines > sc.fleet.servers + sc.fleet.users
