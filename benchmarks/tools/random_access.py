"""Session operations on records touched at random: 60,000 live sessions on 600 servers,
then ``logon_complete`` and ``logoff`` on 20,000 of them in launch order and in a random
order. A broker sees the random order (users log off when they please); the gap between
the two is the cost of cache misses on the session, user and server records.

Run:  python benchmarks/tools/random_access.py
"""

from __future__ import annotations

import gc
import random
import time

import usher


def main(n_users: int = 60_000, n_ops: int = 20_000) -> dict:
    gc.disable()
    s = usher.Scheduler(seed=1)
    s.add_pool("p", zone_preference=["user_home"])
    s.add_app("a", pools=["p"])
    for i in range(600):
        s.add_server(f"s{i}", zone=f"z{i % 3}", pool="p", max_sessions=200)
    users = [f"u{k}" for k in range(n_users)]
    s.add_users(users, home_zones=[f"z{k % 3}" for k in range(n_users)])
    ids = [s.launch(u, "a", now=0.0).session_id for u in users]
    assert all(x is not None for x in ids)
    out = {}
    for order, chosen in (("launch order", ids[:n_ops]),
                          ("random order", random.Random(1).sample(ids[n_ops:], n_ops))):
        t0 = time.perf_counter()
        for x in chosen:
            s.logon_complete(x, 1.0)
        t1 = time.perf_counter()
        for x in chosen:
            s.logoff(x, 1.0)
        t2 = time.perf_counter()
        out[order] = ((t1 - t0) / n_ops * 1e9, (t2 - t1) / n_ops * 1e9)
        print(f"{order}: logon_complete {out[order][0]:,.0f} ns, logoff {out[order][1]:,.0f} ns")
    assert len(s.sessions()) == n_users - 2 * n_ops
    return out


if __name__ == "__main__":
    main()
