"""usher.cluster against a real PostgreSQL 15 (tests/pgserver.py; never mocked):
fencing of a deposed epoch, group commit, standbys equal to a replay of the database
journal, snapshots and pruned rows, the HTTP gate."""

from __future__ import annotations

import time

import msgspec
import pytest

from journal_workload import PRELUDE, stream
from pgserver import PgServer
from usher.cluster import NotLeader, open_broker, state_digest
from usher.cluster import store
from usher.cluster.replica import recover
from usher.cluster.writer import PgWriter


@pytest.fixture(scope="module")
def server():
    with PgServer() as pg:
        yield pg


@pytest.fixture
def dsn(server, request):
    """A fresh database per test."""
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    conn = store.connect(server.dsn)
    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.execute(f"CREATE DATABASE {name}")
    conn.close()
    return server.dsn.replace("dbname=postgres", f"dbname={name}")


def _until(condition, what, limit=30.0):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def _lead(broker):
    """Make ``broker`` lead by hand (no decision loop): take the free lease, catch up, write."""
    conn = store.connect(broker.dsn)
    epoch = store.take_lease(conn, broker.holder, broker.url, 60.0)
    assert epoch is not None
    replayer, seq = recover(conn)
    broker.journal.reset(replayer, seq)
    broker.journal.lead(epoch, PgWriter(broker.dsn, epoch, seq))
    return conn, epoch


def _free_lease(dsn):
    conn = store.connect(dsn)
    conn.execute("UPDATE usher_lease SET expires = '-infinity', backend = NULL")
    conn.close()


def test_a_deposed_epoch_can_never_append(dsn):
    a = open_broker(dsn, "http://a")
    conn_a, epoch_a = _lead(a)
    assert a.journal.apply(PRELUDE)
    before = store.last_position(conn_a)
    assert before == len(PRELUDE)
    # b takes over (a's lease has lapsed): a's next append is refused, nothing is written
    _free_lease(dsn)
    b = open_broker(dsn, "http://b")
    conn_b, epoch_b = _lead(b)
    assert epoch_b == epoch_a + 1
    with pytest.raises(NotLeader):
        a.journal.apply([{"t": 1, "op": "launch", "id": "late", "user": "u1", "app": "a"}])
    assert not a.journal.healthy
    assert not store.renew_lease(conn_a, epoch_a, 3.0)
    assert store.last_position(conn_b) == before
    # a writer of the old epoch, even at the right position, is refused too
    w = PgWriter(dsn, epoch_a, before)
    ticket = w.append([b"00000000\t{}\t\n"])
    with pytest.raises(NotLeader):
        w.wait(ticket)
    w.close()
    # the new leader appends; every row after the takeover carries its epoch
    out = b.journal.apply([{"t": 1, "op": "launch", "id": "r1", "user": "u1", "app": "a"}])
    assert out[0].outcome == "placed"
    epochs = [row[1] for row in store.rows_after(conn_b, 0)]
    assert epochs == [epoch_a] * before + [epoch_b]
    a.journal.follow().close()
    b.journal.follow().close()
    conn_a.close()
    conn_b.close()


def test_a_large_group_is_copied_exactly_and_fenced(dsn):
    """Groups of COPY_FROM records or more go by COPY: the rows hold the ops and decisions
    byte for byte (quotes, backslashes, non-ASCII), and a deposed epoch's group is refused."""
    a = open_broker(dsn, "http://a")
    conn_a, epoch_a = _lead(a)
    a.journal.apply(PRELUDE)
    odd = [{"t": 2, "op": "launch", "id": f'q"\\{k}\\n\tü', "user": f"u{k % 6}", "app": "a"}
           for k in range(store.COPY_FROM + 5)]
    out = a.journal.apply(odd)
    assert len(out) == len(odd)
    rows = store.rows_after(conn_a, len(PRELUDE))
    assert [row[0] for row in rows] == list(range(len(PRELUDE) + 1, len(PRELUDE) + len(odd) + 1))
    assert [msgspec.json.decode(row[2])["id"] for row in rows] == [op["id"] for op in odd]
    assert all(msgspec.json.decode(row[3])["id"] == op["id"] for row, op in zip(rows, odd))
    replayer, seq = recover(conn_a)
    assert seq == a.journal.seq and state_digest(replayer) == state_digest(a.journal.replayer)
    # b takes over: a's next large group is refused and writes nothing
    _free_lease(dsn)
    b = open_broker(dsn, "http://b")
    conn_b, epoch_b = _lead(b)
    before = store.last_position(conn_b)
    with pytest.raises(NotLeader):
        a.journal.apply(stream(5, 3 * store.COPY_FROM, t0=10.0, prefix="late"))
    assert store.last_position(conn_b) == before
    a.journal.follow().close()
    b.journal.follow().close()
    conn_a.close()
    conn_b.close()


def test_group_commit_puts_many_requests_in_one_transaction(dsn):
    b = open_broker(dsn, "http://a")
    conn, epoch = _lead(b)
    groups = []
    b.journal._writer.on_flush = lambda n, *_: groups.append(n)
    b.journal.apply(PRELUDE)
    tickets = [b.journal.submit([op])[2] for op in stream(3, 400)]
    b.journal.wait(max(tickets))
    assert sum(groups) == store.last_position(conn) == b.journal.seq
    assert len(groups) < len(tickets)  # appends were grouped
    b.journal.follow().close()
    conn.close()


def test_standbys_equal_a_replay_of_the_database_journal(dsn):
    """A leader and two standbys with their decision loops; snapshots prune old rows,
    so a standby started late reloads from the latest snapshot."""
    a = open_broker(dsn, "http://a", ttl=60.0, poll=0.05, snapshot_every=300).start()
    _until(lambda: a.role == "leader", "a leads")
    b = open_broker(dsn, "http://b", ttl=60.0, poll=0.05).start()
    ops = PRELUDE + stream(11, 1500)
    for k in range(0, len(ops), 7):
        a.journal.apply(ops[k:k + 7])
    c = open_broker(dsn, "http://c", ttl=60.0, poll=0.05).start()
    seq = a.journal.seq
    _until(lambda: b.journal.seq == seq and c.journal.seq == seq, "the standbys catch up")
    conn = store.connect(dsn)
    first_row = store.rows_after(conn, 0, limit=1)[0][0]
    assert first_row > 1  # rows before the second-last snapshot were pruned
    replayer, replayed_seq = recover(conn)
    assert replayed_seq == seq
    digest = state_digest(replayer)
    assert state_digest(a.journal.replayer) == state_digest(b.journal.replayer) == digest
    assert state_digest(c.journal.replayer) == digest
    _until(lambda: b.leader == c.leader == "http://a", "the standbys know the leader")
    assert b.role == c.role == "standby"
    with pytest.raises(NotLeader):
        b.journal.apply([{"op": "launch", "id": "x", "user": "u1", "app": "a"}])
    # a clean stop gives the lease up: a standby takes over and the state goes on
    a.stop()
    _until(lambda: b.role == "leader" or c.role == "leader", "a standby takes over")
    new = b if b.role == "leader" else c
    out = new.journal.apply([{"op": "launch", "id": "after", "user": "u2", "app": "a"}])
    assert out[0].__class__.__name__ == "LaunchDecision"
    other = c if new is b else b
    _until(lambda: other.journal.seq == new.journal.seq, "the other standby follows the new leader")
    assert state_digest(other.journal.replayer) == state_digest(new.journal.replayer)
    assert state_digest(recover(conn)[0]) == state_digest(new.journal.replayer)
    b.stop()
    c.stop()
    conn.close()


def test_gate_refuses_writes_on_a_standby_and_marks_positions(dsn):
    from starlette.testclient import TestClient

    from usher.service.app import create_app

    a = open_broker(dsn, "http://a", ttl=60.0, poll=0.05).start()
    _until(lambda: a.role == "leader", "a leads")
    b = open_broker(dsn, "http://b", ttl=60.0, poll=0.05).start()
    _until(lambda: b.leader == "http://a", "b knows the leader")
    with TestClient(create_app(a.journal, role=a)) as ca, TestClient(create_app(b.journal, role=b)) as cb:
        r = ca.post("/v1/ops", json=PRELUDE)
        assert r.status_code == 200
        assert r.headers["x-usher-position"] == str(len(PRELUDE))
        r = cb.post("/v1/ops", json={"op": "launch", "id": "r1", "user": "u1", "app": "a"})
        assert r.status_code == 503
        assert r.json()["error"] == "NotLeader" and r.json()["leader"] == "http://a"
        _until(lambda: b.journal.seq == a.journal.seq, "b catches up")
        r = cb.get("/v1/servers")
        assert r.status_code == 200 and r.headers["x-usher-position"] == str(len(PRELUDE))
        assert r.json() == ca.get("/v1/servers").json()
        status = cb.get("/v1/cluster?digest=true").json()
        assert status["role"] == "standby" and status["leader"] == "http://a"
        assert status["digest"] == ca.get("/v1/cluster?digest=true").json()["digest"]
    b.stop()
    a.stop()


def test_a_leader_steps_down_when_the_database_restarts(server, dsn):
    a = open_broker(dsn, "http://a", ttl=60.0, poll=0.05).start()
    _until(lambda: a.role == "leader", "a leads")
    a.journal.apply(PRELUDE)
    epoch = a.journal.epoch
    server.restart()
    # every session was cut: the lease is free at once (its holder's connection is gone)
    _until(lambda: a.role == "leader" and a.journal.epoch == epoch + 1, "a leads again with a new epoch", 60.0)
    out = a.journal.apply([{"op": "launch", "id": "r1", "user": "u1", "app": "a"}])
    assert out[0].__class__.__name__ == "LaunchDecision"
    conn = store.connect(dsn)
    assert state_digest(recover(conn)[0]) == state_digest(a.journal.replayer)
    conn.close()
    a.stop()
