"""Many days at once: every (seed, policy) of a sweep in parallel processes.

Design: a day is single-threaded Python around the engine, so a sweep scales
across cores with processes (``ProcessPoolExecutor``); each worker gets the
scenario as plain data and returns the day's KPIs.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from usher.sim.scenario import Scenario

__all__ = ["run_one", "sweep"]


def run_one(scenario_dict: dict, policy: str, seed: int) -> dict:
    """One day in this process (the sweep's worker); returns its KPIs, with
    ``run.process_seconds``."""
    from usher.sim.day import simulate_day

    sc = Scenario.from_plain(scenario_dict).with_changes(day={"policy": policy, "seed": seed})
    t0 = time.perf_counter()
    kpis = simulate_day(sc).kpis
    kpis["run.process_seconds"] = round(time.perf_counter() - t0, 3)
    return kpis


def sweep(scenario: Scenario, seeds, policies, jobs: int | None = None, progress=None):
    """Every (seed, policy) day in parallel processes. Returns (kpis list sorted by
    seed then policy, elapsed seconds, workers). The speed-up against one process
    is sum(process seconds) / elapsed."""
    jobs = jobs or os.cpu_count() or 1
    plan = [(p, sd) for sd in seeds for p in policies]
    plain = scenario.to_dict()
    out = []
    t0 = time.perf_counter()
    if jobs == 1:
        for p, sd in plan:
            out.append(run_one(plain, p, sd))
            if progress:
                progress()
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(plan))) as pool:
            futures = [pool.submit(run_one, plain, p, sd) for p, sd in plan]
            for f in as_completed(futures):
                out.append(f.result())
                if progress:
                    progress()
    elapsed = time.perf_counter() - t0
    out.sort(key=lambda k: (k["scenario.seed"], list(policies).index(k["scenario.policy"])))
    return out, elapsed, min(jobs, len(plan))
