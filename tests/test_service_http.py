"""The service's hot path and its extension points: the app on real uvicorn with the
options of ``usher.service.http`` (coalesced writes, pipelined and concurrent
requests answered in order and in full), group commit shared by concurrent requests,
a write guard, extra routes, and the decision log's background writer."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
import warnings

import httpx
import pytest
import uvicorn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import usher.journal as journal
from journal_workload import PRELUDE
from usher.errors import InvalidState
from usher.service.app import create_app
from usher.service.decision_log import BackgroundHandler, DecisionLog, JsonFormatter, configure
from usher.service.http import CoalescingTransport, uvicorn_options
from usher.service.metrics import Metrics


def _launch(rid, user="u1"):
    return {"op": "launch", "id": rid, "user": user, "app": "a"}


class _Uvicorn:
    """The app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        options = uvicorn_options()
        options.pop("loop")
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="asyncio", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def _served(tmp_path, **kw):
    j = journal.open(tmp_path / "j", clock=lambda: 5.0)
    metrics = Metrics(j)
    j.set_on_flush(metrics.on_flush)
    j.apply(PRELUDE)
    return j, metrics, create_app(j, metrics=metrics, **kw)


def _read_answers(sock, n) -> list[tuple[int, bytes]]:
    """``n`` HTTP/1.1 answers with Content-Length from a socket."""
    data, answers = b"", []
    while len(answers) < n:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            length = int(next(h.split(":", 1)[1] for h in head if h.lower().startswith("content-length:")))
            if len(data) >= head_end + 4 + length:
                answers.append((int(head[0].split()[1]), data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    return answers


def test_pipelined_and_concurrent_requests_answered_in_order_on_uvicorn(tmp_path):
    j, metrics, app = _served(tmp_path)
    with _Uvicorn(app) as served:
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            requests = b""
            for k in range(5):  # five requests in one segment: five answers, in order
                body = json.dumps(_launch(f"p{k}", f"u{k % 6}")).encode()
                requests += (b"POST /v1/ops HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
            requests += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(requests)
            answers = _read_answers(sock, 6)
        assert [status for status, _ in answers] == [200] * 6
        assert [json.loads(body)["id"] for _, body in answers[:5]] == [f"p{k}" for k in range(5)]
        assert json.loads(answers[5][1]) == {"status": "ok"}

        async def storm():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as client:
                return await asyncio.gather(*(client.post("/v1/ops", json={"op": "logoff", "session": f"p{k}"})
                                              for k in range(5)))

        assert [r.status_code for r in asyncio.run(storm())] == [200] * 5
    assert j.replayer.scheduler.live_sessions == 0
    j.close()


def test_concurrent_requests_share_a_group_commit(tmp_path):
    """Requests whose bodies arrive in the same turn of the event loop are made durable
    by one fsync (fewer fsyncs than requests), and each answer waits for its records."""
    j, metrics, app = _served(tmp_path)
    fsyncs = []
    j.set_on_flush(lambda records, write_s, fsync_s: fsyncs.append(records))

    async def storm():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://usher") as client:
            return await asyncio.gather(*(client.post("/v1/ops", json=_launch(f"g{k}", f"u{k % 6}"))
                                          for k in range(20)))

    answers = asyncio.run(storm())
    assert [r.status_code for r in answers] == [200] * 20
    assert j._writer.durable >= j.seq  # every answered record is durable
    assert sum(fsyncs) == 20 and len(fsyncs) < 20
    j.close()


def test_coalescing_transport_writes_once_per_turn():
    written = []

    class Raw:
        def write(self, data):
            written.append(data)

        def is_closing(self):
            return False

        def close(self):
            written.append("closed")

        def get_extra_info(self, name):
            return name

    async def turn():
        t = CoalescingTransport(Raw(), asyncio.get_running_loop())
        t.write(b"head ")
        t.write(b"body")
        assert written == []  # nothing before the turn ends
        await asyncio.sleep(0)
        assert written == [b"head body"]
        t.write(b"last")
        t.close()  # what waits goes out before the close
        assert written == [b"head body", b"last", "closed"] and t.get_extra_info("peername") == "peername"

    asyncio.run(turn())


class NotLeader(InvalidState):
    http_status = 421
    http_headers = {"x-usher-leader": "http://other:8642"}


def test_write_guard_refuses_before_anything_applies_and_extra_routes(tmp_path):
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    leader = {"me": True}

    def guard(scope):
        if not leader["me"]:
            raise NotLeader("leader", "other", "this node is not the leader")

    async def dashboard(request):
        return PlainTextResponse("dashboard")

    j, metrics, app = _served(tmp_path, write_guard=guard, routes=[Route("/dashboard", dashboard)], token="t0k")
    client = TestClient(app, raise_server_exceptions=False)
    auth = {"Authorization": "Bearer t0k"}
    assert client.post("/v1/ops", json=_launch("w1"), headers=auth).status_code == 200
    leader["me"] = False
    seq = j.seq
    r = client.post("/v1/ops", json=_launch("w2"), headers=auth)
    assert r.status_code == 421 and r.headers["x-usher-leader"] == "http://other:8642"
    assert r.json() == {"error": "NotLeader", "field": "leader", "message": r.json()["message"]}
    assert j.seq == seq and "w2" not in j.replayer.names
    assert client.post("/v1/ops", json=_launch("w3")).status_code == 401  # the token first
    assert client.get("/dashboard").status_code == 401
    assert client.get("/dashboard", headers=auth).text == "dashboard"
    assert client.get("/v1/ops", headers=auth).status_code == 405
    j.close()


def test_ops_edge_cases_of_the_plain_handler(tmp_path):
    j, metrics, app = _served(tmp_path)
    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/v1/ops?explain=true&explain=maybe", json=_launch("e1"))  # the last value counts
    assert r.status_code == 422 and r.json()["field"] == "explain"
    r = client.post("/v1/ops?explain=TRUE", json=_launch("e1"), headers={"x-request-id": "abc"})
    (line,) = [json.loads(x) for x in r.text.splitlines()]
    assert "explanation" in line and r.headers["x-request-id"] == "abc"
    r = client.post("/v1/ops", json=[])
    assert r.status_code == 200 and r.text == "" and r.headers["x-usher-applied"] == "0"
    ids = {client.post("/v1/ops", json=[]).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)

    def chunks():
        yield b'{"op": "launch", '
        yield b'"id": "e2", "user": "u2", "app": "a"}'

    r = client.post("/v1/ops", content=chunks())  # a body in several messages
    assert r.status_code == 200 and json.loads(r.text)["id"] == "e2"
    j.close()


def test_decision_log_one_record_per_request_written_in_the_background(tmp_path):
    j = journal.in_memory(clock=lambda: 1.0)
    j.apply(PRELUDE)
    log = logging.getLogger("usher.decisions.test-bg")
    path = tmp_path / "decisions.jsonl"
    handler = configure(path=str(path), logger=log, capacity=2)
    assert isinstance(handler, BackgroundHandler)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    log.addHandler(Keep())
    app = create_app(j, decision_log=DecisionLog(log))
    client = TestClient(app)
    for k in range(6):  # more requests than the queue holds: the request path waits, nothing is lost
        ops = [_launch(f"d{k}-{n}", f"u{n}") for n in range(3)] + [{"op": "logoff", "session": "nope"}]
        assert client.post("/v1/ops", json=ops, headers={"x-request-id": f"req-{k}"}).status_code == 200
    handler.flush()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 18 and [x["id"] for x in lines[:3]] == ["d0-0", "d0-1", "d0-2"]
    assert {x["request_id"] for x in lines} == {f"req-{k}" for k in range(6)}
    assert all(x["logger"] == "usher.decisions.test-bg" and x["level"] == "info" for x in lines)
    assert len(seen) == 6 and [d["id"] for d in seen[0].decisions] == ["d0-0", "d0-1", "d0-2"]
    assert JsonFormatter().format(seen[0]).splitlines() == path.read_text().splitlines()[:3]
    other = io.StringIO()
    plain = logging.StreamHandler(other)  # any handler: the record's message is its lines
    log.addHandler(plain)
    client.post("/v1/ops", json=_launch("d9", "u5"))
    assert json.loads(other.getvalue())["id"] == "d9"
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


@pytest.mark.parametrize("policy", ["always", "batch", "off"])
def test_group_commit_durable_before_the_answer_under_each_policy(tmp_path, policy):
    j = journal.open(tmp_path / policy, fsync=policy, clock=lambda: 1.0)
    j.apply(PRELUDE)
    client = TestClient(create_app(j))
    for k in range(4):
        assert client.post("/v1/ops", json=[_launch(f"c{k}", f"u{k}")]).status_code == 200
        assert j._writer.durable == j.seq
    j.close()
    assert journal.recover(tmp_path / policy).seq == j.seq
