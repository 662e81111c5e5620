"""CPU time per decision of the paths of bench_paths.py that user creation and name lookups
take (benchmarks/README.md, *Paths real callers take*), measured as this thread's CPU time
(``time.thread_time``): on a machine shared with other people's builds, wall-clock figures
move by a factor of two between runs, while a thread's CPU time leaves out the time it
waited for a core (cache and frequency effects of the neighbours remain).

    python benchmarks/tools/paths_cpu.py [known] [oneoff] [pop60k] [list] [object] [unseen]
                                         [reconnect] [share] [logoff] [threads]

``known``: single ``launch`` by directory users (500 a round, tight loop); ``oneoff``: by
users never seen (each created by its launch, one-off ids); ``pop60k``: by unseen users
drawn from 60,000 ids; ``list`` / ``object``: ``launch_many`` of 2,000 rows named by
Python lists / object arrays of user, app and location names; ``unseen``: ``launch_many``
of 2,000 users not in the directory. Median and mean of the rounds (ns per decision): the
mean carries the sweep that forgets the implicit users (once per 4,096 created), the
median mostly not. ``reconnect`` / ``share`` / ``logoff``: single calls on 500 of the
oldest live sessions a round, tight loop (reconnect: disconnected first, untimed).
``threads``: wall-clock ratio of two threads launching on two disjoint pools to one thread
doing both halves (alternating rounds, the median of each; not CPU time). Alternate two
builds' runs to compare them.
"""
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fleets  # (benchmarks/)

PLACED = 0
SINGLE = ("known", "oneoff", "pop60k")
BATCH = ("list", "object", "unseen")
SESSION = ("reconnect", "share", "logoff")


class Paths:
    """The steady-state 1,400-server mix-b fleet and the rounds timed on it."""

    def __init__(self):
        self.fleet = fleets.build(1400, "b")
        self.ids = itertools.count()
        self.rng = np.random.default_rng(3)

    def batch(self, kind, n=2000, rounds=21):
        """ns of CPU per row of ``launch_many`` with names (``kind`` in BATCH), per round."""
        f = self.fleet
        s, now = f.s, f.now
        out = []
        for _ in range(rounds):
            f.complete_logons()
            if kind == "unseen":  # the fleet's users lend their apps and locations only
                reqs = f.draw(n)
                f.free.extend(r[1] for r in reqs)
                users = [f"batch{next(self.ids):08d}" for _ in reqs]
            else:
                reqs = f.prepare(n)
                users = [r[0] for r in reqs]
            apps, locs = [r[2] for r in reqs], [r[3] for r in reqs]
            if kind == "object":
                users, apps, locs = (np.array(x, dtype=object) for x in (users, apps, locs))
            t0 = time.thread_time()
            b = s.launch_many(users, apps, locations=locs, now=now)
            out.append((time.thread_time() - t0) / n * 1e9)
            for o, sid, (_uid, u, app, _loc) in zip(b.outcome.tolist(), b.session.tolist(), reqs):
                if kind == "unseen":
                    if o == PLACED:
                        s.logoff(sid, now=now)
                elif o == PLACED:
                    f.live.append((sid, u, app))
                    f.launching.append(sid)
                else:
                    f.free.append(u)
        return out

    def single(self, kind, n=500, rounds=41):
        """ns of CPU per single ``launch`` (``kind`` in SINGLE), per round."""
        f = self.fleet
        s, now = f.s, f.now
        out = []
        for _ in range(rounds):
            f.complete_logons()
            if kind == "known":
                reqs = f.prepare(n)
                users = [r[0] for r in reqs]
            else:
                reqs = f.draw(n)
                f.free.extend(r[1] for r in reqs)
                if kind == "oneoff":
                    users = [f"once{next(self.ids):08d}" for _ in reqs]
                else:
                    users = list({f"pop{k:06d}" for k in self.rng.integers(60_000, size=2 * n)})[:n]
                    reqs = reqs[: len(users)]
            users = [u.encode().decode() for u in users]  # new str objects, as a broker decodes them
            launch = s.launch
            decisions = []
            t0 = time.thread_time()
            for uid, r in zip(users, reqs):
                decisions.append(launch(uid, r[2], r[3], None, False, now))
            out.append((time.thread_time() - t0) / len(users) * 1e9)
            for d, r in zip(decisions, reqs):
                if kind != "known":
                    if d.outcome_code == PLACED:
                        s.logoff(d.session_id, now=now)
                elif d.outcome_code == PLACED:
                    f.live.append((d.session_id, r[1], r[2]))
                    f.launching.append(d.session_id)
                else:
                    f.free.append(r[1])
        return out


    def session(self, kind, n=500, rounds=41):
        """ns of CPU per single call on a live session (``kind`` in SESSION), per round."""
        f = self.fleet
        s, now = f.s, f.now
        out = []
        for _ in range(rounds):
            f.complete_logons()
            picked = [f.live.popleft() for _ in range(n)]
            if kind == "logoff":
                off = s.logoff
                t0 = time.thread_time()
                for sid, _u, _app in picked:
                    off(sid, now)
                out.append((time.thread_time() - t0) / n * 1e9)
                f.free.extend(u for _sid, u, _app in picked)
                reqs = f.draw(n)
                f.settle(reqs, [s.launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs])
                continue
            if kind == "reconnect":
                for sid, _u, _app in picked:
                    s.disconnect(sid, now=now)
            want = 1 if kind == "reconnect" else 2
            users = [f.users[u].encode().decode() for _sid, u, _app in picked]
            launch = s.launch
            t0 = time.thread_time()
            decisions = [launch(uid, app, None, None, False, now) for uid, (_s, _u, app) in zip(users, picked)]
            out.append((time.thread_time() - t0) / n * 1e9)
            assert all(d.outcome_code == want and d.session_id == p[0] for d, p in zip(decisions, picked))
            f.live.extend(picked)
        return out

    def threads(self, k=1000, rounds=41):
        """Wall-clock throughput of two threads on two disjoint pools over one thread."""
        from concurrent.futures import ThreadPoolExecutor

        f = self.fleet
        s, now = f.s, f.now
        apps = list(f.apps.values())
        app_a, app_b = next((a.name, b.name) for a, b in itertools.combinations(apps, 2)
                            if not set(a.pools) & set(b.pools))

        def work(reqs):
            launch = s.launch
            return [launch(uid, app, loc, None, False, now) for uid, _u, app, loc in reqs]

        times = {"one": [], "two": []}
        with ThreadPoolExecutor(max_workers=2) as pool:
            pool.submit(lambda: None).result()
            for _ in range(rounds):
                for name in ("one", "two"):
                    f.complete_logons()
                    reqs = f.draw(2 * k)
                    halves = ([(uid, u, app_a, loc) for uid, u, _app, loc in reqs[:k]],
                              [(uid, u, app_b, loc) for uid, u, _app, loc in reqs[k:]])
                    t0 = time.perf_counter()
                    if name == "two":
                        futures = [pool.submit(work, h) for h in halves]
                        decisions = [d for fu in futures for d in fu.result()]
                    else:
                        decisions = pool.submit(lambda: work(halves[0]) + work(halves[1])).result()
                    times[name].append(time.perf_counter() - t0)
                    for d, r in zip(decisions, reqs):
                        if d.outcome_code == PLACED:
                            s.logoff(d.session_id, now=now)
                        f.free.append(r[1])
        one, two = (float(np.median(times[x])) * 1e6 for x in ("one", "two"))
        return one / two, one, two


def main(kinds):
    paths = Paths()
    for kind in kinds or SINGLE + BATCH + SESSION:
        if kind == "threads":
            ratio, one, two = paths.threads()
            print(f"threads  two threads / one thread: {ratio:.2f}x (wall; a round: one {one:.0f} us, "
                  f"two {two:.0f} us)", flush=True)
            continue
        per_round = (paths.single(kind) if kind in SINGLE else paths.session(kind) if kind in SESSION
                     else paths.batch(kind))
        print(f"{kind:8s} median {np.median(per_round):7.1f}  mean {np.mean(per_round):7.1f} ns per decision (CPU)",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
