"""A day with a rollout exports a trace that replays with no error and the same decisions."""

import json

import pytest

from usher.formats.replay import replay
from usher.sim.day import simulate_day
from usher.sim.scenario import Scenario
from usher.sim.trace import TraceWriter


@pytest.mark.parametrize("bad", [False, True])
def test_a_rollout_day_replays(tmp_path, bad):
    scenario = Scenario().scaled(0.1).with_changes(
        day={"hours": 3.0},
        rollout={"enabled": True, "start": "00:00", "deadline": "02:00", "soak_minutes": 10.0,
                 "max_unavailable_pct": 25.0, "bad_image": bad})
    path = tmp_path / "day.jsonl"
    writer = TraceWriter(str(path))
    result = simulate_day(scenario, trace=writer, keep_decisions=True)
    writer.close()
    ops = {line.split('"op":')[1].split('"')[1] for line in path.read_text().splitlines()}
    assert "image" in ops  # the rollout's image changes are in the trace, each with the planner's reason
    image_lines = [json.loads(line) for line in path.read_text().splitlines() if '"op":"image"' in line]
    assert image_lines and all(isinstance(op.get("reason"), str) and op["reason"] for op in image_lines)
    if bad:
        assert "register" in ops  # a server that fails to register on the bad image
    replayed = replay(str(path))
    assert replayed.errors == []
    assert len(replayed.decisions) == len(result.decisions["outcome"])
    assert [d.server for d in replayed.decisions] == [
        result.server_names[s] if s >= 0 else None for s in result.decisions["server"]]
    assert replayed.scheduler.live_sessions == result.scheduler.live_sessions
