"""Replay throughput: ``usher.formats.replay.replay`` on a broker day of 1,000,000 trace lines.

The trace (generated once per session into a temporary folder) configures a fleet of
600 servers in 3 zones and 2 pools, 3 apps and 20,000 users, then plays a day of
sessions: launch, logon_done 5-40 s later, for some users a disconnect and a
reconnecting launch from another endpoint, logoff; plus telemetry from a tenth of the
servers every 15 s (runs of consecutive telemetry lines, as brokers batch them). Line
mix: 24 % launch, 19 % logon_done, 5 % disconnect, 19 % logoff, 31 % telemetry, 2 %
configuration. Every line applies (the test checks: no error, something placed).

Target: >= 1,000,000 ops/s (benchmarks/README.md has the current figures). The replay adds
msgspec decoding, dispatch and building and encoding the decision lines to the engine's
own calls. The loop is compiled (formats/_replayloop.pyx): a launch reaches the engine
through its row-writing C entry (the decision line made from the row, no Decision
object), runs of session lines go to the engine's session_ops_many kernel as C arrays,
telemetry runs through telemetry_many (their columns filled as arrays in the compiled
loop); only runs of >= 1024 launches are batched.

Run:
    NUMBA_CACHE_DIR=/tmp/numba_cache pytest benchmarks/bench_replay.py --benchmark-only
    USHER_BENCH_LINES=200000 ... for a shorter trace.

The benchmark reports ops/s in ``extra_info`` (``ops_per_second``), and the batched and
line-by-line (``batch=False``) variants separately.
"""

from __future__ import annotations

import heapq
import os
import random

import msgspec
import pytest

import usher
from usher.formats.replay import replay

N_LINES = int(os.environ.get("USHER_BENCH_LINES", "1000000"))


def make_trace(path, n_lines: int = N_LINES, seed: int = 11) -> dict:
    """Write a broker-day trace of about ``n_lines`` lines to ``path``; returns counts by op."""
    rng = random.Random(seed)
    enc = msgspec.json.Encoder()
    zones = ["DC-North", "DC-Central", "DC-South"]
    lines = []
    add = lines.append
    add({"t": 0.0, "op": "settings", "seed": 7, "enforce_entitlement": False})
    add({"t": 0.0, "op": "licences", "cap": 30000})
    add({"t": 0.0, "op": "pool", "name": "records", "zone_preference": ["user_home", "user_location"],
         "logon_tolerance": 2})
    add({"t": 0.0, "op": "pool", "name": "imaging", "zone_preference": ["user_home"],
         "load_rules": ["sessions", "cpu"]})
    add({"t": 0.0, "op": "app", "name": "patient-record", "pools": ["records"]})
    add({"t": 0.0, "op": "app", "name": "lab", "pools": ["records"]})
    add({"t": 0.0, "op": "app", "name": "pacs-viewer", "pools": ["imaging"], "tag_restriction": "imaging"})
    servers = []
    for i in range(600):
        imaging = i < 60
        name = f"{'img' if imaging else 'rec'}-{i:04d}"
        servers.append(name)
        add({"t": 0.0, "op": "server", "name": name, "zone": zones[i % 3],
             "pool": "imaging" if imaging else "records", "tags": ["imaging"] if imaging else [],
             "max_sessions": 40 if imaging else 60})
    n_users = 20000
    for u in range(n_users):
        add({"t": 0.0, "op": "user", "id": f"u{u:05d}", "home_zone": zones[u % 3]})

    # events: (time, seq, kind, payload); a user has at most one session at a time
    events = []
    seq = 0
    day = 86400.0
    per_session = 2.75  # lines per start drawn (launch, logon, logoff, reconnects; busy users skip)
    n_sessions = int((n_lines - len(lines)) * 0.82 / per_session)
    starts = sorted(rng.uniform(0, day * 0.9) for _ in range(n_sessions))
    free_at = [0.0] * n_users
    for k, t in enumerate(starts):
        u = rng.randrange(n_users)
        if free_at[u] > t:
            continue
        app = "pacs-viewer" if rng.random() < 0.08 else ("lab" if rng.random() < 0.1 else "patient-record")
        length = rng.uniform(300, 5400)
        end = t + length
        free_at[u] = end + 1.0
        rid = f"r{k}"
        user = f"u{u:05d}"
        seq += 1
        heapq.heappush(events, (t, seq, {"op": "launch", "id": rid, "user": user, "app": app,
                                         "location": zones[(u + (rng.random() < 0.2)) % 3],
                                         "endpoint": f"pc-{u}"}))
        seq += 1
        heapq.heappush(events, (t + rng.uniform(5, 40), seq, {"op": "logon_done", "session": rid}))
        if rng.random() < 0.25:
            td = t + rng.uniform(60, length * 0.6)
            tr = td + rng.uniform(30, length * 0.3)
            seq += 1
            heapq.heappush(events, (td, seq, {"op": "disconnect", "session": rid}))
            seq += 1
            heapq.heappush(events, (tr, seq, {"op": "launch", "id": f"{rid}b", "user": user, "app": app,
                                              "endpoint": f"laptop-{u}"}))
        seq += 1
        heapq.heappush(events, (end, seq, {"op": "logoff", "session": rid}))
    # telemetry: a tenth of the servers report every 15 s, as one run of lines
    n_tele = max(0, n_lines - len(lines) - len(events))
    period = 15.0
    per_tick = max(1, int(n_tele / (day / period)))
    tick = 0.0
    while n_tele > 0:
        for _ in range(min(per_tick, n_tele)):
            seq += 1
            name = servers[rng.randrange(len(servers))]
            heapq.heappush(events, (tick, seq, {"op": "telemetry", "server": name,
                                                "cpu": round(rng.uniform(5, 80), 1),
                                                "mem": round(rng.uniform(20, 85), 1)}))
            n_tele -= 1
        tick += period
    counts: dict = {}
    with open(path, "wb") as f:
        buf = [enc.encode(x) for x in lines]
        while events:
            t, _, ev = heapq.heappop(events)
            ev = {"t": round(t, 3), **ev}
            buf.append(enc.encode(ev))
            if len(buf) >= 65536:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        f.write(b"\n".join(buf) + b"\n")
    for x in lines:
        counts[x["op"]] = counts.get(x["op"], 0) + 1
    return counts


@pytest.fixture(scope="session")
def trace_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "day.jsonl"
    make_trace(path, N_LINES)
    return path


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "line_by_line"])
def test_replay_throughput(benchmark, trace_path, batch):
    """ops/s of a full replay (decisions encoded to a discarded sink)."""

    class Sink:
        n = 0

        def write(self, data):
            Sink.n += len(data)

    def run():
        return replay(trace_path, usher.Scheduler(), out=Sink(), keep=False, batch=batch)

    # warm the kernels' compilation cache outside the timing
    replay([b'{"t":0,"op":"pool","name":"p"}', b'{"t":0,"op":"app","name":"a","pools":["p"]}',
            b'{"t":0,"op":"server","name":"s","zone":"z","pool":"p"}',
            b'{"t":1,"op":"launch","id":"r","user":"u","app":"a"}'])
    result = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert not result.errors, result.errors[:3]
    assert result.outcomes.get("placed", 0) > 0.2 * result.launches
    benchmark.extra_info["lines"] = result.ops
    benchmark.extra_info["ops_per_second"] = round(result.ops_per_second)
    benchmark.extra_info["outcomes"] = result.outcomes
    print(f"\nreplay batch={batch}: {result.ops:,} ops in {result.seconds:.2f} s = "
          f"{result.ops_per_second:,.0f} ops/s; {result.outcomes}")
