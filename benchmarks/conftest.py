"""Fixtures of the placement benchmarks: fleets and baseline brokers, built once per session.

Sizes: 1,400 and 10,000 servers by default; 100,000 with ``USHER_BENCH_FULL=1`` (its fleet
holds 1.2 M sessions and takes about a minute to build). ``pytest benchmarks
--benchmark-disable`` runs every benchmark once, as a test (CI).
"""

from __future__ import annotations

import os
import platform
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tools"))  # memory_latency

import baselines  # noqa: E402
import fleets  # noqa: E402
import memory_latency  # noqa: E402

FULL = os.environ.get("USHER_BENCH_FULL") == "1"
MEMORY_PROBE_MB = (1, 4, 64)  # working sets probed for the report's machine line

_fleets: dict = {}
_brokers: dict = {}


def get_fleet(size: int, mix: str) -> fleets.Fleet:
    key = (size, mix)
    if key not in _fleets:
        _fleets[key] = fleets.build(size, mix)
    return _fleets[key]


def get_broker(size: int, mix: str, name: str):
    """A baseline broker started from the fleet's current state, checked against usher on
    a few hundred launches (same server for every one) before it is timed."""
    key = (size, mix, name)
    if key not in _brokers:
        fleet = get_fleet(size, mix)
        broker = baselines.BROKERS[name](fleet)
        k = 200 if name != "scan" else max(5, min(200, 100_000 // size))
        placed = baselines.cross_check(fleet, broker, k)
        assert placed > 0, f"{name}: nothing placed in the cross-check"
        _brokers[key] = (broker, baselines.BrokerQueues(fleet))
    return _brokers[key]


@pytest.fixture
def fleet(size, mix):
    """The (size, mix) fleet, in steady state, shared by the session."""
    return get_fleet(size, mix)


@pytest.fixture
def broker(size, mix, impl):
    """(baseline broker, its queues) for impl in scan/heapq/numpy; None for usher."""
    return None if impl == "usher" else get_broker(size, mix, impl)


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` here as test modules (pytest's default is ``test_*.py``),
    unless pytest collects the file itself: a file named on the command line, or one the
    ini ``python_files`` matches."""
    import fnmatch

    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        if parent.session.isinitpath(file_path):
            return None
        if any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
            return None
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_benchmark_update_machine_info(config, machine_info):
    import numba
    import numpy

    import usher

    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    machine_info["usher"] = {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": numpy.__version__,
        "usher": usher.__version__,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "full": FULL,
        # the machine's memory as the run found it: timings of cold launches follow it,
        # and on a shared machine it moves between runs (benchmarks/README.md, the growth target)
        "memory_latency_ns_at_start": {str(mb): round(memory_latency.latency_ns(mb, reads=1_000_000), 1)
                                       for mb in MEMORY_PROBE_MB},
    }
