"""Sweeps on a Dask cluster (``usher simulate --sweep --cluster``).

A real ``dask scheduler`` and two ``dask worker`` processes on loopback (a port
the OS picks, no dashboards), started once for the module and stopped at its
end. The workers get this process's NUMBA_CACHE_DIR so they load the compiled
kernels from the cache. Every day run on the cluster must give the KPIs of the
same day in the process pool (timing keys aside).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from usher.cli import main
from usher.sim.scenario import Scenario
from usher.sim.sweep import ClusterError, sweep

distributed = pytest.importorskip("distributed", reason="the cluster extra: pip install '.[cluster]'")

SEEDS = [1, 2]
POLICIES = ["horizontal", "vertical"]
TINY = Scenario().scaled(0.05).with_changes(day={"hours": 4.0})
TIMING_KEYS = ("run.", "engine.seconds", "engine.launch_seconds", "engine.us_per", "trace.")
START_SECONDS = 60


def _stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in rows]


def _worker_env() -> dict:
    """This process's environment, with its numba cache folder (set or the default)."""
    from numba.core import config

    env = dict(os.environ)
    if config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = config.CACHE_DIR
    return env


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a running scheduler with two one-thread workers."""
    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    env = _worker_env()
    dask = [sys.executable, "-m", "dask"]
    procs = []
    try:
        procs.append(subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], env=env, cwd=folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + START_SECONDS
        while not file.exists() or not file.read_text().strip():
            assert procs[0].poll() is None, "the dask scheduler exited"
            assert time.monotonic() < deadline, "the dask scheduler did not start"
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        for k in range(2):
            procs.append(subprocess.Popen(
                [*dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                 "--name", f"w{k}", "--local-directory", str(folder / f"w{k}")], env=env, cwd=folder,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout=START_SECONDS) as client:
            client.wait_for_workers(2, timeout=START_SECONDS)
        yield address
    finally:
        _stop(procs[::-1])


@pytest.fixture(scope="module")
def pool_rows():
    rows, _, workers = sweep(TINY, SEEDS, POLICIES, jobs=2)
    assert workers == 2
    return rows


def test_cluster_sweep_equals_the_process_pool(scheduler, pool_rows):
    done = []
    rows, elapsed, workers = sweep(TINY, SEEDS, POLICIES, progress=lambda: done.append(1), cluster=scheduler)
    assert workers == 2 and elapsed > 0 and len(done) == 4
    assert [(r["scenario.seed"], r["scenario.policy"]) for r in rows] == [
        (sd, p) for sd in SEEDS for p in POLICIES]
    assert all(r["launches.placed"] > 0 for r in rows)
    assert _stable(rows) == _stable(pool_rows)


def test_cli_sweep_on_the_cluster(scheduler, pool_rows, tmp_path):
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", _toml(tmp_path), "--sweep",
                                  "--seeds", "1-2", "--policies", ",".join(POLICIES), "--cluster", scheduler,
                                  "--json", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["cluster"] == scheduler and report["workers"] == 2 and report["speedup"] > 0
    assert _stable(report["days"]) == _stable(pool_rows)
    lines = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert len(lines) == 1 + len(SEEDS) * len(POLICIES)
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", _toml(tmp_path), "--sweep",
                                  "--seeds", "1", "--policies", "horizontal", "--cluster", scheduler])
    assert r.exit_code == 0, r.output
    assert f"on 2 Dask workers ({scheduler})" in r.output and "speed-up" in r.output


def test_local_cluster_sweep_equals_the_process_pool(pool_rows):
    rows, _, workers = sweep(TINY, SEEDS[:1], POLICIES, jobs=2, cluster="local")
    assert workers == 2
    assert _stable(rows) == _stable(pool_rows[:2])


def _toml(tmp_path) -> str:
    """TINY as a scenario file."""
    import tomli_w

    path = tmp_path / "tiny.toml"
    plain = TINY.to_dict()
    path.write_text(tomli_w.dumps({"day": {"hours": plain["day"]["hours"]}, "fleet": {
        k: plain["fleet"][k] for k in ("servers", "users", "licences")},
        "demand": {"peak_sessions": plain["demand"]["peak_sessions"]}}))
    return str(path)


@pytest.mark.parametrize("address", ["nonsense://x", "tcp://127.0.0.1:notaport"])
def test_a_bad_cluster_address_is_one_line_naming_it(address):
    with pytest.raises(ClusterError) as info:
        sweep(TINY, [1], ["horizontal"], cluster=address)
    assert info.value.field == "cluster" and info.value.value == address
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--scenario", "docs/examples/scenario-small.toml",
                                  "--sweep", "--seeds", "1", "--cluster", address])
    assert r.exit_code == 2 and f"cluster={address!r}" in r.output


def test_an_address_where_nothing_listens_is_refused_without_a_client():
    """Nothing listens on the port: refused by the probe, within the connect time,
    and no Dask client (nor its event-loop thread) is left behind."""
    import socket
    import threading

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"  # free once closed
    before = {t.ident for t in threading.enumerate()}
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        sweep(TINY, [1], ["horizontal"], cluster=address)
    assert time.monotonic() - t0 < 10
    assert info.value.field == "cluster" and info.value.value == address
    assert "no Dask scheduler there" in str(info.value)
    assert {t.ident for t in threading.enumerate() if t.is_alive()} <= before


def test_cluster_needs_a_sweep():
    r = CliRunner().invoke(main, ["simulate", "--no-progress", "--cluster", "local"])
    assert r.exit_code == 2 and "--sweep" in r.output


def test_the_engine_and_the_process_pool_never_import_dask():
    code = ("import sys, usher, usher.cli.simulate\n"
            "from usher.sim.scenario import Scenario\n"
            "from usher.sim.sweep import sweep\n"
            "sweep(Scenario().scaled(0.05).with_changes(day={'hours': 1.0}), [1], ['horizontal'], jobs=1)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_worker_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_dask_the_cluster_sweep_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ClusterError, match=r"usher\[cluster\]"):
        sweep(TINY, [1], ["horizontal"], cluster="local")
