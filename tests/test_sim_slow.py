"""The simulator's ``slow_server`` fault and the pools' slow rule: the rule
keeps logons off the fault's servers, the day's trace carries the setting and
replays to the simulated decisions, and a day without either is untouched."""

from __future__ import annotations

import pytest

from usher.core.codes import Outcome
from usher.sim.day import simulate_day
from usher.sim.scenario import Scenario, ScenarioError
from usher.sim.trace import TraceWriter

SMALL = Scenario().scaled(0.1)
FAULT = {"enabled": True, "server_crashes": 0, "zone_outage": "", "slow_servers": 3}


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    path = tmp_path_factory.mktemp("slow") / "on.jsonl"
    writer = TraceWriter(str(path))
    on = simulate_day(SMALL.with_changes(faults=FAULT, fleet={"slow_logon_factor": 3.0}),
                      trace=writer, keep_decisions=True)
    writer.close()
    off = simulate_day(SMALL.with_changes(faults=FAULT))
    return on, off, path


def test_the_rule_keeps_logons_off_slow_servers(days):
    on, off, _ = days
    k_on, k_off = on.kpis, off.kpis
    assert k_on["slow.servers"] == k_off["slow.servers"] == 3
    assert k_off["slow.rule_factor"] == 0.0 and k_off["slow.marked_at_end"] == 0
    assert k_off["slow.logons_on_slow"] > 0
    assert k_on["slow.logons_on_slow"] < k_off["slow.logons_on_slow"] / 4
    assert k_on["slow.mean_logon_seconds"] < k_off["slow.mean_logon_seconds"]
    assert k_on["slow.marked_at_end"] >= 1
    for k in (k_on, k_off):
        assert k["books.mismatch"] == 0 and k["books.unexpected_decisions"] == 0


def test_the_day_with_the_rule_replays_to_the_same_decisions(days):
    import json

    import usher.formats.replay as replay_mod

    on, _, path = days
    with open(path) as fh:
        pools = [op for op in map(json.loads, fh) if op["op"] == "pool"]
    assert pools and all(op["slow_logon_factor"] == 3.0 for op in pools)
    replayed = replay_mod.replay(str(path))
    assert replayed.errors == []
    d = on.decisions
    names = on.server_names
    mine = [(d["id"][i], str(Outcome(d["outcome"][i])), names[d["server"][i]] if d["server"][i] >= 0 else None)
            for i in range(len(d["outcome"]))]
    assert [(r.id, r.outcome, r.server) for r in replayed.decisions] == mine
    assert replayed.scheduler.servers()["slow"].tolist() == on.scheduler.servers()["slow"].tolist()


def test_a_day_without_the_fault_or_the_rule_has_no_slow_kpis():
    day = simulate_day(SMALL.scaled(0.5))
    assert not any(k.startswith("slow.") for k in day.kpis)


@pytest.mark.parametrize("value", [0.5, 1.0])
def test_the_rule_factor_is_checked(value):
    with pytest.raises(ScenarioError, match="slow_logon_factor"):
        SMALL.with_changes(fleet={"slow_logon_factor": value}).validate()
