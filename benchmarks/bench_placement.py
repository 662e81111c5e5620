"""Placement benchmarks: usher against three baseline brokers, on the same fleets.

Design: every benchmark that changes the fleet uses ``benchmark.pedantic`` with an untimed
setup that restores the steady state (see benchmarks/fleets.py: finish earlier logons, log
off as many sessions as the round will place, draw the requests) and a teardown that checks
what the round did (every PLACED session on a server valid for its app, the expected outcome
for reconnect/share, PLACED count > 0). After each benchmark ``Fleet.check_servers`` reads the
whole fleet back through ``s.servers()`` (no session on an unavailable server, sessions ≤
max, load index = formula, still 45–75 % full). One round is ``decisions`` operations; the
report divides the round's median time by it. Baselines (scan / heapq / numpy, see
benchmarks/baselines.py) were first checked to place exactly like usher.

Run: see benchmarks/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fleets
from conftest import FULL

# 100,000 servers only on request (USHER_BENCH_FULL=1): its fleets hold 1.2 M sessions
SIZES = [pytest.param(n, id=f"{n}srv") for n in fleets.SIZES if n < 100_000 or FULL]
MIXES = [pytest.param(m, id=f"mix-{m}") for m in fleets.MIXES]
IMPLS = ["usher", "scan", "heapq", "numpy"]

PLACED, RECONNECTED, SHARED = 0, 1, 2


def plan(impl: str, size: int):
    """(operations per round, rounds) for a launch benchmark: about 0.1–0.5 s per benchmark.
    The two fast implementations get many short rounds: their medians are what the
    ratio targets compare, and a round is short enough to be hit by a scheduler tick."""
    if impl == "usher":
        return 500, 100
    if impl == "heapq":
        return 300, 40
    if impl == "numpy":
        return {1400: 200, 10_000: 50}.get(size, 10), 10
    return {1400: 40, 10_000: 6}.get(size, 2), 5  # scan: O(servers) per launch


def run(benchmark, setup, target, teardown, rounds, warmup=1):
    """``benchmark.pedantic`` with setup/teardown; with --benchmark-disable (one plain run,
    where pytest-benchmark skips the teardown) the teardown still runs."""
    last = {}

    def _setup():
        last["r"] = setup()
        return (last["r"],), {}

    benchmark.pedantic(target, setup=_setup, teardown=teardown, rounds=rounds, warmup_rounds=warmup)
    if benchmark.disabled:
        teardown(last["r"])


def record(benchmark, kind, size, mix, impl, decisions, placed=None, **extra):
    benchmark.extra_info.update(kind=kind, size=size, mix=mix, impl=impl, decisions=decisions, **extra)
    if placed is not None:
        benchmark.extra_info["placed"] = placed


# ---------------------------------------------------------------- single launch
def usher_launches(benchmark, fleet, size, mix, kind, by_index=False, warm=False):
    """One usher launch per decision, in rounds of steady-state requests: users named by id,
    or by index (``launch_by_index``); new users every round, or (``warm``) the same users,
    whose sessions the teardown logs off again."""
    k, rounds = plan("usher", size)
    s, now = fleet.s, fleet.now
    total = {"placed": 0, "n": 0}

    def setup():
        return {"reqs": fleet.draw(k) if warm else fleet.prepare(k)}

    if by_index:
        def target(r):
            launch = s.launch_by_index
            r["out"] = [launch(u, app, loc, None, False, now) for _uid, u, app, loc in r["reqs"]]
    else:
        def target(r):
            launch = s.launch
            r["out"] = [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in r["reqs"]]

    def teardown(r):
        placed = fleet.settle(r["reqs"], r["out"])
        total["placed"] += placed
        total["n"] += len(r["reqs"])
        if warm:
            fleet.recycle(placed)

    run(benchmark, setup, target, teardown, rounds)
    assert total["placed"] > 0.8 * total["n"], total
    record(benchmark, kind, size, mix, "usher", k, total["placed"])
    fleet.check_servers()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_launch(benchmark, fleet, broker, size, mix, impl):
    """One ``launch`` per decision through the public API, fleet ~60 % full."""
    if impl == "usher":
        usher_launches(benchmark, fleet, size, mix, "launch")
        return
    k, rounds = plan(impl, size)
    total = {"placed": 0, "n": 0}
    b, q = broker

    def setup():
        return {"reqs": q.prepare(b, k)}

    def target(r):
        launch = b.launch
        r["out"] = [launch(uid, app, loc) for uid, _u, app, loc in r["reqs"]]

    def teardown(r):
        total["placed"] += q.settle(r["reqs"], r["out"])
        total["n"] += len(r["reqs"])

    run(benchmark, setup, target, teardown, rounds)
    assert total["placed"] > 0.8 * total["n"], total
    record(benchmark, "launch", size, mix, impl, k, total["placed"])
    fleet.check_servers()


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_launch_warm(benchmark, fleet, size, mix):
    """``test_launch`` with the same users every round: each round's sessions are logged off
    in the teardown, so the next round's users and the session slots they get are already
    in the CPU caches (the servers are not: a pick moves a server to the back of its ties,
    so the next round goes to other servers). Set against ``test_launch`` at the same size,
    it separates the misses on the per-user working set, which grows with the fleet (1.3 M
    users at 100,000 servers), from the rest: deeper trees and server records."""
    usher_launches(benchmark, fleet, size, mix, "launch-warm", warm=True)


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_launch_by_index(benchmark, fleet, size, mix):
    """``test_launch`` with the user named by its index (``launch_by_index``) instead of its
    id: the same requests and steady state, without the user-id lookup."""
    usher_launches(benchmark, fleet, size, mix, "launch-index", by_index=True)


# ---------------------------------------------------------------- batches
@pytest.mark.parametrize("users_as", ["indices", "ids"])
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_launch_many(benchmark, fleet, size, mix, users_as):
    """``launch_many`` on a batch (app index array, location names; users as an index array,
    or as the broker's user ids); the baselines have no batch API: the report compares with
    their launch loop (test_launch)."""
    s, now = fleet.s, fleet.now
    n = min(10_000, len(fleet.live) // 8)
    app_idx = {a: i for i, a in enumerate(s.app_names)}
    total = {"placed": 0}

    def setup():
        reqs = fleet.prepare(n)
        if users_as == "indices":
            users = np.array([r[1] for r in reqs], dtype=np.int64)  # user k was added k-th
        else:
            users = [r[0] for r in reqs]
        apps = np.array([app_idx[r[2]] for r in reqs], dtype=np.int64)
        locs = None if mix == "a" else [r[3] for r in reqs]
        return {"reqs": reqs, "args": (users, apps, locs)}

    def target(r):
        users, apps, locs = r["args"]
        r["out"] = s.launch_many(users, apps, locations=locs, now=now)

    def teardown(r):
        b = r["out"]
        placed = 0
        for (uid, u, app, _loc), o, sv, sid in zip(r["reqs"], b.outcome.tolist(), b.server.tolist(),
                                                   b.session.tolist()):
            if o == PLACED:
                placed += 1
                assert fleet.valid[app][sv], f"{app} placed on invalid server {sv}"
                fleet.live.append((sid, u, app))
                fleet.launching.append(sid)
            else:
                fleet.free.append(u)
        total["placed"] += placed

    assert s.user_indices([fleet.users[0], fleet.users[-1]]).tolist() == [0, len(fleet.users) - 1]
    run(benchmark, setup, target, teardown, rounds=10)
    assert total["placed"] > 0
    record(benchmark, "launch_many" if users_as == "indices" else "launch_many-ids", size, mix, "usher", n,
           total["placed"])
    fleet.check_servers()


# ---------------------------------------------------------------- reconnect, share, logoff
def _rotate(live, k):
    """The ``k`` oldest live sessions, moved to the back of the queue (they stay live)."""
    out = [live.popleft() for _ in range(k)]
    live.extend(out)
    return out


@pytest.mark.parametrize("path", ["reconnect", "share"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_reuse(benchmark, fleet, broker, size, mix, impl, path):
    """``launch`` by users who hold a session: reconnect (the session was disconnected in the
    untimed setup) or share (an active session of the same pool takes the app)."""
    k, rounds = 500, 10
    want = RECONNECTED if path == "reconnect" else SHARED
    seen = {"n": 0}
    if impl == "usher":
        s, now, users = fleet.s, fleet.now, fleet.users

        def setup():
            fleet.complete_logons()
            picked = _rotate(fleet.live, k)
            if path == "reconnect":
                for sid, _u, _app in picked:
                    s.disconnect(sid, now=now)
            return {"reqs": [(users[u], app, sid) for sid, u, app in picked]}

        def target(r):
            launch = s.launch
            r["out"] = [launch(uid, app, None, None, False, now) for uid, app, _sid in r["reqs"]]

        def teardown(r):
            for (_uid, _app, sid), d in zip(r["reqs"], r["out"]):
                assert d.outcome_code == want and d.session_id == sid, (d, sid)
            seen["n"] += len(r["out"])
    else:
        b, q = broker
        users = fleet.users

        def setup():
            for sid in q.launching:
                b.logon_complete(sid)
            q.launching.clear()
            picked = _rotate(q.live, k)
            if path == "reconnect":
                for sid, _u, _app in picked:
                    b.disconnect(sid)
            return {"reqs": [(users[u], app, sid) for sid, u, app in picked]}

        def target(r):
            launch = b.launch
            r["out"] = [launch(uid, app) for uid, app, _sid in r["reqs"]]

        def teardown(r):
            for (_uid, _app, sid), (o, _sv, got) in zip(r["reqs"], r["out"]):
                assert o == want and got == sid, (o, got, sid)
            seen["n"] += len(r["out"])

    run(benchmark, setup, target, teardown, rounds)
    assert seen["n"] > 0
    record(benchmark, path, size, mix, impl, k)
    fleet.check_servers()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_logoff(benchmark, fleet, broker, size, mix, impl):
    """``logoff`` of the oldest sessions (usher refills the fleet afterwards, untimed)."""
    k, rounds = (500, 10) if impl == "usher" else (100, 10)
    ended = {"n": 0}
    if impl == "usher":
        s, now = fleet.s, fleet.now
        live, free = fleet.live, fleet.free
    else:
        b, q = broker
        live, free = q.live, q.free

    def setup():
        if impl == "usher":
            fleet.complete_logons()
        picked = [live.popleft() for _ in range(k)]
        free.extend(u for _sid, u, _app in picked)
        return {"sids": [sid for sid, _u, _app in picked]}

    if impl == "usher":
        def target(r):
            logoff = s.logoff
            for sid in r["sids"]:
                logoff(sid, now)
    else:
        def target(r):
            logoff = b.logoff
            for sid in r["sids"]:
                logoff(sid)

    def teardown(r):
        ended["n"] += len(r["sids"])

    before = fleet.s.live_sessions
    run(benchmark, setup, target, teardown, rounds)
    if impl == "usher":
        assert fleet.s.live_sessions == before - ended["n"], "logoff did not end the sessions"
        while ended["n"]:  # refill to the steady state, untimed
            m = min(ended["n"], 10_000)
            reqs = fleet.draw(m)
            ds = [fleet.s.launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]
            fleet.settle(reqs, ds)
            ended["n"] -= m
        fleet.complete_logons()
    else:
        assert ended["n"] > 0
    record(benchmark, "logoff", size, mix, impl, k)
    fleet.check_servers()


# ---------------------------------------------------------------- explain, threads
@pytest.mark.parametrize("explain", [False, True], ids=["explain-off", "explain-on"])
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_explain(benchmark, fleet, size, mix, explain):
    """``launch(..., explain=True)`` against the same launches without an explanation."""
    k = 100 if explain else 500
    s, now = fleet.s, fleet.now
    total = {"placed": 0}

    def setup():
        return {"reqs": fleet.prepare(k)}

    def target(r):
        launch = s.launch
        r["out"] = [launch(uid, app, loc, None, False, now, explain) for uid, _u, app, loc in r["reqs"]]

    def teardown(r):
        if explain:
            assert all(d.explanation is not None and d.explanation.pools for d in r["out"])
        total["placed"] += fleet.settle(r["reqs"], r["out"])

    run(benchmark, setup, target, teardown, rounds=10)
    assert total["placed"] > 0
    record(benchmark, "explain-on" if explain else "explain-off", size, mix, "usher", k, total["placed"])
    fleet.check_servers()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", [p for p in SIZES if p.values[0] < 100_000])
def test_threads(benchmark, fleet, size, mix, threads):
    """``threads`` threads calling ``launch`` on one scheduler at once (decisions/s)."""
    k = 1000  # per thread
    s, now = fleet.s, fleet.now
    total = {"placed": 0}
    pool = ThreadPoolExecutor(max_workers=threads)

    def work(reqs):
        launch = s.launch
        return [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]

    def setup():
        reqs = fleet.prepare(k * threads)
        return {"reqs": reqs, "parts": [reqs[j::threads] for j in range(threads)]}

    def target(r):
        futures = [pool.submit(work, part) for part in r["parts"]]
        r["out"] = [f.result() for f in futures]

    def teardown(r):
        reqs = [q for part in r["parts"] for q in part]
        out = [d for part in r["out"] for d in part]
        total["placed"] += fleet.settle(reqs, out)
        sids = [d.session_id for d in out if d.outcome_code == PLACED]
        assert len(sids) == len(set(sids)), "two threads got the same session"

    try:
        pool.submit(lambda: None).result()  # start the workers before timing
        run(benchmark, setup, target, teardown, rounds=10)
    finally:
        pool.shutdown()
    assert total["placed"] > 0
    record(benchmark, f"threads-{threads}", size, mix, "usher", k * threads, total["placed"], threads=threads)
    fleet.check_servers()


# ---------------------------------------------------------------- telemetry (changes cpu: last)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("size", SIZES)
def test_telemetry(benchmark, fleet, broker, size, mix, impl):
    """``telemetry_many`` with cpu and mem for every server of the fleet (one call per round;
    the report gives ns per server). cpu drawn in [5, 60] %: nobody becomes full."""
    n = len(fleet.server_names)
    idx = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(n)
    if impl in ("usher", "numpy"):
        rounds = 30
    else:
        rounds = 10 if size <= 1400 else 3

    def setup():
        return {"cpu": rng.uniform(5.0, 60.0, n), "mem": rng.uniform(10.0, 80.0, n)}

    if impl == "usher":
        s, now = fleet.s, fleet.now

        def target(r):
            s.telemetry_many(idx, cpu=r["cpu"], mem=r["mem"], now=now)

        def teardown(r):
            got = s.server_field("cpu")
            assert np.array_equal(got[:n], r["cpu"])
    else:
        b, _q = broker

        def target(r):
            b.telemetry_many(idx, r["cpu"])

        def teardown(r):
            pass

    run(benchmark, setup, target, teardown, rounds)
    record(benchmark, "telemetry", size, mix, impl, n)
    if impl == "usher":
        rows = fleet.check_servers()
        # the cpu rule of mix (b)'s desktop pool: load index = formula (docs/SEMANTICS.md)
        for r in rows[rows["pool"] == "desktop"][:200]:
            assert r["load_index"] == fleets.expected_load_index(
                int(r["sessions"]), int(r["max_sessions"]), float(r["cpu"]), 90.0, ("sessions", "cpu"))


# ---------------------------------------------------------------- import
def test_import(benchmark):
    """``import usher`` in a fresh interpreter with a warm numba cache (whole subprocess
    timed; extra_info.import_s is the import alone, measured inside it)."""
    code = "import time; t = time.perf_counter(); import usher; print(time.perf_counter() - t)"
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/numba_cache")
    seen = []

    def target():
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        seen.append(float(out.stdout.strip().splitlines()[-1]))

    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)  # warm the cache
    benchmark.pedantic(target, rounds=5, warmup_rounds=0)
    benchmark.extra_info.update(kind="import", size=0, mix="-", impl="usher", decisions=1,
                                import_s=float(np.median(seen)), import_all_s=seen)
