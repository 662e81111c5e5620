"""A small broker workload for the journal and service tests: a fleet prelude, then
a seeded stream of launches, logons, logoffs, disconnects, power changes and bad ops
(tiny domains, so that reconnects, shares and rejections happen)."""

from __future__ import annotations

import random

import msgspec

PRELUDE = [
    {"t": 0, "op": "settings", "seed": 7},
    {"t": 0, "op": "pool", "name": "P", "zone_preference": ["user_location", "user_home"]},
    {"t": 0, "op": "pool", "name": "Q", "max_sessions_per_user": 1},
    {"t": 0, "op": "app", "name": "a", "pools": ["P", "Q"]},
    {"t": 0, "op": "app", "name": "b", "pools": ["P"]},
    *({"t": 0, "op": "user", "id": f"u{k}", "home_zone": f"Z{k % 2}", "apps": ["a", "b"]} for k in range(6)),
    {"t": 0, "op": "server", "name": "s1", "zone": "Z0", "pool": "P", "max_sessions": 3},
    {"t": 0, "op": "server", "name": "s2", "zone": "Z1", "pool": "P", "max_sessions": 3},
    {"t": 0, "op": "server", "name": "s3", "zone": "Z0", "pool": "Q", "max_sessions": 2},
]


def stream(seed: int, n: int, t0: float = 1.0, prefix: str = "r"):
    """``n`` ops from ``t0`` on, in time order; launch ids are ``<prefix><k>``."""
    rng = random.Random(seed)
    ops, launched = [], []
    t = t0
    for k in range(n):
        t += rng.choice((0.0, 0.5, 1.0, 3.0))
        roll = rng.random()
        if roll < 0.45 or not launched:
            rid = f"{prefix}{k}"
            launched.append(rid)
            ops.append({"t": t, "op": "launch", "id": rid, "user": f"u{rng.randrange(7)}",
                        "app": rng.choice("aab"), "location": rng.choice((None, "Z0", "Z1"))})
        elif roll < 0.65:
            ops.append({"t": t, "op": "logon_done", "session": rng.choice(launched)})
        elif roll < 0.8:
            ops.append({"t": t, "op": "logoff", "session": rng.choice(launched)})
        elif roll < 0.87:
            ops.append({"t": t, "op": "disconnect", "session": rng.choice(launched)})
        elif roll < 0.93:
            ops.append({"t": t, "op": "mode", "server": rng.choice(("s1", "s2", "s3")),
                        "mode": rng.choice(("enabled", "drain"))})
        elif roll < 0.97:
            ops.append({"t": t, "op": "telemetry", "server": rng.choice(("s1", "s2", "s9")), "cpu": rng.random() * 100})
        else:
            ops.append({"t": t, "op": rng.choice(("launch", "nonsense")), "id": 3.5})
    return ops


def state_of(replayer):
    """What must survive a crash: sessions, servers, counters, session names, clock."""
    s = replayer.scheduler
    sessions = s.sessions()
    servers = s.servers()
    return dict(
        sessions=[tuple(r.tolist()) for r in sessions],
        servers=[tuple(r.tolist()) for r in servers],
        licences=s.licences_in_use, live=s.live_sessions, now=s.now,
        names=dict(replayer.names), creator=dict(replayer.creator), last_t=replayer.last_t,
    )


def lines(outputs):
    """The decision and error lines of outputs, as plain objects."""
    return [None if o is None else msgspec.to_builtins(o) for o in outputs]
