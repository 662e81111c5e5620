"""``usher.formats.dispatch``: one operation -> one Scheduler call, for op Structs, plain
dicts in the trace format and fleet records; and the names the format derives from
the engine's enums."""

from __future__ import annotations

import msgspec
import pytest

import usher
from usher.core.codes import Outcome, Reason
from usher.formats import dispatch, trace
from usher.formats.errors import TraceError
from usher.formats.fleet import fleet_document, server_records
from usher.formats.specs import PoolSpec, ServerSpec, UserSpec

CONFIG = [
    {"t": 0.0, "op": "settings", "enforce_entitlement": True, "seed": 5, "sinbin_seconds": 30.0},
    {"t": 0.0, "op": "licences", "cap": 10},
    {"t": 0.0, "op": "pool", "name": "P", "zone_preference": ["user_location", "user_home"], "failover": True,
     "load_rules": ["sessions", "cpu"], "cpu_full": 90.0},
    {"t": 0.0, "op": "app", "name": "a", "pools": ["P"], "tag_restriction": None},
    {"t": 0.0, "op": "user", "id": "u1", "home_zone": "Z1", "apps": ["a"]},
    {"t": 0.0, "op": "user", "id": "7", "apps": ["a"]},
    {"t": 0.0, "op": "user", "id": "u3"},
    {"t": 0.0, "op": "server", "name": "s1", "zone": "Z1", "pool": "P", "tags": [], "max_sessions": 2,
     "weight": 100, "power": "on", "registered": True, "mode": "enabled", "image": "w"},
    {"t": 0.0, "op": "server", "name": "s2", "zone": "Z2", "pool": "P", "power": "off"},
]


def by_hand():
    """The CONFIG applied by direct Scheduler calls."""
    s = usher.Scheduler()
    s.settings(enforce_entitlement=True, seed=5, sinbin_seconds=30.0)
    s.set_licences(10)
    s.add_pool("P", zone_preference=["user_location", "user_home"], failover=True,
               load_rules=["sessions", "cpu"], cpu_full=90.0)
    s.add_app("a", ["P"], tag_restriction=None)
    s.add_user("u1", home_zone="Z1", apps=["a"])
    s.add_user("7", apps=["a"])
    s.add_user("u3")
    s.add_server("s1", "Z1", "P", tags=[], max_sessions=2, weight=100, power="on", registered=True,
                 mode="enabled", image="w", now=0.0)
    s.add_server("s2", "Z2", "P", power="off", now=0.0)
    return s


def same_config(a, b):
    assert fleet_document(a) == fleet_document(b)
    assert server_records(a) == server_records(b)
    assert a.licence_cap == b.licence_cap


@pytest.mark.parametrize("form", ["dict", "struct", "json"])
def test_apply_op_equals_the_direct_calls(form):
    s = usher.Scheduler()
    for op in CONFIG:
        if form == "struct":
            op = msgspec.convert(op, trace.Op)
        elif form == "json":
            op = trace.as_op(msgspec.json.encode(op))
        dispatch.apply_op(s, op)
    same_config(s, by_hand())


def test_apply_ops_loads_a_user_directory_at_once(monkeypatch):
    calls = []
    real = usher.Scheduler.add_users

    def spy(self, ids, **kw):
        calls.append(list(ids))
        return real(self, ids, **kw)

    monkeypatch.setattr(usher.Scheduler, "add_users", spy)
    s = dispatch.apply_ops(usher.Scheduler(), CONFIG)
    assert calls == [["u1", "7", "u3"]]
    same_config(s, by_hand())


def test_the_simulated_fleet_ops_are_accepted():
    """The simulator's configuration dicts (sim/scenario.py fleet_ops) go through
    apply_ops to the same fleet as the simulator's own builder."""
    from usher.sim.scenario import Scenario, build_scheduler, fleet_layout, fleet_ops

    sc = Scenario()
    ops = fleet_ops(sc, fleet_layout(sc))
    same_config(dispatch.apply_ops(usher.Scheduler(), ops), build_scheduler(ops))


def test_fleet_records_apply_without_a_time():
    s = usher.Scheduler()
    dispatch.apply_op(s, PoolSpec(name="P"))
    dispatch.apply_op(s, UserSpec(id="u"))
    dispatch.apply_op(s, ServerSpec(name="s1", zone="Z1", pool="P"))
    assert s.now is None and s.user_ids == ["u"]


def test_launch_and_session_ops_with_and_without_names():
    s = dispatch.apply_ops(usher.Scheduler(), CONFIG)
    d = dispatch.apply_op(s, {"t": 1.0, "op": "launch", "id": "r1", "user": "u1", "app": "a"})
    assert str(d.outcome) == "placed"
    # without a name map, session is the engine's id
    dispatch.apply_op(s, {"t": 2.0, "op": "logon_done", "session": d.session_id})
    sessions = {"r1": d.session_id, "r0": None}
    dispatch.apply_op(s, {"t": 3.0, "op": "disconnect", "session": "r1"}, sessions)
    with pytest.raises(usher.UnknownSession) as e:
        dispatch.apply_op(s, {"t": 4.0, "op": "logoff", "session": "r9"}, sessions)
    assert e.value.value == "r9"
    with pytest.raises(usher.UnknownSession, match="rejected"):
        dispatch.apply_op(s, {"t": 4.0, "op": "logoff", "session": "r0"}, sessions)
    dispatch.apply_op(s, {"t": 5.0, "op": "logoff", "session": "r1"}, sessions)
    with pytest.raises(usher.SessionEnded) as e:  # named as the trace names it
        dispatch.apply_op(s, {"t": 6.0, "op": "logoff", "session": "r1"}, sessions)
    assert e.value.field == "session" and e.value.value == "r1"


@pytest.mark.parametrize("bad, field", [
    ({"t": 0, "op": "frob"}, "op"),
    ({"t": 0, "op": "licences", "cap": 2**63}, "cap"),
    ({"t": 0, "op": "pool"}, "name"),
    ({"t": 0, "op": "pool", "name": "P", "colour": "red"}, "colour"),
    ({"op": "pool", "name": "P"}, "t"),
    ({"t": 0, "op": "user", "id": ["u"]}, "id"),
])
def test_a_bad_dict_raises_trace_error_and_changes_nothing(bad, field):
    s = usher.Scheduler()
    with pytest.raises(TraceError) as e:
        dispatch.apply_op(s, bad)
    assert e.value.field == field
    assert s.pool_names == [] and s.licence_cap is None


def test_not_an_operation():
    with pytest.raises(usher.InvalidArgument):
        dispatch.apply_op(usher.Scheduler(), ["pool", "P"])


def test_every_op_has_one_call():
    assert set(trace.OP_CLASSES) <= set(dispatch.CALLS)
    assert set(dispatch.SESSION_METHODS) <= set(trace.OP_CLASSES)


def test_outcome_and_reason_names_come_from_the_enums():
    assert trace.OUTCOME_NAMES == ("placed", "reconnected", "shared", "rejected")
    assert [trace.OUTCOME_NAMES[o] for o in Outcome] == [str(o) for o in Outcome]
    assert trace.REASON_NAMES[0] is None
    assert trace.REASON_NAMES[Reason.FULL] == "full" and len(trace.REASON_NAMES) == len(Reason)
    # the names a decision line carries are those of the engine's Decision
    s = dispatch.apply_ops(usher.Scheduler(), CONFIG)
    d = dispatch.apply_op(s, {"t": 1.0, "op": "launch", "id": "x", "user": "nobody", "app": "a"})
    assert trace.OUTCOME_NAMES[d.outcome_code] == str(d.outcome)
    assert trace.REASON_NAMES[d.reason_code] == str(d.reason)
