"""Crash tests with real processes: ``usher serve --journal DIR`` is killed with
SIGKILL at random points while a client drives launches, then restarted. Every
acknowledged decision must be in the recovered state, and a plain replay of the
journal must give the recovered state. Rounds: 3 (default profile), 20 (thorough)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import msgspec
import pytest

import usher.journal as journal
from journal_workload import PRELUDE, state_of, stream
from usher import Scheduler
from usher.formats.replay import Replayer

ROUNDS = 20 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(directory, port, snapshot_every=0):
    proc = subprocess.Popen(
        [sys.executable, "-m", "usher.cli", "serve", "--journal", str(directory), "--listen", f"127.0.0.1:{port}",
         "--snapshot-every", str(snapshot_every), "--no-log-decisions"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("usher serve did not become ready")


@pytest.mark.parametrize("snapshot_every", [0, 150])
def test_kill_9_loses_no_acknowledged_decision(tmp_path, snapshot_every):
    """With ``snapshot_every`` 150 the kills land around snapshots written by forked
    children (the journal's older segments are then gone: the acknowledged launches
    are checked in the recovered state only)."""
    rng = random.Random(2024)
    directory = tmp_path / "state"
    acked: dict = {}  # launch id -> its acknowledged decision line
    for rnd in range(ROUNDS):
        port = _free_port()
        proc = _start(directory, port, snapshot_every)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            if rnd == 0:
                assert client.post("/v1/ops", json=PRELUDE).status_code == 200
            ops = stream(rnd, 2000, t0=10_000.0 * (rnd + 1), prefix=f"k{rnd}-")
            killer = threading.Timer(rng.uniform(0.05, 0.6), os.kill, (proc.pid, signal.SIGKILL))
            killer.start()
            try:
                size = rng.choice((1, 5, 20))
                for k in range(0, len(ops), size):
                    chunk = ops[k:k + size]
                    r = client.post("/v1/ops", json=chunk)
                    for line in r.text.splitlines():
                        d = msgspec.json.decode(line)
                        if "outcome" in d:
                            acked[d["id"]] = d
            except httpx.HTTPError:
                pass  # the server was killed mid-request: that request was not acknowledged
            finally:
                killer.join()
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        found = journal.recover(directory)
        names = found.replayer.names
        missing = [rid for rid in acked if rid not in names]
        assert not missing, f"round {rnd}: acknowledged launches lost: {missing[:5]}"
        if snapshot_every:
            assert all(names[rid] == names[d["session"]] for rid, d in acked.items() if d.get("session") is not None)
            continue
        # the journalled decision of every acknowledged launch is the one the client got
        journalled = {}
        for op, decision in _records(directory):
            if decision:
                d = msgspec.json.decode(decision)
                journalled[d["id"]] = d
        assert all(journalled[rid] == d for rid, d in acked.items())
        # a plain replay of the journal gives the recovered state
        plain = Replayer(Scheduler(), keep=False)
        plain.feed(list(journal.trace_lines(directory)))
        assert not plain.errors
        assert state_of(plain) == state_of(found.replayer)
    if snapshot_every:  # children did write snapshots
        assert any(f.startswith("snapshot-") and int(f[9:25]) > 0 for f in os.listdir(directory))


def _records(directory):
    from usher.journal.records import scan
    from usher.journal.store import _files

    _, segments = _files(directory)
    starts = sorted(segments)
    for k, start in enumerate(starts):
        with open(segments[start], "rb") as f:
            records, _ = scan(f.read(), segments[start], last=k == len(starts) - 1)
        yield from records
