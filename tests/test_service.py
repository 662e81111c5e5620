"""The ASGI app of ``usher serve`` through httpx (Starlette's TestClient): every
endpoint, auth, body limit, error shapes, decision lines equal to ``usher replay``'s,
metrics and the decision log, and a hypothesis fuzz of /v1/ops bodies (never a 500,
state unchanged after an error)."""

from __future__ import annotations

import io
import json
import logging
import warnings

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette >= 1.0 prefers httpx2 for its test client; httpx works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import usher.journal as journal
from journal_workload import PRELUDE, state_of, stream
from usher.formats.replay import replay
from usher.service.app import create_app
from usher.service.decision_log import DecisionLog, JsonFormatter
from usher.service.metrics import Metrics


def make(tmp_path=None, token=None, max_body=1 << 20, clock=lambda: 0.0):
    j = journal.open(tmp_path / "j", clock=clock) if tmp_path is not None else journal.in_memory(clock=clock)
    metrics = Metrics(j)
    j.set_on_flush(metrics.on_flush)
    app = create_app(j, token=token, metrics=metrics, decision_log=DecisionLog(), max_body=max_body)
    return j, TestClient(app, raise_server_exceptions=False)


def ndjson(response):
    return [json.loads(x) for x in response.text.splitlines()]


def test_ops_answer_the_lines_usher_replay_writes(tmp_path):
    ops = PRELUDE + stream(11, 300)
    j, client = make(tmp_path)
    got = []
    for k in range(0, len(ops), 37):
        r = client.post("/v1/ops", json=ops[k:k + 37])
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        got += [x for x in ndjson(r) if "outcome" in x]
    out = io.BytesIO()
    replay([json.dumps(o) for o in ops], out=out)
    expected = [json.loads(x) for x in out.getvalue().splitlines()]
    assert got == [x for x in expected if "outcome" in x]
    j.close()
    assert state_of(journal.recover(tmp_path / "j").replayer) == state_of(j.replayer)


def test_single_op_t_optional_and_errors_422(tmp_path):
    j, client = make(tmp_path, clock=lambda: 50.0)
    assert client.post("/v1/ops", json=PRELUDE).status_code == 200
    r = client.post("/v1/ops", json={"op": "launch", "id": "r1", "user": "u1", "app": "a"})
    (d,) = ndjson(r)
    assert d["t"] == 50.0 and d["outcome"] == "placed" and d["session"] == "r1"
    before = state_of(j.replayer), j.seq
    for body, field in [({"op": "logoff", "session": "nope"}, "session"),
                        ({"op": "launch", "id": "r1", "user": "u1", "app": "a"}, "id"),
                        ({"op": "launch", "id": 1.5, "user": "u1", "app": "a"}, "id"),
                        ({"op": "frobnicate"}, "op"),
                        ({"op": "power", "server": "s1", "state": "sideways"}, "state")]:
        r = client.post("/v1/ops", json=body)
        assert r.status_code == 422, body
        e = r.json()
        assert set(e) == {"error", "field", "message"} and e["field"] == field, e
    assert (state_of(j.replayer), j.seq) == before
    r = client.post("/v1/ops", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"] == "MalformedJSON"
    r = client.post("/v1/ops", content=b"42")
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert (state_of(j.replayer), j.seq) == before


def test_clock_wall_or_from_zero_and_explicit_t_never_goes_back(tmp_path):
    from usher.cli.serve import make_clock

    launch = lambda rid, **t: {"op": "launch", "id": rid, "user": "u1", "app": "b", **t}  # noqa: E731
    # wall: an op without t is at the epoch's seconds, so a small explicit t after it goes back
    j, client = make(tmp_path / "wall", clock=make_clock("wall", float("-inf")))
    assert client.post("/v1/ops", json=[{k: v for k, v in op.items() if k != "t"} for op in PRELUDE]).status_code == 200
    r = client.post("/v1/ops", json=launch("r1", t=5.0))
    assert r.status_code == 422 and r.json()["error"] == "TimeWentBackwards"
    j.close()
    # monotonic-from-zero: the same client may then send small explicit t
    j, client = make(tmp_path / "zero", clock=make_clock("monotonic-from-zero", float("-inf")))
    assert client.post("/v1/ops", json=[{k: v for k, v in op.items() if k != "t"} for op in PRELUDE]).status_code == 200
    assert 0.0 <= j.replayer.last_t < 3600.0
    (d,) = ndjson(client.post("/v1/ops", json=launch("r1", t=3600.0)))
    assert d["t"] == 3600.0
    (d,) = ndjson(client.post("/v1/ops", json=launch("r2")))
    assert d["t"] == 3600.0  # never earlier than the last op's t
    r = client.post("/v1/ops", json=launch("r3", t=10.0))
    assert r.status_code == 422 and r.json()["error"] == "TimeWentBackwards"
    j.close()
    # recovered, the clock counts on from the state's last t
    reopened = journal.open(tmp_path / "zero" / "j")
    assert make_clock("monotonic-from-zero", reopened.replayer.last_t)() >= 3600.0
    reopened.close()


def test_array_applies_the_good_ops_and_reports_the_bad(tmp_path):
    j, client = make(tmp_path)
    client.post("/v1/ops", json=PRELUDE)
    r = client.post("/v1/ops", json=[
        {"t": 1, "op": "launch", "id": "a1", "user": "u1", "app": "a"},
        {"t": 1, "op": "logoff", "session": "zz"},
        {"t": 2, "op": "launch", "id": "a2", "user": "u2", "app": "a"}])
    lines = ndjson(r)
    assert [x.get("outcome", x.get("error")) for x in lines] == ["placed", "UnknownSession", "placed"]
    assert lines[1]["line"] == 2
    assert r.headers["x-usher-applied"] == "2" and r.headers["x-usher-errors"] == "1"


def test_views(tmp_path):
    j, client = make(tmp_path)
    client.post("/v1/ops", json=PRELUDE + [{"t": 0, "op": "licences", "cap": 1},
                                          {"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a"},
                                          {"t": 1, "op": "launch", "id": "r2", "user": "u2", "app": "a"}])
    s = client.get("/v1/sessions/r1").json()
    assert s["id"] == "r1" and s["user"] == "u1" and s["state"] == "launching"
    assert client.get("/v1/sessions/r2").status_code == 404  # rejected
    assert client.get("/v1/sessions/zz").json()["error"] == "UnknownSession"
    servers = client.get("/v1/servers").json()
    assert sorted(x["name"] for x in servers) == ["s1", "s2", "s3"]
    assert client.get("/v1/servers/s1").json()["name"] == "s1"
    assert client.get("/v1/servers/nope").status_code == 404
    summary = client.get("/v1/summary").json()
    assert summary["sessions"] == 1 and summary["licences"]["in_use"] == 1
    assert summary["servers"]["total"] == 3 and sum(p["sessions"] for p in summary["pools"].values()) == 1
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    doc = client.get("/openapi.json").json()
    assert "/v1/ops" in doc["paths"] and "t" not in doc["components"]["schemas"]["LaunchOp"]["required"]
    assert client.get("/nowhere").status_code == 404
    assert client.get("/v1/ops").status_code == 405


def test_metrics_and_decision_log(tmp_path, caplog):
    j, client = make(tmp_path)
    caplog.set_level(logging.INFO, logger="usher.decisions")
    client.post("/v1/ops", json=PRELUDE + [{"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a"},
                                          {"t": 4, "op": "logon_done", "session": "r1"}],
                headers={"x-request-id": "req-7"})
    text = client.get("/metrics").text
    assert 'usher_decisions_total{outcome="placed",reason=""} 1.0' in text
    assert "usher_logon_duration_seconds_count" in text and 'pool="P"' in text
    assert "usher_sessions{" in text and "usher_servers{" in text and "usher_licences_in_use 1.0" in text
    assert "usher_journal_records_total" in text and "usher_snapshot_age_seconds" in text
    (rec,) = [r for r in caplog.records if r.name == "usher.decisions"]
    line = json.loads(JsonFormatter().format(rec))
    assert line["request_id"] == "req-7" and line["user"] == "u1" and line["outcome"] == "placed"
    assert {"time", "server", "zone", "load_index", "latency_ms", "reason", "location", "app"} <= set(line)


def test_auth_and_body_limit():
    j, client = make(token="s3cret", max_body=1000)
    assert client.get("/healthz").status_code == 200
    r = client.get("/v1/summary")
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    assert client.get("/v1/summary", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/summary", headers=auth).status_code == 200
    r = client.post("/v1/ops", content=b"[" + b"1," * 600 + b"1]", headers=auth)
    assert r.status_code == 413 and r.json()["field"] == "body"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["launch", "logoff", "logon_done", "power", "mode", "telemetry", "server", "pool", "x"])},
    optional={"t": st.one_of(st.floats(), st.integers(-5, 10 ** 6)), "id": _json_values, "user": st.sampled_from(["u1", "u2", 3]),
              "app": st.sampled_from(["a", "b", "zz"]), "session": _json_values, "server": st.sampled_from(["s1", "s9"]),
              "state": st.text(max_size=6), "mode": st.sampled_from(["drain", "enabled", "?"]), "cpu": _json_values},
)
_bodies = st.one_of(_ops, st.lists(_ops | _json_values, max_size=6), _json_values)

_FUZZ = {}


def _fuzz_client():
    if not _FUZZ:
        j, client = make()
        client.post("/v1/ops", json=PRELUDE)
        _FUZZ.update(j=j, client=client)
    return _FUZZ["j"], _FUZZ["client"]


@given(body=_bodies, raw=st.binary(max_size=40) | st.none())
def test_fuzz_ops_never_500_and_errors_change_nothing(body, raw):
    j, client = _fuzz_client()
    before = state_of(j.replayer)
    try:
        payload = raw if raw is not None else msgspec.json.encode(body)
    except (OverflowError, ValueError, TypeError):
        return
    r = client.post("/v1/ops", content=payload)
    assert r.status_code in (200, 400, 413, 422), r.text
    if r.status_code != 200:
        assert set(r.json()) == {"error", "field", "message"}
        assert state_of(j.replayer) == before
    else:
        applied = int(r.headers["x-usher-applied"])
        if applied == 0:
            assert state_of(j.replayer) == before
    assert client.get("/healthz").status_code == 200


def test_typed_body_decoding_equals_the_general_way():
    from usher.formats.trace import OP_DECODER, BadLine, decode_item
    from usher.service import opsbody

    items = PRELUDE + stream(3, 300, t0=100.0, prefix="d")
    items = [{k: v for k, v in op.items() if k != "t" or n % 2} for n, op in enumerate(items)]
    general = [decode_item(OP_DECODER, op if "t" in op else {**op, "t": 42.0}) for op in items]
    good = [k for k, op in enumerate(general) if not isinstance(op, BadLine)]
    assert len(good) < len(items)  # the workload holds bad ops: such a body goes the general way
    assert opsbody.decode(msgspec.json.encode(items), lambda: 42.0) is None
    typed, single = opsbody.decode(msgspec.json.encode([items[k] for k in good]), lambda: 42.0)
    assert not single and typed == [general[k] for k in good]
    for bad in (b'{"op":"launch","id":"a","user":"u","app":"x","t":null}', b'[{"op":"frobnicate"}]',
                b'{"op":"launch","id":"a","user":"u","app":"x","colour":1}', b"[1]", b"{"):
        assert opsbody.decode(bad, lambda: 0.0) is None, bad


def test_op_first_bodies_decode_in_one_pass_as_in_two(monkeypatch):
    """A compact body with ``"op"`` first in every op is stamped with the server's time
    in its text; it must decode exactly as the same ops written otherwise (spaces
    after the braces, which the two-pass way reads), an op's own ``t`` winning."""
    from usher.service import opsbody

    from usher.formats.trace import OP_DECODER, BadLine, decode_item

    items = [op for op in PRELUDE + stream(5, 200, t0=100.0, prefix="o")
             if not isinstance(decode_item(OP_DECODER, op), BadLine)]  # well-formed ops only
    items = [{"op": op["op"], **{k: v for k, v in op.items() if k != "op" and (k != "t" or n % 3 == 0)}}
             for n, op in enumerate(items)]
    compact = msgspec.json.encode(items)
    spaced = compact.replace(b'{"op":', b'{ "op":')
    assert compact.count(b'{"op":') == len(items) and b'{"op":' not in spaced
    calls = []

    def now():
        calls.append(1)
        return 42.25

    two_pass = opsbody.decode(spaced, lambda: 42.25)
    loose = opsbody._DECODERS[0]

    class NotCalled:
        def decode(self, body):
            raise AssertionError("a compact op-first body took the two-pass way")

    monkeypatch.setattr(opsbody, "_DECODERS", (NotCalled(), *opsbody._DECODERS[1:]))
    typed, single = opsbody.decode(compact, now)
    assert opsbody.decode(msgspec.json.encode(items[-1]), lambda: 42.25) == ([typed[-1]], True)
    monkeypatch.setattr(opsbody, "_DECODERS", (loose, *opsbody._DECODERS[1:]))
    assert not single and len(calls) == 1
    assert (typed, single) == two_pass
    assert {op.t for n, op in enumerate(typed) if n % 3} == {42.25}
    assert [op.t for n, op in enumerate(typed) if n % 3 == 0] == [op["t"] for n, op in enumerate(items) if n % 3 == 0]
    for bad in (b'{"op":"launch","id":"a","user":"u","app":"x","t":null}', b'[{"op":"launch","id":{"op":1}}]',
                b'[{"op":"logoff","session":"s"},{"op":"frobnicate"}]', b'{"op":"launch","id":"a"} x'):
        assert opsbody.decode(bad, lambda: 0.0) is None, bad
