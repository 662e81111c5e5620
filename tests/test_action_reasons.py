"""Why a planner acted, carried end to end (docs/TRACE_FORMAT.md, "Server state"): the
optional ``reason`` of the power, mode, place_last, image and logoff ops is decoded,
kept and written back, ignored when the op is applied, and written by the simulator
for an action policy's actions."""

from __future__ import annotations

import io
import json

import msgspec
import pytest

from usher.formats.replay import replay
from usher.formats.trace import OPS, as_op

SERVERS = [
    {"t": 0, "op": "pool", "name": "P"},
    {"t": 0, "op": "app", "name": "a", "pools": ["P"]},
    {"t": 0, "op": "user", "id": "u0", "apps": ["a"]},
    {"t": 0, "op": "server", "name": "s1", "zone": "Z", "pool": "P", "max_sessions": 4},
    {"t": 0, "op": "server", "name": "s2", "zone": "Z", "pool": "P", "max_sessions": 4},
]
WITH_REASONS = [
    {"t": 1, "op": "launch", "id": "k1", "user": "u0", "app": "a"},
    {"t": 2, "op": "mode", "server": "s1", "mode": "drain", "reason": "P: 1 session, 8 seats ready, 4 needed"},
    {"t": 3, "op": "place_last", "servers": ["s2"], "flag": True, "reason": "rollout: <b>next</b> to reimage"},
    {"t": 4, "op": "image", "server": "s2", "image": "v2", "reason": "rollout wave 1"},
    {"t": 5, "op": "logoff", "session": "k1", "reason": "forced: s1 drained for 3600 s"},
    {"t": 6, "op": "power", "server": "s1", "state": "shutting_down", "reason": "P: surplus"},
    {"t": 7, "op": "launch", "id": "k2", "user": "u0", "app": "a"},
]


@pytest.mark.parametrize("line", WITH_REASONS[1:6], ids=lambda d: d["op"])
def test_a_reason_is_decoded_and_written_back_as_it_came(line):
    op = as_op(line)
    assert op.reason == line["reason"]
    assert msgspec.json.decode(msgspec.json.encode(op)) == line
    bare = {k: v for k, v in line.items() if k != "reason"}
    assert msgspec.json.decode(msgspec.json.encode(as_op(bare))) == bare  # absent: not written


def test_only_the_ops_a_planner_issues_have_a_reason():
    assert sorted(name for name, cls in OPS.items() if "reason" in cls.__struct_fields__) == [
        "image", "logoff", "mode", "place_last", "power"]


def test_replay_ignores_the_reason_and_refuses_one_that_is_not_text():
    with_reasons = replay([*SERVERS, *WITH_REASONS])
    without = replay([*SERVERS, *({k: v for k, v in d.items() if k != "reason"} for d in WITH_REASONS)])
    assert with_reasons.ok and without.ok
    assert with_reasons.decisions == without.decisions
    assert with_reasons.scheduler.server("s1")["mode"] == "drain"
    out = io.BytesIO()
    bad = replay([*SERVERS, {"t": 1, "op": "power", "server": "s1", "state": "off", "reason": 7}], out=out)
    err = json.loads(out.getvalue().decode().splitlines()[-1])
    assert not bad.ok and err["line"] == len(SERVERS) + 1 and "reason" in err["message"]
    assert bad.scheduler.server("s1")["power"] == "on"  # not applied


def test_the_journal_keeps_the_reason_and_recovery_ignores_it(tmp_path):
    import usher.journal as journal

    j = journal.open(tmp_path / "state", clock=lambda: 0.0)
    j.apply([*SERVERS, *WITH_REASONS])
    j.close()
    kept = [json.loads(x) for x in journal.trace_lines(tmp_path / "state")]
    assert [d.get("reason") for d in kept if d.get("reason")] == [d["reason"] for d in WITH_REASONS if "reason" in d]
    j = journal.open(tmp_path / "state")
    assert j.scheduler.server("s1")["power"] == "shutting_down"
    assert j.scheduler.server("s2")["image"] == "v2"
    j.close()


SMALL_DAY = """
name = "reasons-day"
[day]
hours = 3.0
[fleet]
hospitals = 2
servers = 30
users = 900
licences = 900
[demand]
peak_sessions = 300
"""


def _day_trace(tmp_path, policy):
    from usher.planner import power_policy
    from usher.sim.days import simulate_days
    from usher.sim.scenario import Scenario
    from usher.sim.trace import TraceWriter

    path = tmp_path / "small.toml"
    path.write_text(SMALL_DAY)
    sc = Scenario.from_toml(str(path))
    buf = io.BytesIO()
    writer = TraceWriter(buf)
    simulate_days(sc, power_policy=power_policy(policy, None, sc.power.policy_interval_seconds), trace=writer)
    writer.close()
    return [json.loads(x) for x in buf.getvalue().decode().splitlines()]


def test_an_autoscale_day_traces_its_reasons_and_replays_to_the_same_decisions(tmp_path):
    lines = _day_trace(tmp_path, "autoscale")
    acted = [d for d in lines if d["op"] in ("power", "mode", "place_last") and "reason" in d]
    assert acted, "the planner's actions carry their reasons"
    assert all(isinstance(d["reason"], str) and d["reason"] for d in acted)
    assert not any("reason" in d for d in lines if d["op"] not in ("power", "mode", "place_last", "image", "logoff"))
    got = replay(lines)
    assert got.ok, got.errors
    stripped = replay([{k: v for k, v in d.items() if k != "reason"} for d in lines])
    assert stripped.ok and got.decisions == stripped.decisions
    assert got.launches > 0

