"""Many days at once: every (seed, policy) of a sweep in parallel processes,
on this machine or on a Dask distributed cluster.

Design: a day is single-threaded Python around the engine, so a sweep scales
across cores with processes. Each task gets the scenario as plain data and
returns the day's KPIs (:func:`run_one`); the same function runs in a
``ProcessPoolExecutor`` (the default) or on the workers of a Dask cluster
(``cluster=``: a scheduler's address, or ``"local"`` for a ``LocalCluster``
of this machine's cores). A day's KPIs depend only on the scenario, the seed
and the policy, so where it ran never changes them. Dask is imported only
when a cluster is asked for (the ``cluster`` extra): the engine and the
process-pool sweep never load it.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed

from usher.errors import UsherError
from usher.sim.scenario import Scenario

__all__ = ["ClusterError", "run_one", "sweep", "LOCAL_CLUSTER", "CONNECT_SECONDS"]

#: ``cluster=`` value that starts a ``distributed.LocalCluster`` on this machine
LOCAL_CLUSTER = "local"
#: how long to wait for a remote scheduler to answer before giving up
CONNECT_SECONDS = 10


class ClusterError(UsherError):
    """A Dask cluster that cannot be used: dask is not installed, the address is not
    a scheduler's, or no worker joined (names the ``cluster`` value and the reason)."""


def run_one(scenario_dict: dict, policy: str, seed: int) -> dict:
    """One day in this process (the sweep's task); returns its KPIs, with
    ``run.process_seconds``."""
    from usher.sim.day import simulate_day

    sc = Scenario.from_plain(scenario_dict).with_changes(day={"policy": policy, "seed": seed})
    t0 = time.perf_counter()
    kpis = simulate_day(sc).kpis
    kpis["run.process_seconds"] = round(time.perf_counter() - t0, 3)
    return kpis


def sweep(scenario: Scenario, seeds, policies, jobs: int | None = None, progress=None,
          cluster: str | None = None):
    """Every (seed, policy) day in parallel. Returns (kpis list sorted by seed then
    policy, elapsed seconds, workers).

    ``cluster=None`` runs the days in ``jobs`` processes of this machine (all cores by
    default); ``cluster="tcp://host:port"`` on the workers of that Dask scheduler (every
    worker thread counts as a worker; ``jobs`` is ignored); ``cluster="local"`` on a
    ``distributed.LocalCluster`` of ``jobs`` one-thread worker processes. ``progress()``
    is called once per finished day. The speed-up against one process is
    sum(process seconds) / elapsed; elapsed counts from the first submitted day to the
    last result (not the start of a LocalCluster).
    """
    plan = [(p, sd) for sd in seeds for p in policies]
    plain = scenario.to_dict()
    if cluster is not None:
        out, elapsed, workers = _on_cluster(cluster, plain, plan, jobs, progress)
    else:
        out, elapsed, workers = _in_processes(plain, plan, jobs, progress)
    order = list(policies)
    out.sort(key=lambda k: (k["scenario.seed"], order.index(k["scenario.policy"])))
    return out, elapsed, workers


def _in_processes(plain, plan, jobs, progress):
    jobs = min(jobs or os.cpu_count() or 1, len(plan))
    out = []
    t0 = time.perf_counter()
    if jobs == 1:
        for p, sd in plan:
            out.append(run_one(plain, p, sd))
            if progress:
                progress()
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_one, plain, p, sd) for p, sd in plan]
            for f in as_completed(futures):
                out.append(f.result())
                if progress:
                    progress()
    return out, time.perf_counter() - t0, jobs


def _on_cluster(cluster, plain, plan, jobs, progress):
    """The days on a Dask cluster: a client of ``cluster`` (or of a LocalCluster made
    here and closed after), one task per day, results as they finish."""
    try:
        import distributed
    except ImportError:
        raise ClusterError("cluster", cluster, "Dask is not installed: pip install 'usher[cluster]'") from None
    local = None
    try:
        if cluster == LOCAL_CLUSTER:
            n = min(jobs or os.cpu_count() or 1, len(plan))
            local = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                             dashboard_address=":0")  # HTTP on a free port
            client = distributed.Client(local, set_as_default=False)
        else:
            _reachable(cluster)
            client = distributed.Client(cluster, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, ValueError, TypeError) as exc:
        if local is not None:
            local.close()
        raise ClusterError("cluster", cluster, f"no Dask scheduler there ({exc})") from None
    try:
        with client:
            return _submit(client, cluster, plain, plan, progress)
    finally:
        if local is not None:
            local.close()


def _reachable(cluster):
    """Raise ValueError or OSError unless ``cluster`` is an address Dask can dial
    and something listens there, before any ``distributed.Client`` exists: a
    Client that fails while starting leaves its event-loop thread and a
    finaliser that closes it through that loop behind, so a bad address is
    refused here, by parsing it and one TCP connection, with nothing to clean up."""
    import socket

    from distributed.comm.addressing import get_address_host_port

    host, port = get_address_host_port(cluster)  # ValueError: not an address
    socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()  # OSError: nobody there


def _submit(client, cluster, plain, plan, progress):
    import distributed

    workers = sum(client.nthreads().values())
    if workers == 0:
        raise ClusterError("cluster", cluster, "the scheduler has no workers")
    run = uuid.uuid4().hex[:12]  # keys unique to this sweep on a shared scheduler
    out = []
    t0 = time.perf_counter()
    futures = [client.submit(run_one, plain, p, sd, key=f"usher-day-{p}-{sd}-{run}") for p, sd in plan]
    for f in distributed.as_completed(futures, loop=client.loop):
        out.append(f.result())
        f.release()
        if progress:
            progress()
    return out, time.perf_counter() - t0, workers
