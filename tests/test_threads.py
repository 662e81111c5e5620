"""Threads: several threads mixing launches, logoffs, disconnects, telemetry and
configuration on one scheduler, with and without ``now``. Every check and write
of one operation happens under the scheduler's lock, so afterwards: the
sessions per server equal the servers' counts, no user or server exists twice,
and the default clock (``now=None``) never raises TimeWentBackwards.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import numpy as np

import usher

N_THREADS = 4
OPS = 6000 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 1500


def _scheduler():
    s = usher.Scheduler(seed=3)
    s.add_pool("p", logon_tolerance=1000)
    s.add_app("a", ["p"])
    for i in range(6):
        s.add_server(f"s{i}", f"z{i % 2}", "p", max_sessions=10_000)
    return s


def _worker(s, k, errors, ids, barrier, with_now):
    rng = np.random.default_rng(k)
    live = []
    barrier.wait()
    for j in range(OPS):
        op = rng.integers(0, 8)
        now = None if not with_now else time.monotonic()  # a time per thread: may be behind another's
        try:
            if op <= 2:
                d = s.launch(f"u{rng.integers(0, 50)}", "a", endpoint=f"pc{rng.integers(0, 20)}", now=now)
                if d.session is not None and d.outcome == usher.Outcome.PLACED:
                    live.append(d.session)
            elif op == 3 and live:
                s.logoff(live.pop(rng.integers(0, len(live))))
            elif op == 4 and live:
                s.disconnect(live[rng.integers(0, len(live))])
            elif op == 5:
                s.telemetry(f"s{rng.integers(0, 6)}", cpu=float(rng.integers(0, 100)))
            elif op == 6:
                name = f"dir{rng.integers(0, 200)}"
                s.add_user(name)
                ids.append(("user", name))
            else:
                name = f"x{rng.integers(0, 40)}"
                s.add_server(name, "z0", "p", now=now)
                ids.append(("server", name))
        except (usher.DuplicateName, usher.InvalidState, usher.SessionEnded):
            pass  # another thread added it first, or ended / disconnected the session
        except usher.TimeWentBackwards as exc:
            if now is None or exc.field != "now":
                errors.append(repr(exc))
        except usher.UnknownSession:
            pass
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))


def _run(with_now):
    s = _scheduler()
    errors, ids = [], []
    barrier = threading.Barrier(N_THREADS)
    threads = [threading.Thread(target=_worker, args=(s, k, errors, ids, barrier, with_now))
               for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return s, errors, ids


def _check_invariants(s, ids):
    servers = s.servers()
    sessions = s.sessions()
    per_server = Counter(sessions["server"].tolist())
    for row in servers:
        assert per_server.get(row["name"], 0) == row["sessions"], row["name"]
    assert s.live_sessions == len(sessions)
    assert len(set(s.user_ids)) == len(s.user_ids)
    assert len(set(s.server_names())) == len(s.server_names())
    # the key table (the user ids' only index) finds every user at its index
    with s._locked():
        assert all(s._find_user(u) == i for i, u in enumerate(s._user_names) if u is not None)
    # every name that some thread added exactly once is there once
    for kind, name in ids:
        if kind == "user":
            assert s.user_ids.count(name) == 1
        else:
            assert s.server_names().count(name) == 1
    # the server add that won is the only one: indices are not duplicated
    assert len(set(servers["index"].tolist())) == len(servers)


def test_threads_with_the_default_clock():
    s, errors, ids = _run(with_now=False)
    assert errors == []
    _check_invariants(s, ids)


def test_threads_with_and_without_now():
    s, errors, ids = _run(with_now=True)
    assert errors == []
    _check_invariants(s, ids)


def test_add_user_racing_launch_of_the_same_id_creates_one_user():
    for round_ in range(20):
        s = _scheduler()
        barrier = threading.Barrier(2)
        out = []

        def add():
            barrier.wait()
            try:
                s.add_user(f"r{round_}")
            except usher.DuplicateName:
                out.append("dup")

        def launch():
            barrier.wait()
            s.launch(f"r{round_}", "a")

        threads = [threading.Thread(target=add), threading.Thread(target=launch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.user_ids.count(f"r{round_}") == 1


def test_two_add_server_of_one_name_one_wins():
    for _ in range(20):
        s = _scheduler()
        barrier = threading.Barrier(2)
        wins = []

        def add():
            barrier.wait()
            try:
                s.add_server("dup", "z0", "p")
                wins.append(1)
            except usher.DuplicateName:
                pass

        threads = [threading.Thread(target=add) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins == [1] and s.server_names().count("dup") == 1


_WAITER = r"""
import threading, time
import usher

s = usher.Scheduler(seed=3)
s.add_pool("p")
s.add_app("a", ["p"])
s.add_server("s0", "z0", "p")
started, out = threading.Event(), []

def launcher():
    started.set()
    out.append(s.launch("w", "a", now=1.0))

s._lock_acquire()  # the scheduler's lock, held while this thread runs Python code
try:
    t = threading.Thread(target=launcher)
    t.start()
    started.wait()
    spins, until = 0, time.monotonic() + 0.2
    while time.monotonic() < until:  # needs the GIL back from the launcher, again and again
        spins += 1
finally:
    s._lock_release()
t.join()
assert spins > 0 and out[0].outcome == usher.Outcome.PLACED, (spins, out)
print("ok")
"""


def test_a_thread_waiting_for_the_lock_leaves_the_gil_to_its_holder():
    """A launch that finds the scheduler's lock taken waits for it without the GIL,
    so the holder, running Python code under the lock, goes on and releases it (a
    waiter keeping the GIL would hang both: run in a child with a time limit)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WAITER], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
