"""Failover with real processes: three ``usher serve --store`` brokers on one real
PostgreSQL 15. The leader is killed with SIGKILL during a stream of launches from a
client that records every acknowledged decision (and paused with SIGSTOP once): no
acknowledged decision is lost, no launch id (so no session) is given twice, a deposed
leader never appends, a leader cut off from the database (its sessions terminated
by the server, again and again) steps down or leads again with a new epoch, and after
every failover the new leader's state equals a replay
of the database journal. Kills: 3 (default profile), 20 (thorough). The failover times
are printed (`-s`), never asserted."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import msgspec
import pytest

from journal_workload import PRELUDE, stream
from pgserver import PgServer
from usher.cluster import state_digest, store
from usher.cluster.replica import recover

KILLS = 20 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 3
CUTS = 10 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Three brokers on one store, restartable by index."""

    def __init__(self, dsn, tmp_path, n=3):
        self.dsn = dsn
        self.ports = [_free_port() for _ in range(n)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.procs = [None] * n
        self.logs = [tmp_path / f"broker{k}.log" for k in range(n)]

    def start(self, k):
        log = open(self.logs[k], "ab")
        self.procs[k] = subprocess.Popen(
            [sys.executable, "-m", "usher.cli", "serve", "--store", self.dsn, "--listen", f"127.0.0.1:{self.ports[k]}",
             "--advertise", self.urls[k], "--snapshot-every", "700", "--no-log-decisions", "--lease-ttl", "2"],
            stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def status(self, k, digest=False):
        try:
            r = httpx.get(f"{self.urls[k]}/v1/cluster{'?digest=true' if digest else ''}", timeout=2)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def wait(self, condition, what, limit=120.0):
        deadline = time.monotonic() + limit
        while True:
            found = condition()
            if found is not None and found is not False:
                return found
            for k, p in enumerate(self.procs):
                if p is not None and p.poll() is not None and p.returncode != -signal.SIGKILL:
                    raise AssertionError(f"broker {k} exited ({p.returncode}): {self.logs[k].read_text()[-2000:]}")
            assert time.monotonic() < deadline, f"never happened: {what}"
            time.sleep(0.05)

    def leader(self):
        for k in range(len(self.urls)):
            s = self.status(k)
            if s is not None and s["role"] == "leader":
                return k
        return None

    def stop(self):
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


class Client(threading.Thread):
    """Sends one launch per request to whichever broker leads; records each
    acknowledged decision (launch id -> decision) and when it came."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acked: dict = {}
        self.ack_times: list = []
        self.stopping = threading.Event()
        self.hold = threading.Event()  # set: send nothing (the state is being compared)
        self.idle = threading.Event()
        self.target = 0

    def run(self):
        ops = stream(5, 200_000, t0=10.0, prefix="f")
        with httpx.Client(timeout=5) as http:
            for op in ops:
                if self.stopping.is_set():
                    return
                while self.hold.is_set():
                    self.idle.set()
                    time.sleep(0.01)
                self.idle.clear()
                self._send(http, op)

    def _send(self, http, op):
        try:
            r = http.post(f"{self.cluster.urls[self.target]}/v1/ops", json=[op])
        except httpx.HTTPError:  # the broker died mid-request: not acknowledged
            self.target = (self.target + 1) % len(self.cluster.urls)
            return
        if r.status_code == 503:
            leader = r.json().get("leader")
            if leader in self.cluster.urls:
                self.target = self.cluster.urls.index(leader)
            else:
                self.target = (self.target + 1) % len(self.cluster.urls)
                time.sleep(0.01)
            return
        assert r.status_code == 200, r.text
        for line in r.text.splitlines():
            d = msgspec.json.decode(line)
            if "outcome" in d:
                assert d["id"] not in self.acked, f"launch {d['id']} acknowledged twice"
                self.acked[d["id"]] = d
                self.ack_times.append(time.monotonic())


def _check_against_database(cluster, client, leader):
    client.hold.set()
    if client.is_alive():
        client.idle.wait(30)
    conn = store.connect(cluster.dsn)
    try:
        journalled: dict = {}
        for _, _, op, decision in store.rows_after(conn, 0):
            if decision:
                d = msgspec.json.decode(decision)
                assert d["id"] not in journalled, f"launch id {d['id']} decided twice"
                journalled[d["id"]] = d
        # rows before the latest snapshots are pruned: check the acknowledged ones still held
        first = store.rows_after(conn, 0, limit=1)[0][0]
        held = {rid: d for rid, d in client.acked.items() if rid in journalled or first == 1}
        lost = [rid for rid in held if rid not in journalled]
        assert not lost, f"acknowledged launches lost: {lost[:5]}"
        assert all(journalled[rid] == d for rid, d in held.items())
        replayer, seq = recover(conn)
        # every acknowledged launch names its session (or its rejection) in the replayed state
        assert all(rid in replayer.names for rid in client.acked)
        status = cluster.wait(lambda: _caught_up(cluster.status(leader, digest=True), seq), "the leader's status")
        assert status["position"] == seq
        assert status["digest"] == state_digest(replayer), "the leader's state differs from a replay of the journal"
    finally:
        conn.close()
        client.hold.clear()


def _caught_up(status, seq):
    return status if status is not None and status["position"] >= seq else None


@pytest.fixture
def cluster(tmp_path):
    with PgServer() as pg:
        c = Cluster(pg.dsn, tmp_path)
        try:
            yield c
        finally:
            c.stop()


def test_leader_kills_lose_no_acknowledged_decision(cluster):
    for k in range(3):
        cluster.start(k)
    first = cluster.wait(cluster.leader, "a leader")
    cluster.wait(lambda: all(cluster.status(k) for k in range(3)), "every broker answers")
    assert httpx.post(f"{cluster.urls[first]}/v1/ops", json=PRELUDE, timeout=10).status_code == 200
    client = Client(cluster)
    client.target = first
    client.start()
    failovers = []
    for kill in range(KILLS):
        leader = cluster.wait(cluster.leader, "a leader")
        before = len(client.acked)
        cluster.wait(lambda: len(client.acked) >= before + 150, "launches acknowledged")
        cluster.wait(lambda: sum(1 for k in range(3) if k != leader and cluster.status(k)) == 2, "two standbys")
        killed_at = time.monotonic()
        cluster.procs[leader].kill()
        cluster.procs[leader].wait()
        n = len(client.ack_times)
        cluster.wait(lambda: len(client.ack_times) > n, "a launch acknowledged after the kill")
        failovers.append(client.ack_times[n] - killed_at)
        new = cluster.wait(cluster.leader, "a new leader")
        assert new != leader
        cluster.start(leader)  # back as a standby
        _check_against_database(cluster, client, new)
    client.stopping.set()
    client.join()
    _check_against_database(cluster, client, cluster.wait(cluster.leader, "a leader"))
    print(f"\n{KILLS} leader kills, {len(client.acked)} acknowledged launches; failover (kill -> next "
          f"acknowledged launch): min {min(failovers):.3f} s, median {statistics.median(failovers):.3f} s, "
          f"max {max(failovers):.3f} s")


def test_a_paused_leader_is_fenced_and_steps_down(cluster):
    for k in range(2):
        cluster.start(k)
    a = cluster.wait(cluster.leader, "a leader")
    b = 1 - a
    cluster.wait(lambda: cluster.status(b), "the standby answers")
    assert httpx.post(f"{cluster.urls[a]}/v1/ops", json=PRELUDE, timeout=10).status_code == 200
    epoch_a = cluster.status(a)["epoch"]
    os.kill(cluster.procs[a].pid, signal.SIGSTOP)
    try:
        cluster.wait(lambda: (cluster.status(b) or {}).get("role") == "leader", "the standby takes over")
        r = httpx.post(f"{cluster.urls[b]}/v1/ops", json={"op": "launch", "id": "on-b", "user": "u1", "app": "a"},
                       timeout=10)
        assert r.status_code == 200
    finally:
        os.kill(cluster.procs[a].pid, signal.SIGCONT)
    # the old leader, back: its write is refused (fenced, or already a standby) and it steps down
    r = httpx.post(f"{cluster.urls[a]}/v1/ops", json={"op": "launch", "id": "on-a", "user": "u2", "app": "a"},
                   timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "NotLeader"
    status = cluster.wait(lambda: _caught_up(cluster.status(a, digest=True), 0), "the old leader answers")
    cluster.wait(lambda: (cluster.status(a) or {}).get("role") == "standby", "the old leader steps down")
    conn = store.connect(cluster.dsn)
    rows = store.rows_after(conn, 0)
    epochs = [row[1] for row in rows]
    assert epochs == sorted(epochs) and max(epochs) > epoch_a  # nothing of a's epoch after b's rows
    assert not any('"on-a"' in row[2] for row in rows)
    replayer, seq = recover(conn)
    conn.close()
    status = cluster.wait(lambda: _caught_up(cluster.status(a, digest=True), seq), "the old leader catches up")
    assert status["digest"] == state_digest(replayer) == cluster.status(b, digest=True)["digest"]


def _cut(dsn, pid, seconds):
    """Cut broker ``pid`` off the database for ``seconds``: terminate its sessions (named
    ``usher <pid>``) from a superuser connection, and every new one, as a network cut does."""
    conn = store.connect(dsn)
    cut = 0
    try:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            cut += len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                    (f"usher {pid}",)).fetchall())
            time.sleep(0.02)
    finally:
        conn.close()
    return cut


def test_a_leader_cut_from_the_database_loses_nothing(cluster):
    for k in range(2):
        cluster.start(k)
    first = cluster.wait(cluster.leader, "a leader")
    cluster.wait(lambda: all(cluster.status(k) for k in range(2)), "both brokers answer")
    assert httpx.post(f"{cluster.urls[first]}/v1/ops", json=PRELUDE, timeout=10).status_code == 200
    client = Client(cluster)
    client.target = first
    client.start()
    recoveries, epochs = [], [cluster.status(first)["epoch"]]
    for _ in range(CUTS):
        leader = cluster.wait(cluster.leader, "a leader")
        before = len(client.acked)
        cluster.wait(lambda: len(client.acked) >= before + 100, "launches acknowledged")
        n, cut_started = len(client.ack_times), time.monotonic()
        assert _cut(cluster.dsn, cluster.procs[leader].pid, 1.0) > 0
        cut_ended = time.monotonic()
        cluster.wait(lambda: client.ack_times[-1] > cut_ended, "a launch acknowledged after the cut")
        times = [cut_started, *client.ack_times[n:]]
        new = cluster.wait(cluster.leader, "a leader after the cut")
        # the longest time without an acknowledged launch, from the cut on
        recoveries.append((max(b - a for a, b in zip(times, times[1:])), "same" if new == leader else "standby"))
        epochs.append(cluster.status(new)["epoch"])
        assert epochs[-1] > epochs[-2]  # whoever leads now (a standby, or the same broker) has a new epoch
        _check_against_database(cluster, client, new)
    client.stopping.set()
    client.join()
    conn = store.connect(cluster.dsn)
    rows = store.rows_after(conn, 0)
    conn.close()
    assert [row[1] for row in rows] == sorted(row[1] for row in rows)  # no deposed epoch appended after a cut
    _check_against_database(cluster, client, cluster.wait(cluster.leader, "a leader"))
    print(f"\n{CUTS} cuts of the leader from the database (1 s each), {len(client.acked)} acknowledged launches; "
          f"longest time without an acknowledged launch, and who led next: "
          f"{', '.join(f'{t:.3f} s ({who})' for t, who in recoveries)}")
