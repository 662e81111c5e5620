"""The paths real callers take: launches by users the scheduler has not seen, launches with a
broker's own work between calls, ``launch_many`` with names, reconnect / share / logoff,
``usher replay`` of a broker day, two threads on different pools, the simulated day and week.

Design: every benchmark runs on the suite's 1,400-server fleets (benchmarks/fleets.py, mix b:
the full constraint mix, ~60 % full, steady state), against the plain-Python ``heapq`` broker
(benchmarks/baselines.py) where the path has a counterpart there, in the same run. A *broker
round* does what a broker does around each call: the request arrives as JSON bytes and is
decoded (``json.loads``), the call is made, and a response is built and encoded
(``json.dumps(...).encode()``), so the call meets the CPU caches as a broker leaves them, not
as a tight loop does. The benchmark's own statistic is the whole round (work + calls);
``extra_info["call_ns"]`` is the call alone inside that round (``perf_counter_ns`` around the
call, the timer's own cost subtracted), which is the figure the targets speak of.

Before timing, each benchmark checks that something real was decided (PLACED, RECONNECTED,
SHARED on the expected session, sessions ended) and after it the fleet is read back
(``Fleet.check_servers``). Sizes keep ``pytest benchmarks --benchmark-disable`` at a few
seconds per benchmark; ``USHER_BENCH_WEEK=1`` adds the simulated week (about 10 s a run).

Run: see benchmarks/README.md, *Paths real callers take*.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import usher
from conftest import get_broker, get_fleet
from usher.formats.replay import replay

SIZE, MIX = 1400, "b"
PLACED, RECONNECTED, SHARED = 0, 1, 2
K = 500  # requests per round
ROUNDS = 10
WEEK = os.environ.get("USHER_BENCH_WEEK") == "1"


# ---------------------------------------------------------------- the broker's work
def _timer_ns() -> float:
    """Cost of an empty ``perf_counter_ns`` pair (subtracted from the per-call figures)."""
    pc = time.perf_counter_ns
    best = None
    for _ in range(5):
        t0 = pc()
        for _ in range(2000):
            a = pc()
            b = pc()
        del a, b
        per = (pc() - t0) / 2000 / 2  # one pair is two reads; the loop body is ~one pair
        best = per if best is None else min(best, per)
    return best


TIMER_NS = None


def _timer():
    global TIMER_NS
    if TIMER_NS is None:
        TIMER_NS = _timer_ns()
    return TIMER_NS


def requests_json(reqs, start=0):
    """The requests as a broker receives them: one JSON document (bytes) each."""
    return [json.dumps({"id": f"q{start + j}", "user": uid, "app": app, "location": loc}).encode()
            for j, (uid, _u, app, loc) in enumerate(reqs)]


def response(req, outcome, server, session):
    return json.dumps({"id": req["id"], "outcome": outcome, "server": server, "session": session}).encode()


class Calls:
    """Time spent inside the calls of a broker round (``perf_counter_ns`` around each)."""

    def __init__(self):
        self.ns = 0
        self.n = 0

    def per_call(self) -> float:
        return max(0.0, self.ns / max(1, self.n) - _timer())


def usher_broker_round(s, now, raws, calls):
    """Decode each request, launch, build the response; returns the decisions."""
    pc = time.perf_counter_ns
    launch = s.launch
    out = []
    resp = []
    for raw in raws:
        req = json.loads(raw)
        t0 = pc()
        d = launch(req["user"], req["app"], req["location"], None, False, now)
        calls.ns += pc() - t0
        out.append(d)
        resp.append(response(req, d.outcome_code, d.server, d.session_id))
    calls.n += len(raws)
    return out


def heapq_broker_round(b, names, raws, calls):
    pc = time.perf_counter_ns
    launch = b.launch
    out = []
    resp = []
    for raw in raws:
        req = json.loads(raw)
        t0 = pc()
        o, sv, sid = launch(req["user"], req["app"], req["location"])
        calls.ns += pc() - t0
        out.append((o, sv, sid))
        resp.append(response(req, o, names[sv] if sv >= 0 else None, sid))
    calls.n += len(raws)
    return out


def record(benchmark, path, impl, n, calls=None, **extra):
    benchmark.extra_info.update(kind=f"path-{path}", size=SIZE, mix=MIX, impl=impl, decisions=n, **extra)
    if calls is not None and calls.n:
        benchmark.extra_info["call_ns"] = round(calls.per_call(), 1)


def run(benchmark, setup, target, teardown, rounds=ROUNDS, calls=None):
    """``benchmark.pedantic`` with setup/teardown; the teardown also runs when disabled.
    ``calls`` (a broker round's): counted over the timed rounds only, as the round times
    are (the warmup round carries one-time work: the first lookup after the fleet's bulk
    ``add_users`` fills the key table)."""
    last = {}
    runs = {"n": 0}

    def _setup():
        last["r"] = setup()
        return (last["r"],), {}

    def _target(r):
        runs["n"] += 1
        if calls is not None and runs["n"] == 2:  # the first timed round: forget the warmup's
            calls.ns = calls.n = 0
        return target(r)

    benchmark.pedantic(_target, setup=_setup, teardown=teardown, rounds=rounds, warmup_rounds=1)
    if benchmark.disabled:
        teardown(last["r"])


@pytest.fixture(scope="module")
def fleet():
    return get_fleet(SIZE, MIX)


# ---------------------------------------------------------------- unseen users
def _unseen_ids(population):
    """User ids the fleet's directory does not hold: a population of ``population`` ids
    drawn again and again (None: one-off ids, never drawn twice)."""
    if population is None:
        counter = itertools.count()
        return lambda rng, k, busy: [f"once{next(counter):08d}" for _ in range(k)]

    def draw(rng, k, busy):
        out = []
        while len(out) < k:
            uid = f"pop{int(rng.integers(population)):06d}"
            if uid not in busy:
                busy.add(uid)
                out.append(uid)
        return out

    return draw


@pytest.mark.parametrize("impl", ["usher", "heapq"])
@pytest.mark.parametrize("population", [60_000, None], ids=["60k-users", "one-off-users"])
def test_launch_unseen(benchmark, fleet, impl, population):
    """``launch`` by users not in the directory (entitlement off: the scheduler creates each
    on its first launch), with a broker's work around each call. Each round's sessions are
    logged off in the next round's setup (the fleet stays ~60 % full, ±K sessions)."""
    draw = _unseen_ids(population)
    rng = np.random.default_rng(24)
    apps = list(fleet.apps)
    shares = np.array([fleet.apps[a].share for a in apps])
    calls = Calls()
    state = {"live": [], "busy": set(), "placed": 0, "n": 0, "q": 0}
    assert not fleet.s.enforce_entitlement
    if impl == "usher":
        s, now = fleet.s, fleet.now

        def end_round():
            for sid in state["live"]:
                s.logoff(sid, now=now)
    else:
        b, _q = get_broker(SIZE, MIX, "heapq")
        names = fleet.server_names

        def end_round():
            for sid in state["live"]:
                b.logoff(sid)

    def setup():
        fleet.complete_logons()
        end_round()
        state["live"] = []
        state["busy"] = set()
        ids = draw(rng, K, state["busy"])
        app_k = rng.choice(len(apps), size=K, p=shares / shares.sum())
        locs = rng.integers(0, len(fleet.zones), size=K)
        reqs = [(uid, -1, apps[a], fleet.zones[z]) for uid, a, z in zip(ids, app_k, locs)]
        state["q"] += K
        return {"reqs": reqs, "raws": requests_json(reqs, state["q"])}

    if impl == "usher":
        def target(r):
            r["out"] = usher_broker_round(s, now, r["raws"], calls)

        def teardown(r):
            for (_uid, _u, app, _loc), d in zip(r["reqs"], r["out"]):
                if d.outcome_code == PLACED:
                    assert fleet.valid[app][d.server_index]
                    state["live"].append(d.session_id)
            state["placed"] += len(state["live"])
            state["n"] += len(r["out"])
    else:
        def target(r):
            r["out"] = heapq_broker_round(b, names, r["raws"], calls)

        def teardown(r):
            for (_uid, _u, app, _loc), (o, sv, sid) in zip(r["reqs"], r["out"]):
                if o == PLACED:
                    assert fleet.valid[app][sv]
                    state["live"].append(sid)
            state["placed"] += len(state["live"])
            state["n"] += len(r["out"])

    try:
        run(benchmark, setup, target, teardown, calls=calls)
    finally:
        end_round()
    assert state["placed"] > 0.8 * state["n"], state
    record(benchmark, "launch-unseen", impl, K, calls, population=population or "one-off")
    fleet.check_servers()


# ---------------------------------------------------------------- known users, broker work
@pytest.mark.parametrize("impl", ["usher", "heapq"])
def test_launch_known_broker(benchmark, fleet, impl):
    """``launch`` by users of the directory holding no session, a broker's work around each
    call (``call_ns``: the call alone; the suite's tight loop is bench_placement's
    ``test_launch``)."""
    calls = Calls()
    total = {"placed": 0, "n": 0}
    if impl == "usher":
        s, now = fleet.s, fleet.now

        def setup():
            reqs = fleet.prepare(K)
            return {"reqs": reqs, "raws": requests_json(reqs)}

        def target(r):
            r["out"] = usher_broker_round(s, now, r["raws"], calls)

        def teardown(r):
            total["placed"] += fleet.settle(r["reqs"], r["out"])
            total["n"] += K
    else:
        b, q = get_broker(SIZE, MIX, "heapq")
        names = fleet.server_names

        def setup():
            reqs = q.prepare(b, K)
            return {"reqs": reqs, "raws": requests_json(reqs)}

        def target(r):
            r["out"] = heapq_broker_round(b, names, r["raws"], calls)

        def teardown(r):
            total["placed"] += q.settle(r["reqs"], r["out"])
            total["n"] += K

    run(benchmark, setup, target, teardown, calls=calls)
    assert total["placed"] > 0.8 * total["n"], total
    record(benchmark, "launch-known-broker", impl, K, calls)
    fleet.check_servers()


# ---------------------------------------------------------------- launch_many with names
@pytest.mark.parametrize("users_as", ["list", "object-array", "unseen", "desks"])
def test_launch_many_names(benchmark, fleet, users_as):
    """``launch_many`` with names for users, apps and locations: Python lists, object arrays,
    (``unseen``) lists of users not in the directory (each created by the batch), or
    (``desks``) a broker's whole requests: each user's client endpoint as well (a desk of
    their own, used again at their next launch) and the external flags (a list of bools)."""
    s, now = fleet.s, fleet.now
    n = 2000
    total = {"placed": 0, "n": 0}
    counter = itertools.count()
    state = {"unseen": []}

    def setup():
        fleet.complete_logons()
        for sid in state["unseen"]:
            s.logoff(sid, now=now)
        state["unseen"] = []
        if users_as == "unseen":  # the fleet's users only lend their apps and locations
            reqs = fleet.draw(n)
            fleet.free.extend(r[1] for r in reqs)
            users = [f"batch{next(counter):08d}" for _ in reqs]
        else:
            reqs = fleet.prepare(n)
            users = [r[0] for r in reqs]
        apps = [r[2] for r in reqs]
        locs = [r[3] for r in reqs]
        eps = [f"desk{r[1]:06d}" for r in reqs] if users_as == "desks" else None
        ext = [False] * n if users_as == "desks" else None
        if users_as == "object-array":
            users, apps, locs = (np.array(x, dtype=object) for x in (users, apps, locs))
        return {"reqs": reqs, "args": (users, apps, locs, eps, ext)}

    def target(r):
        users, apps, locs, eps, ext = r["args"]
        r["out"] = s.launch_many(users, apps, locations=locs, endpoints=eps, external=ext, now=now)

    def teardown(r):
        b = r["out"]
        placed = 0
        for (_uid, u, app, _loc), o, sv, sid in zip(r["reqs"], b.outcome.tolist(), b.server.tolist(),
                                                   b.session.tolist()):
            if o == PLACED:
                placed += 1
                assert fleet.valid[app][sv]
                if users_as == "unseen":
                    state["unseen"].append(sid)
                else:
                    fleet.live.append((sid, u, app))
                    fleet.launching.append(sid)
            elif users_as != "unseen":
                fleet.free.append(u)
        total["placed"] += placed
        total["n"] += n

    try:
        run(benchmark, setup, target, teardown)
    finally:
        for sid in state["unseen"]:
            s.logoff(sid, now=now)
    assert total["placed"] > 0.8 * total["n"], total
    record(benchmark, f"launch_many-{users_as}", "usher", n, None)
    fleet.check_servers()


# ---------------------------------------------------------------- reconnect, share, logoff
def _rotate(live, k):
    out = [live.popleft() for _ in range(k)]
    live.extend(out)
    return out


@pytest.mark.parametrize("between", ["tight", "broker"])
@pytest.mark.parametrize("impl", ["usher", "heapq"])
@pytest.mark.parametrize("path", ["reconnect", "share"])
def test_reuse(benchmark, fleet, path, impl, between):
    """``launch`` by users holding a session: reconnect (disconnected in the setup) or share,
    in a tight loop or with a broker's work around each call."""
    want = RECONNECTED if path == "reconnect" else SHARED
    calls = Calls()
    seen = {"n": 0}
    users = fleet.users
    if impl == "usher":
        s, now = fleet.s, fleet.now
        live = fleet.live
        disconnect = lambda sid: s.disconnect(sid, now=now)  # noqa: E731

        def prepare():
            fleet.complete_logons()
    else:
        b, q = get_broker(SIZE, MIX, "heapq")
        live = q.live
        disconnect = b.disconnect
        names = fleet.server_names

        def prepare():
            for sid in q.launching:
                b.logon_complete(sid)
            q.launching.clear()

    def setup():
        prepare()
        picked = _rotate(live, K)
        if path == "reconnect":
            for sid, _u, _app in picked:
                disconnect(sid)
        reqs = [(users[u], u, app, None) for _sid, u, app in picked]
        return {"reqs": reqs, "sids": [p[0] for p in picked], "raws": requests_json(reqs)}

    if impl == "usher":
        if between == "tight":
            def target(r):
                launch = s.launch
                r["out"] = [launch(uid, app, None, None, False, now) for uid, _u, app, _l in r["reqs"]]
        else:
            def target(r):
                r["out"] = usher_broker_round(s, now, r["raws"], calls)

        def results(r):
            return [(d.outcome_code, d.session_id) for d in r["out"]]
    else:
        if between == "tight":
            def target(r):
                launch = b.launch
                r["out"] = [launch(uid, app) for uid, _u, app, _l in r["reqs"]]
        else:
            def target(r):
                r["out"] = heapq_broker_round(b, names, r["raws"], calls)

        def results(r):
            return [(o, sid) for o, _sv, sid in r["out"]]

    def teardown(r):
        for sid, (o, got) in zip(r["sids"], results(r)):
            assert o == want and got == sid, (o, got, sid)
        seen["n"] += len(r["sids"])

    run(benchmark, setup, target, teardown, calls=calls)
    assert seen["n"] > 0
    record(benchmark, f"{path}-{between}", impl, K, calls if between == "broker" else None)
    fleet.check_servers()


@pytest.mark.parametrize("between", ["tight", "broker"])
@pytest.mark.parametrize("impl", ["usher", "heapq"])
def test_logoff(benchmark, fleet, impl, between):
    """``logoff`` of the oldest sessions, in a tight loop or with a broker's work around each
    call (the request names the session; the response acknowledges it)."""
    calls = Calls()
    ended = {"n": 0}
    if impl == "usher":
        s, now = fleet.s, fleet.now
        live, free = fleet.live, fleet.free
        logoff = lambda sid: s.logoff(sid, now)  # noqa: E731  (tight loop binds s.logoff itself)
    else:
        b, q = get_broker(SIZE, MIX, "heapq")
        live, free = q.live, q.free
        logoff = b.logoff

    def setup():
        if impl == "usher":
            fleet.complete_logons()
        picked = [live.popleft() for _ in range(K)]
        free.extend(u for _sid, u, _app in picked)
        sids = [sid for sid, _u, _app in picked]
        raws = [json.dumps({"id": f"q{j}", "session": sid}).encode() for j, sid in enumerate(sids)]
        return {"sids": sids, "raws": raws}

    if between == "tight":
        if impl == "usher":
            def target(r):
                off = s.logoff
                for sid in r["sids"]:
                    off(sid, now)
        else:
            def target(r):
                off = b.logoff
                for sid in r["sids"]:
                    off(sid)
    else:
        def target(r):
            pc = time.perf_counter_ns
            resp = []
            for raw in r["raws"]:
                req = json.loads(raw)
                t0 = pc()
                logoff(req["session"])
                calls.ns += pc() - t0
                resp.append(json.dumps({"id": req["id"], "ok": True}).encode())
            calls.n += len(r["raws"])

    def teardown(r):
        ended["n"] += len(r["sids"])

    before = fleet.s.live_sessions
    run(benchmark, setup, target, teardown, calls=calls)
    if impl == "usher":
        assert fleet.s.live_sessions == before - ended["n"], "logoff did not end the sessions"
        while ended["n"]:  # refill to the steady state, untimed
            m = min(ended["n"], 10_000)
            reqs = fleet.draw(m)
            fleet.settle(reqs, [s.launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs])
            ended["n"] -= m
        fleet.complete_logons()
    else:
        assert ended["n"] > 0
    record(benchmark, f"logoff-{between}", impl, K, calls if between == "broker" else None)
    fleet.check_servers()


# ---------------------------------------------------------------- two threads, two pools
def _two_pool_apps(fleet):
    """Two apps published on disjoint pool lists (a thread each)."""
    apps = list(fleet.apps.values())
    for a, b in itertools.combinations(apps, 2):
        if not set(a.pools) & set(b.pools):
            return a.name, b.name
    raise AssertionError("no two apps on disjoint pools in the fleet")


def test_threads_two_pools(benchmark, fleet):
    """Two threads calling ``launch``, each for an app of its own pools; ``extra_info``
    has the throughput ratio to one thread doing both halves, measured in alternating
    rounds (untimed by pytest-benchmark, whose statistic is the two-thread round)."""
    s, now = fleet.s, fleet.now
    app_a, app_b = _two_pool_apps(fleet)
    k = 1000
    pool = ThreadPoolExecutor(max_workers=2)
    total = {"placed": 0, "n": 0}

    def work(reqs):
        launch = s.launch
        return [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]

    def setup():  # the round's sessions are logged off in its teardown: the fleet stays as it was
        fleet.complete_logons()
        reqs = fleet.draw(2 * k)
        halves = ([(uid, u, app_a, loc) for uid, u, _app, loc in reqs[:k]],
                  [(uid, u, app_b, loc) for uid, u, _app, loc in reqs[k:]])
        return {"reqs": halves[0] + halves[1], "halves": halves}

    def two(r):
        futures = [pool.submit(work, h) for h in r["halves"]]
        r["out"] = [d for f in futures for d in f.result()]

    def one(r):
        r["out"] = pool.submit(lambda: work(r["halves"][0]) + work(r["halves"][1])).result()

    def teardown(r):
        sids = []
        for (_uid, u, app, _loc), d in zip(r["reqs"], r["out"]):
            if d.outcome_code == PLACED:
                assert fleet.valid[app][d.server_index]
                sids.append(d.session_id)
            fleet.free.append(u)
        assert len(sids) == len(set(sids)), "two threads got the same session"
        for sid in sids:
            s.logoff(sid, now=now)
        total["placed"] += len(sids)
        total["n"] += len(r["reqs"])

    times = {"one": [], "two": []}
    try:
        pool.submit(lambda: None).result()
        for _ in range(2 if benchmark.disabled else 6):  # alternating, for the ratio
            for name, fn in (("one", one), ("two", two)):
                r = setup()
                t0 = time.perf_counter()
                fn(r)
                times[name].append(time.perf_counter() - t0)
                teardown(r)
        run(benchmark, setup, two, teardown)
    finally:
        pool.shutdown()
    assert total["placed"] > 0.8 * total["n"], total
    ratio = float(np.median(times["one"]) / np.median(times["two"]))
    record(benchmark, "threads-two-pools", "usher", 2 * k, None, ratio_to_one_thread=round(ratio, 2),
           apps=[app_a, app_b])
    fleet.check_servers()


# ---------------------------------------------------------------- replay and the simulated days
@pytest.fixture(scope="session")
def day_trace(tmp_path_factory, request):
    """The simulated day (faults on) exported as a trace, as ``usher simulate --faults
    --export-trace`` writes it (~700,000 lines); with ``--benchmark-disable`` (CI) a
    50,000-line broker day of bench_replay.py instead (the export takes ~10 s)."""
    folder = tmp_path_factory.mktemp("paths-day")
    path = folder / "day.jsonl"
    if request.config.getoption("benchmark_disable"):
        from bench_replay import make_trace

        make_trace(path, 50_000)
        return path
    subprocess.run([sys.executable, "-m", "usher.cli", "simulate", "--no-progress", "--faults",
                    "--export-trace", str(path), "--out", str(folder / "out")],
                   check=True, capture_output=True)
    return path


def test_replay_day(benchmark, day_trace):
    """``usher.formats.replay.replay`` of the simulated day's trace (what ``usher replay``
    runs), decisions encoded to a discarded sink; ops/s in ``extra_info``. The suite's
    1,000,000-line broker day is bench_replay.py's."""

    class Sink:
        def write(self, data):
            pass

    seen = []

    def target():
        seen.append(replay(day_trace, usher.Scheduler(), out=Sink(), keep=False))

    benchmark.pedantic(target, rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    r = seen[-1]
    assert not r.errors, r.errors[:3]
    assert r.outcomes.get("placed", 0) > 0.5 * r.launches
    record(benchmark, "replay-day", "usher", 1, None, lines=r.ops,
           ops_per_second=round(max(x.ops_per_second for x in seen)))


def _simulate(days):
    from usher.sim.days import simulate_days
    from usher.sim.scenario import Scenario

    return simulate_days(Scenario().with_changes(day={"days": days}))


@pytest.mark.parametrize("days", [1, pytest.param(7, marks=pytest.mark.skipif(
    not WEEK, reason="the simulated week takes ~10 s a run: USHER_BENCH_WEEK=1"))], ids=["day", "week"])
def test_simulate_warm(benchmark, days):
    """``usher simulate``'s run (``simulate_days``) of the default day or a week, in a
    process that already ran one (warm: kernels compiled, modules imported)."""
    seen = []
    if not benchmark.disabled:
        _simulate(1)  # warm

    def target():
        seen.append(_simulate(days))

    benchmark.pedantic(target, rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    run_ = seen[-1]
    assert len(run_.days) == days
    k = run_.days[0].kpis
    assert k["launches.placed"] > 50_000 and k["books.mismatch"] == 0
    record(benchmark, f"simulate-{days}d", "usher", 1, None)
