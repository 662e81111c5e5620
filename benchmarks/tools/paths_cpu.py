"""CPU time per decision of the paths of bench_paths.py that user creation and name lookups
take (benchmarks/README.md, *Paths real callers take*), measured as this thread's CPU time
(``time.thread_time``): on a machine shared with other people's builds, wall-clock figures
move by a factor of two between runs, while a thread's CPU time leaves out the time it
waited for a core (cache and frequency effects of the neighbours remain).

    python benchmarks/tools/paths_cpu.py [known] [oneoff] [pop60k] [list] [object] [unseen]

``known``: single ``launch`` by directory users (500 a round, tight loop); ``oneoff``: by
users never seen (each created by its launch, one-off ids); ``pop60k``: by unseen users
drawn from 60,000 ids; ``list`` / ``object``: ``launch_many`` of 2,000 rows named by
Python lists / object arrays of user, app and location names; ``unseen``: ``launch_many``
of 2,000 users not in the directory. Median and mean of the rounds (ns per decision): the
mean carries the sweep that forgets the implicit users (once per 4,096 created), the
median mostly not. Alternate two builds' runs to compare them.
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


def main(kinds):
    paths = Paths()
    for kind in kinds or SINGLE + BATCH:
        per_round = paths.single(kind) if kind in SINGLE else paths.batch(kind)
        print(f"{kind:8s} median {np.median(per_round):7.1f}  mean {np.mean(per_round):7.1f} ns per decision (CPU)",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
