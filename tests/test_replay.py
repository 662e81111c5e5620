"""``usher replay`` and ``usher.formats.replay.replay`` (docs/TRACE_FORMAT.md): every op,
every error kind, session naming, replay == calling the API directly (batched and
line by line), input/output variants, the command line, and a hypothesis test that
random traces never crash the replay nor break a hard constraint.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import random

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import event, given
from hypothesis import strategies as st

import usher
import usher.formats.replay as replay_module
import usher.formats.trace as trace_module
from usher.cli import main
from usher.formats.replay import LaunchDecision, LineError, Replayer, TraceError, replay

PRELUDE = [
    {"t": 0, "op": "settings", "seed": 3},
    {"t": 0, "op": "pool", "name": "P", "zone_preference": ["user_location", "user_home"], "logon_tolerance": 2},
    {"t": 0, "op": "pool", "name": "Q", "external_access": True, "max_sessions_per_user": 1},
    {"t": 0, "op": "app", "name": "a", "pools": ["P", "Q"]},
    {"t": 0, "op": "app", "name": "b", "pools": ["P"], "max_instances_per_user": 1},
    {"t": 0, "op": "app", "name": "g", "pools": ["Q"], "tag_restriction": "gpu"},
    {"t": 0, "op": "user", "id": "u1", "home_zone": "Z1", "apps": ["a", "b", "g"]},
    {"t": 0, "op": "user", "id": "u2", "home_zone": "Z2", "apps": ["a"]},
    {"t": 0, "op": "server", "name": "s1", "zone": "Z1", "pool": "P", "max_sessions": 3},
    {"t": 0, "op": "server", "name": "s2", "zone": "Z2", "pool": "P", "max_sessions": 3},
    {"t": 0, "op": "server", "name": "s3", "zone": "Z1", "pool": "Q", "tags": ["gpu"], "max_sessions": 2},
]


def jl(*ops) -> list[str]:
    return [json.dumps(o) if isinstance(o, dict) else o for o in ops]


def run(*ops, scheduler=None, **kw):
    return replay(jl(*PRELUDE, *ops), scheduler=scheduler, **kw)


def as_dicts(decisions):
    return [msgspec.to_builtins(d) for d in decisions]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    """Batch even short runs, so that the batch paths (and their fallback to line by
    line) are exercised by every test; production thresholds are tuned for speed."""
    monkeypatch.setattr(replay_module, "_MIN_LAUNCH_RUN", 4)
    monkeypatch.setattr(replay_module, "_MIN_TELEMETRY_RUN", 4)
    monkeypatch.setattr(replay_module, "_MIN_USER_RUN", 4)


# ---------------------------------------------------------------- the direct driver
def drive(lines, s):
    """The trace applied by calling the public API directly, one line at a time:
    (decision dicts, [(line, error class name)]). Lines must be well-formed ops."""
    names, creator = {}, {}
    last = -math.inf if s.now is None else s.now
    decisions, errors = [], []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        d = json.loads(raw)
        t, op = d.pop("t"), d.pop("op")
        try:
            if t < last:
                raise usher.TimeWentBackwards("t", t)
            if op == "settings":
                s.settings(**d)
            elif op == "licences":
                s.set_licences(d["cap"])
            elif op == "pool":
                s.add_pool(**d)
            elif op == "app":
                s.add_app(**d)
            elif op == "user":
                s.add_user(**d)
            elif op == "server":
                s.add_server(**d, now=t)
            elif op == "remove_server":
                s.remove_server(d["server"], d.get("force", False), now=t)
            elif op == "power":
                s.set_power(d["server"], d["state"], now=t)
            elif op == "register":
                s.set_registered(d["server"], d["registered"], now=t)
            elif op == "mode":
                s.set_mode(d["server"], d["mode"], now=t)
            elif op == "telemetry":
                s.telemetry(d["server"], d.get("cpu"), d.get("mem"), d.get("disk_queue"), d.get("custom"), now=t)
            elif op == "launch":
                rid = d["id"]
                if rid in names:
                    raise usher.DuplicateName("id", rid)
                dec = s.launch(d["user"], d["app"], d.get("location"), d.get("endpoint"),
                               d.get("external", False), now=t)
                if dec.outcome == usher.Outcome.REJECTED:
                    names[rid] = None
                    session = None
                else:
                    names[rid] = dec.session
                    if dec.outcome == usher.Outcome.PLACED:
                        creator[dec.session] = rid
                    session = creator.setdefault(dec.session, rid)
                decisions.append(dict(t=float(t), id=rid, outcome=str(dec.outcome), server=dec.server,
                                      zone=dec.zone, session=session,
                                      reason=None if dec.reason is None else str(dec.reason),
                                      load_index=dec.load_index))
            else:
                sid = names.get(d["session"])
                if sid is None:
                    raise usher.UnknownSession("session", d["session"])
                if op == "close_app":
                    s.close_app(sid, d["app"], now=t)
                else:
                    method = {"logon_done": s.logon_complete, "disconnect": s.disconnect,
                              "logoff": s.logoff, "launch_failed": s.launch_failed}[op]
                    method(sid, now=t)
        except usher.UsherError as e:
            errors.append((n, type(e).__name__))
            continue
        last = t
    return decisions, errors


def random_trace(seed: int, n: int = 600) -> list[str]:
    """Well-formed ops with bursts of launches and telemetry, and errors of every
    semantic kind sprinkled in (unknown names, bad values, time going back, ...)."""
    rng = random.Random(seed)
    out = list(PRELUDE)
    t = 1.0
    ids = []
    servers = ["s1", "s2", "s3", "s4", "ghost"]
    users = ["u1", "u2", "u3", "u4"]
    k = 0
    while len(out) < n:
        t += rng.choice([0.0, 0.0, 0.5, 3.0, 40.0])
        r = rng.random()
        if r < 0.35:  # a burst of launches
            for _ in range(rng.randint(1, 9)):
                rid = f"r{k}" if rng.random() > 0.05 or not ids else rng.choice(ids)  # some duplicates
                k += 1
                ids.append(rid)
                op = {"t": t, "op": "launch", "id": rid, "user": rng.choice(users),
                      "app": rng.choice(["a", "a", "b", "g", "nope"] if rng.random() < 0.1 else ["a", "a", "b", "g"]),
                      "location": rng.choice([None, "Z1", "Z2", "Z9"]),
                      "endpoint": rng.choice([None, "e1", "e2"]), "external": rng.random() < 0.1}
                if rng.random() < 0.03:
                    op["t"] = t - 5  # time goes back inside a burst
                out.append(op)
                t += rng.choice([0.0, 0.1])
        elif r < 0.55:  # a burst of telemetry
            fields = rng.choice([("cpu",), ("cpu", "mem"), ("disk_queue",), ("custom",)])
            for _ in range(rng.randint(1, 8)):
                op = {"t": t, "op": "telemetry", "server": rng.choice(servers[:4] if rng.random() < 0.95 else servers)}
                for f in fields:
                    op[f] = rng.choice([10.0, 50.0, 95.0]) if rng.random() > 0.04 else 150.0
                out.append(op)
        elif r < 0.85 and ids:
            op = rng.choice(["logon_done", "logon_done", "disconnect", "logoff", "close_app", "launch_failed"])
            ref = rng.choice(ids) if rng.random() > 0.05 else "nobody"
            o = {"t": t, "op": op, "session": ref}
            if op == "close_app":
                o["app"] = rng.choice(["a", "b"])
            out.append(o)
        else:
            op = rng.choice(["power", "mode", "register", "remove_server", "server", "licences"])
            srv = rng.choice(servers)
            if op == "power":
                out.append({"t": t, "op": op, "server": srv, "state": rng.choice(["on", "on", "off", "booting"])})
            elif op == "mode":
                out.append({"t": t, "op": op, "server": srv, "mode": rng.choice(["enabled", "drain", "maintenance"])})
            elif op == "register":
                out.append({"t": t, "op": op, "server": srv, "registered": rng.random() < 0.7})
            elif op == "remove_server":
                out.append({"t": t, "op": op, "server": srv, "force": rng.random() < 0.5})
            elif op == "server":
                out.append({"t": t, "op": op, "name": rng.choice(servers), "zone": rng.choice(["Z1", "Z2"]),
                            "pool": rng.choice(["P", "Q", "R"]), "max_sessions": rng.choice([1, 2, 4])})
            else:
                out.append({"t": t, "op": op, "cap": rng.choice([None, 3, 10])})
    return jl(*out)


# ---------------------------------------------------------------- ops
def test_every_op_applies():
    r = run(
        {"t": 1, "op": "licences", "cap": 100},
        {"t": 1, "op": "settings", "enforce_entitlement": True, "sinbin_seconds": 30.0, "pending_timeout": 60.0},
        {"t": 2, "op": "telemetry", "server": "s1", "cpu": 45.0, "mem": 60.0, "disk_queue": 1.0, "custom": None},
        {"t": 3, "op": "launch", "id": "r1", "user": "u1", "app": "a", "location": "Z1", "endpoint": "pc-42",
         "external": False},
        {"t": 4, "op": "logon_done", "session": "r1"},
        {"t": 5, "op": "launch", "id": "r2", "user": "u1", "app": "b", "location": "Z1", "endpoint": "pc-42"},
        {"t": 6, "op": "close_app", "session": "r2", "app": "b"},
        {"t": 7, "op": "disconnect", "session": "r1"},
        {"t": 8, "op": "launch", "id": "r3", "user": "u2", "app": "a", "location": "Z2"},
        {"t": 9, "op": "launch_failed", "session": "r3"},
        {"t": 10, "op": "register", "server": "s2", "registered": False},
        {"t": 11, "op": "mode", "server": "s2", "mode": "drain"},
        {"t": 12, "op": "power", "server": "s2", "state": "off"},
        {"t": 13, "op": "remove_server", "server": "s2", "force": False},
        {"t": 14, "op": "server", "name": "s9", "zone": "Z2", "pool": "P", "tags": ["imaging"], "max_sessions": 20,
         "weight": 100, "power": "on", "registered": True, "mode": "enabled", "image": "v1"},
        {"t": 15, "op": "logoff", "session": "r1"},
    )
    s = r.scheduler
    assert not r.errors, r.errors
    assert [d.outcome for d in r.decisions] == ["placed", "shared", "placed"]
    assert s.licence_cap == 100 and s.enforce_entitlement and s.sinbin_seconds == 30.0
    assert s.pending_timeout == 60.0 and s.seed == 3
    assert s.server("s1")["cpu"] == 45.0 and s.server("s1")["mem"] == 60.0
    assert "s2" not in s.server_names() and s.server("s9")["image"] == "v1"
    assert s.live_sessions == 0 and s.now == 15.0
    assert r.ops == len(PRELUDE) + 16 and r.launches == 3


def test_decision_line_format():
    out = io.BytesIO()
    run({"t": 1.5, "op": "launch", "id": "r1", "user": "u1", "app": "a", "location": "Z1"},
        {"t": 2, "op": "launch", "id": "r2", "user": "u1", "app": "g", "external": True},
        {"t": 3, "op": "logon_done", "session": "zz"}, out=out)
    lines = out.getvalue().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["t", "id", "outcome", "server", "zone", "session", "reason", "load_index"]
    assert first == {"t": 1.5, "id": "r1", "outcome": "placed", "server": "s1", "zone": "Z1", "session": "r1",
                     "reason": None, "load_index": 3333}
    second = json.loads(lines[1])
    assert second["outcome"] == "placed" and second["server"] == "s3"
    err = json.loads(lines[2])
    assert list(err) == ["t", "line", "error", "message"]
    assert err["line"] == len(PRELUDE) + 3 and err["error"] == "UnknownSession" and "zz" in err["message"]


def test_rejection_reasons_are_named():
    r = run({"t": 1, "op": "licences", "cap": 1},
            {"t": 2, "op": "launch", "id": "r1", "user": "u1", "app": "a"},
            {"t": 3, "op": "launch", "id": "r2", "user": "u2", "app": "a"},
            {"t": 4, "op": "launch", "id": "r3", "user": "u1", "app": "a", "external": True, "endpoint": "x"})
    assert [(d.outcome, d.reason) for d in r.decisions] == [
        ("placed", None), ("rejected", "licence_exhausted"), ("placed", None)]
    assert r.decisions[2].server == "s3"  # external: only pool Q; u1 already holds a licence
    assert r.outcomes == {"placed": 2, "rejected:licence_exhausted": 1}
    assert r.decisions[1].server is None and r.decisions[1].load_index is None


def test_session_named_by_every_launch_into_it():
    r = run({"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a", "endpoint": "pc"},
            {"t": 2, "op": "logon_done", "session": "r1"},
            {"t": 3, "op": "disconnect", "session": "r1"},
            {"t": 4, "op": "launch", "id": "r7", "user": "u1", "app": "a", "endpoint": "laptop"},
            {"t": 5, "op": "launch", "id": "r8", "user": "u1", "app": "b", "endpoint": "laptop"},
            {"t": 6, "op": "close_app", "session": "r8", "app": "b"},
            {"t": 7, "op": "disconnect", "session": "r7"},
            {"t": 8, "op": "logoff", "session": "r1"},
            {"t": 9, "op": "logoff", "session": "r8"})
    assert [(d.id, d.outcome, d.session) for d in r.decisions] == [
        ("r1", "placed", "r1"), ("r7", "reconnected", "r1"), ("r8", "shared", "r1")]
    assert [(e.line - len(PRELUDE), e.error) for e in r.errors] == [(9, "SessionEnded")]
    assert "'r8'" in r.errors[0].message


def test_explain_attaches_the_explanation():
    r = run({"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a", "location": "Z1"}, explain=True)
    (d,) = r.decisions
    s2 = usher.Scheduler()
    replay(jl(*PRELUDE), scheduler=s2)
    expected = s2.launch("u1", "a", "Z1", now=1.0, explain=True).explanation.to_dict()
    assert d.explanation == expected and d.explanation["pools"][0]["pool"] == "P"
    line = msgspec.json.decode(msgspec.json.encode(d))
    assert line["explanation"]["server"] == "s1"
    assert "explanation" not in msgspec.to_builtins(run({"t": 1, "op": "launch", "id": "r1", "user": "u1",
                                                         "app": "a"}).decisions[0])


# ---------------------------------------------------------------- errors
ERRORS = [
    ('{"t":1,"op":"launch","id":"x"', "TraceError", "malformed JSON"),
    ("[1,2]", "TraceError", "object"),
    ('{"t":1,"op":"frob"}', "TraceError", "unknown op"),
    ('{"t":1}', "TraceError", "op"),
    ('{"t":1,"op":"launch","id":"x","user":"u1","app":"a","colour":"red"}', "TraceError", "colour"),
    ('{"t":1,"op":"launch","id":"x","user":"u1"}', "TraceError", "app"),
    ('{"op":"logoff","session":"r1"}', "TraceError", "t"),
    ('{"t":"soon","op":"logoff","session":"r1"}', "TraceError", "t"),
    ('{"t":1,"op":"telemetry","server":"s1","cpu":"hot"}', "TraceError", "cpu"),
    ('{"t":1,"op":"telemetry","server":"s1","cpu":150.0}', "InvalidArgument", "cpu"),
    ('{"t":1,"op":"power","server":"s1","state":"sleepy"}', "InvalidArgument", "state"),
    ('{"t":1,"op":"mode","server":"ghost","mode":"drain"}', "UnknownServer", "ghost"),
    ('{"t":1,"op":"telemetry","server":"ghost","cpu":1.0}', "UnknownServer", "ghost"),
    ('{"t":1,"op":"launch","id":"x","user":"u1","app":"nope"}', "UnknownApp", "nope"),
    ('{"t":1,"op":"launch","id":"r0","user":"u1","app":"a"}', "DuplicateName", "r0"),
    ('{"t":1,"op":"logoff","session":"nobody"}', "UnknownSession", "nobody"),
    ('{"t":1,"op":"logon_done","session":"r0"}', "InvalidState", "r0"),
    ('{"t":1,"op":"close_app","session":"r0","app":"b"}', "InvalidArgument", "b"),
    ('{"t":1,"op":"close_app","session":"r0","app":"nope"}', "UnknownApp", "nope"),
    ('{"t":1,"op":"remove_server","server":"s1"}', "ServerBusy", "s1"),
    ('{"t":0.5,"op":"logoff","session":"r0"}', "TimeWentBackwards", "earlier"),
    ('{"t":1,"op":"pool","name":"P"}', "DuplicateName", "P"),
    ('{"t":1,"op":"pool","name":"R","load_balancing":"diagonal"}', "InvalidArgument", "diagonal"),
    ('{"t":1,"op":"app","name":"c","pools":["nope"]}', "UnknownPool", "nope"),
    ('{"t":1,"op":"server","name":"s1","zone":"Z1","pool":"P"}', "DuplicateName", "s1"),
    ('{"t":1,"op":"server","name":"s8","zone":"Z1","pool":"nope"}', "UnknownPool", "nope"),
    ('{"t":1,"op":"licences","cap":-1}', "InvalidArgument", "cap"),
    ('{"t":1,"op":"settings","seed":-3}', "InvalidArgument", "seed"),
    ('{"t":1,"op":"user","id":"u1"}', "DuplicateName", "u1"),
]


@pytest.mark.parametrize("bad, cls, words", ERRORS, ids=[e[1] + ":" + e[0][:40] for e in ERRORS])
@pytest.mark.parametrize("batch", [True, False])
def test_each_error_kind_is_reported_and_changes_nothing(bad, cls, words, batch):
    head = [{"t": 0.8, "op": "launch", "id": "r0", "user": "u1", "app": "a", "location": "Z1"},
            {"t": 0.9, "op": "logon_done", "session": "r0"}]
    tail = [{"t": 2, "op": "launch", "id": "q1", "user": "u2", "app": "a", "location": "Z2"},
            {"t": 2, "op": "launch", "id": "q2", "user": "u2", "app": "b"},
            {"t": 3, "op": "telemetry", "server": "s2", "cpu": 5.0}]
    with_bad = replay(jl(*PRELUDE, *head, bad, *tail), batch=batch)
    without = replay(jl(*PRELUDE, *head, *tail), batch=batch)
    (err,) = with_bad.errors
    assert (err.line, err.error) == (len(PRELUDE) + 3, cls), err
    assert words in err.message, err.message
    assert as_dicts(with_bad.decisions) == as_dicts(without.decisions)
    a, b = with_bad.scheduler, without.scheduler
    assert a.servers().tolist() == b.servers().tolist() and a.sessions().tolist() == b.sessions().tolist()
    assert with_bad.ops == without.ops + 1


def test_error_t_is_reported_when_readable():
    r = run('{"t":7,"op":"frob"}', '{"t":8,"op":"launch","id":"x","user":"u1","app":"a","colour":1}', "{oops")
    assert [e.t for e in r.errors] == [7.0, 8.0, None]


def test_error_class_names_are_usher_errors():
    assert issubclass(TraceError, usher.InvalidArgument)
    r = run(*[e[0] for e in ERRORS])
    for e in r.errors:
        assert issubclass(getattr(usher, e.error, TraceError), usher.UsherError)


def test_time_check_uses_last_applied_line():
    # a failed line does not move the clock
    r = run({"t": 5, "op": "launch", "id": "x", "user": "u1", "app": "nope"},
            {"t": 3, "op": "launch", "id": "y", "user": "u1", "app": "a"},
            {"t": 4, "op": "pool", "name": "R"},
            {"t": 3.5, "op": "app", "name": "c", "pools": ["R"]})
    assert [(e.line - len(PRELUDE), e.error) for e in r.errors] == [(1, "UnknownApp"), (4, "TimeWentBackwards")]
    assert [d.id for d in r.decisions] == ["y"]


def test_nan_and_infinite_t_from_dicts():
    r = replay([*PRELUDE, {"t": float("nan"), "op": "launch", "id": "x", "user": "u1", "app": "a"},
                {"t": float("inf"), "op": "licences", "cap": 3}])
    assert [e.error for e in r.errors] == ["InvalidArgument", "InvalidArgument"]
    assert r.scheduler.licence_cap is None


# ---------------------------------------------------------------- replay == API
@pytest.mark.parametrize("seed", range(6))
def test_replay_equals_calling_the_api(seed, monkeypatch):
    if seed == 5:  # the production thresholds too
        monkeypatch.undo()
    lines = random_trace(seed)
    expected_decisions, expected_errors = drive(lines, usher.Scheduler())
    for batch in (True, False):
        r = replay(lines, batch=batch)
        assert as_dicts(r.decisions) == expected_decisions
        assert [(e.line, e.error) for e in r.errors] == expected_errors
    assert len(expected_decisions) > 50 and expected_errors


def test_batched_runs_equal_one_by_one_with_many_launches():
    ops = [{"t": 1 + k // 50, "op": "launch", "id": f"r{k}", "user": f"u{k % 7}", "app": "a",
            "location": ["Z1", "Z2", None][k % 3], "endpoint": f"e{k % 3}"} for k in range(300)]
    ops += [{"t": 10, "op": "telemetry", "server": s, "cpu": float(k)} for k, s in enumerate(["s1", "s2", "s1"] * 10)]
    ops += [{"t": 11, "op": "launch", "id": f"z{k}", "user": f"v{k}", "app": "a"} for k in range(20)]
    a = run(*ops, batch=True)
    b = run(*ops, batch=False)
    assert as_dicts(a.decisions) == as_dicts(b.decisions)
    assert a.scheduler.servers().tolist() == b.scheduler.servers().tolist()
    assert a.outcomes == b.outcomes and a.ops == b.ops


def test_user_runs_equal_one_by_one_and_report_the_bad_line():
    """A directory of user lines goes in with add_users; a bad line in it (a duplicate
    id, an empty home zone) sends the run line by line, so the error names that line
    and every other user is still added."""
    users = [{"t": 0, "op": "user", "id": f"v{k}", "home_zone": ["Z1", "Z2", None][k % 3],
              "apps": [["a"], [], ["a", "later"]][k % 3]} for k in range(40)]
    users[25] = {"t": 0, "op": "user", "id": "v3"}  # already added
    users[31] = {"t": 0, "op": "user", "id": "w31", "home_zone": ""}
    launches = [{"t": 1, "op": "launch", "id": f"r{k}", "user": f"v{k}", "app": "a", "location": "Z2"}
                for k in range(40)]
    # two runs: the first 20 users are clean (one add_users call), the second holds the bad lines
    ops = [{"t": 0, "op": "settings", "enforce_entitlement": True}, *users[:20],
           {"t": 0, "op": "licences", "cap": 1000}, *users[20:], *launches]
    calls = []

    class Counting(usher.Scheduler):
        def add_users(self, ids, *a, **kw):
            calls.append(len(ids))
            return super().add_users(ids, *a, **kw)

    a = run(*ops, batch=True, scheduler=Counting())
    assert calls == [20, 20]  # the first run went in at once; the second failed and went line by line
    b = run(*ops, batch=False)
    assert [(e.line, e.error) for e in a.errors] == [(e.line, e.error) for e in b.errors]
    assert [e.error for e in a.errors] == ["DuplicateName", "InvalidArgument"]
    assert as_dicts(a.decisions) == as_dicts(b.decisions)
    assert a.outcomes == b.outcomes and "placed" in a.outcomes and "rejected:not_entitled" in a.outcomes
    assert a.scheduler.user_ids == b.scheduler.user_ids


def test_blocks_split_anywhere(tmp_path, monkeypatch):
    lines = random_trace(11, 400)
    lines.insert(len(PRELUDE) + 5, "")
    lines.insert(len(PRELUDE) + 9, "   ")
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines))  # no newline at the end
    whole = replay(path)
    monkeypatch.setattr(trace_module, "BLOCK_BYTES", 97)
    pieces = replay(path)
    assert as_dicts(pieces.decisions) == as_dicts(whole.decisions)
    assert pieces.errors == whole.errors and pieces.ops == whole.ops == len(lines) - 2
    expected_decisions, expected_errors = drive(lines, usher.Scheduler())
    assert as_dicts(whole.decisions) == expected_decisions
    assert [(e.line, e.error) for e in whole.errors] == expected_errors


# ---------------------------------------------------------------- inputs and outputs
def test_inputs(tmp_path, monkeypatch):
    lines = random_trace(3, 200)
    text = "\n".join(lines) + "\n"
    ref = replay(lines)
    (tmp_path / "t.jsonl").write_text(text)
    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as f:
        f.write(text)
    variants = [
        tmp_path / "t.jsonl", str(tmp_path / "t.jsonl.gz"), text.encode(), io.BytesIO(text.encode()),
        io.StringIO(text), [json.loads(x) for x in lines], [line.encode() for line in lines],
        [msgspec.json.decode(x.encode(), type=replay_module.Op) for x in lines],
    ]
    for v in variants:
        r = replay(v)
        assert as_dicts(r.decisions) == as_dicts(ref.decisions), type(v)
        assert [(e.line, e.error) for e in r.errors] == [(e.line, e.error) for e in ref.errors]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert as_dicts(replay("-").decisions) == as_dicts(ref.decisions)


def test_outputs(tmp_path):
    lines = random_trace(4, 200)
    ref = replay(lines)
    text = io.StringIO()
    r = replay(lines, out=text)
    assert r.decisions == [] and r.errors == ref.errors  # keep defaults to out is None
    replay(lines, out=tmp_path / "d.jsonl.gz")
    replay(lines, out=tmp_path / "d.jsonl")
    raw = (tmp_path / "d.jsonl").read_bytes()
    assert gzip.open(tmp_path / "d.jsonl.gz").read() == raw == text.getvalue().encode()
    got = [json.loads(x) for x in raw.splitlines()]
    assert [g for g in got if "outcome" in g] == as_dicts(ref.decisions)
    assert [g for g in got if "error" in g] == as_dicts(ref.errors)
    # decisions and errors are interleaved in line order
    order = [g["line"] if "error" in g else g["id"] for g in got]
    assert len(order) == len(ref.decisions) + len(ref.errors)


def test_replayer_fed_in_pieces_equals_one_feed():
    lines = random_trace(5, 300)
    r = Replayer()
    for k in range(0, len(lines), 37):
        r.feed(lines[k:k + 37])
    whole = replay(lines)
    assert as_dicts(r.decisions) == as_dicts(whole.decisions)
    assert [e.error for e in r.errors] == [e.error for e in whole.errors]


def test_replay_onto_a_loaded_fleet():
    import os

    ex = os.path.join(os.path.dirname(__file__), "..", "docs", "examples")
    s = usher.Scheduler.from_files(os.path.join(ex, "fleet.toml"), os.path.join(ex, "servers.csv"))
    r = replay(os.path.join(ex, "trace.jsonl"), scheduler=s)
    assert r.scheduler is s and not r.errors
    assert [d.outcome for d in r.decisions] == ["placed", "placed", "placed", "rejected", "reconnected"]
    assert r.decisions[3].reason == "not_entitled" and r.decisions[4].session == "r1"


def test_result_summary_fields():
    r = run({"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a"}, "{bad")
    assert r.ops == len(PRELUDE) + 2 and r.launches == 1 and not r.ok
    assert r.error_counts == {"TraceError": 1} and r.ops_per_second > 0
    assert isinstance(r.errors[0], LineError) and isinstance(r.decisions[0], LaunchDecision)


# ---------------------------------------------------------------- command line
@pytest.fixture
def trace_file(tmp_path):
    p = tmp_path / "trace.jsonl"
    p.write_text("\n".join(jl(*PRELUDE, {"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a"},
                              {"t": 2, "op": "logon_done", "session": "r1"})) + "\n")
    return p


def test_cli_replays_to_stdout(trace_file):
    res = CliRunner().invoke(main, ["replay", str(trace_file)])
    assert res.exit_code == 0, res.output
    (line,) = res.stdout.splitlines()
    assert json.loads(line)["outcome"] == "placed"
    assert "ops/s" in res.stderr and "placed 1" in res.stderr and "errors 0" in res.stderr


def test_cli_exit_3_on_failed_lines_and_out_file(trace_file, tmp_path):
    with trace_file.open("a") as f:
        f.write('{"t":3,"op":"logoff","session":"nobody"}\n')
    out = tmp_path / "d.jsonl"
    res = CliRunner().invoke(main, ["replay", "--out", str(out), "--explain", str(trace_file)])
    assert res.exit_code == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert "explanation" in lines[0] and lines[1]["error"] == "UnknownSession"
    assert "UnknownSession 1" in res.stderr


def test_cli_stdin_fleet_and_progress(tmp_path):
    import os

    ex = os.path.join(os.path.dirname(__file__), "..", "docs", "examples")
    with open(os.path.join(ex, "trace.jsonl")) as f:
        text = f.read()
    res = CliRunner().invoke(main, ["replay", "--fleet", os.path.join(ex, "fleet.toml"), "--servers",
                                    os.path.join(ex, "servers.csv"), "--progress", "-q", "-"], input=text)
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 5 and "ops/s" not in res.stderr


def test_cli_bad_command_lines(tmp_path, trace_file):
    r = CliRunner()
    assert r.invoke(main, ["replay"]).exit_code == 2
    assert r.invoke(main, ["replay", str(tmp_path / "missing.jsonl")]).exit_code == 2
    assert r.invoke(main, ["replay", "--servers", "s.csv", str(trace_file)]).exit_code == 2
    assert r.invoke(main, ["replay", "--frob", str(trace_file)]).exit_code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[[pool]]\nname = 3\n")
    res = r.invoke(main, ["replay", "--fleet", str(bad), str(trace_file)])
    assert res.exit_code == 2 and "bad.toml" in res.stderr and "line 2" in res.stderr


# ---------------------------------------------------------------- random traces
SERVERS = ["s1", "s2", "s3", "s4"]
USERS = ["u1", "u2", "u3", "u4"]
IDS = [f"r{k}" for k in range(8)]

_t = st.sampled_from([0.0, 0.0, 0.0, 0.5, 0.5, 2.0, 2.0, 90.0, -1.0])  # increments; -1 sends time back
_launch = st.fixed_dictionaries(
    {"op": st.just("launch"), "id": st.sampled_from(IDS), "user": st.sampled_from(USERS),
     "app": st.sampled_from(["a", "a", "b", "g"])},
    optional={"location": st.sampled_from(["Z1", "Z2", "Z9", None]),
              "endpoint": st.sampled_from(["e1", "e2", None]), "external": st.booleans()})
_op = st.one_of(
    _launch, _launch, _launch,
    st.fixed_dictionaries({"op": st.sampled_from(["logon_done", "disconnect", "logoff", "launch_failed"]),
                           "session": st.sampled_from(IDS)}),
    st.fixed_dictionaries({"op": st.just("close_app"), "session": st.sampled_from(IDS),
                           "app": st.sampled_from(["a", "b"])}),
    st.fixed_dictionaries({"op": st.just("power"), "server": st.sampled_from(SERVERS),
                           "state": st.sampled_from(["on", "off", "booting", "shutting_down"])}),
    st.fixed_dictionaries({"op": st.just("mode"), "server": st.sampled_from(SERVERS),
                           "mode": st.sampled_from(["enabled", "drain", "maintenance"])}),
    st.fixed_dictionaries({"op": st.just("register"), "server": st.sampled_from(SERVERS), "registered": st.booleans()}),
    st.fixed_dictionaries({"op": st.just("telemetry"), "server": st.sampled_from(SERVERS)},
                          optional={"cpu": st.floats(-10, 120), "mem": st.floats(0, 100),
                                    "custom": st.sampled_from([0.0, 5000.0, 10000.0, 20000.0])}),
    st.fixed_dictionaries({"op": st.just("remove_server"), "server": st.sampled_from(SERVERS), "force": st.booleans()}),
    st.fixed_dictionaries({"op": st.just("server"), "name": st.sampled_from(SERVERS), "zone": st.sampled_from(["Z1", "Z2"]),
                           "pool": st.sampled_from(["P", "Q"]), "max_sessions": st.integers(1, 3)},
                          optional={"tags": st.sampled_from([[], ["gpu"]])}),
    st.sampled_from(['{"t":1,"op":"launch"', '{"t":1,"op":"nope"}', '{"t":1,"op":"logoff","session":5.5}',
                     '{"t":1,"op":"power","server":"s1","state":"off","x":1}', "null", "", '"text"']),
)


def _check_hard_constraints(s, cap, decision, launch):
    rows = s.servers()
    for row in rows:
        assert 0 <= row["sessions"] <= row["max_sessions"], row
        assert 0 <= row["load_index"] <= 10000, row
    assert s.licences_in_use <= cap
    if decision is None or decision.outcome == "rejected":
        return
    srv = s.server(decision.server)
    assert srv["power"] == "on" and srv["registered"], srv
    app = s.app_config(launch["app"])
    assert srv["pool"] in app["pools"]
    if launch.get("external"):
        assert s.pool_config(srv["pool"])["external_access"]
    if decision.outcome == "placed":
        assert srv["mode"] == "enabled", srv
        restriction = app["tag_restriction"]
        need = {restriction} if isinstance(restriction, str) else set(restriction or ())
        assert need <= set(srv["tags"])
        if s.enforce_entitlement:
            assert launch["app"] in s.user_config(launch["user"])["apps"]
        mpu = s.pool_config(srv["pool"])["max_sessions_per_user"]
        if mpu is not None:
            live = s.sessions()
            mine = live[(live["user"] == launch["user"]) & (live["pool"] == srv["pool"])]
            assert len(mine) <= mpu
    else:
        assert srv["mode"] in ("enabled", "drain", "maintenance")
    assert decision.session is not None


@given(steps=st.lists(st.tuples(_t, _op), min_size=4, max_size=45), enforce=st.booleans())
def test_random_traces_never_crash_nor_break_hard_constraints(steps, enforce):
    cap = 3
    prelude = [*PRELUDE, {"t": 0, "op": "licences", "cap": cap}, {"t": 0, "op": "settings", "enforce_entitlement": enforce}]
    lines = jl(*prelude)
    t = 1.0
    for dt, op in steps:
        t += dt
        lines.append(op if isinstance(op, str) else json.dumps({"t": t, **op}))
    r = Replayer(keep=True)
    for line in lines:
        n = len(r.decisions)
        r.feed([line])
        decision = r.decisions[-1] if len(r.decisions) > n else None
        launch = json.loads(line) if decision is not None else None
        _check_hard_constraints(r.scheduler, cap, decision, launch)
    event(f"placed: {'some' if r.outcomes.get('placed') else 'none'}")
    event(f"errors: {'some' if r.errors else 'none'}")
    # the whole trace at once (batched) gives the same decisions and errors
    whole = replay(lines)
    assert as_dicts(whole.decisions) == as_dicts(r.decisions)
    assert [(e.line, e.error) for e in whole.errors] == [(e.line, e.error) for e in r.errors]
    assert whole.ops == r.ops and r.ops == sum(1 for x in lines if x.strip())


class CountingScheduler(usher.Scheduler):
    """Counts the batch calls (and the failed ones) the replay makes."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = {"launch_many": 0, "telemetry_many": 0, "failed": 0}

    def launch_many(self, *a, **kw):
        self.calls["launch_many"] += 1
        try:
            return super().launch_many(*a, **kw)
        except usher.UsherError:
            self.calls["failed"] += 1
            raise

    def telemetry_many(self, *a, **kw):
        self.calls["telemetry_many"] += 1
        try:
            return super().telemetry_many(*a, **kw)
        except usher.UsherError:
            self.calls["failed"] += 1
            raise


def test_random_traces_exercise_batches_and_their_fallback():
    s = CountingScheduler()
    lines = random_trace(2, 1500)
    r = replay(lines, scheduler=s)
    assert s.calls["launch_many"] > 10 and s.calls["telemetry_many"] > 10 and s.calls["failed"] > 0
    assert as_dicts(r.decisions) == drive(lines, usher.Scheduler())[0]
