"""The kernels' compile cache, seen from a fresh process: a cold cache says on
stderr that the kernels compile (and nothing on stdout), a warm one says nothing,
and a damaged one warns, drops the damaged entries, compiles them again and
decides as before. Each case imports usher in a subprocess with its own
NUMBA_CACHE_DIR (a cold compile: about a minute)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from usher.core import kernels

# a scheduler driven through every kernel; prints its decisions and results
SCRIPT = r"""
import json
import usher

s = usher.Scheduler(seed=5)
s.add_pool("P", zone_preference=("user_location",))
s.add_app("a", ["P"])
for i in range(6):
    s.add_server(f"s{i}", ("Z1", "Z2")[i % 2], "P", max_sessions=3)
out = [s.launch(f"u{k}", "a", location="Z1", now=float(k)).to_dict() for k in range(5)]
batch = s.launch_many([f"v{k}" for k in range(6)], ["a"] * 6, now=6.0)
out.append(batch.counts())
first = s.launch("w", "a", now=7.0, explain=True)
out.append(str(first.explanation))
s.logon_complete(first.session, now=8.0)
s.disconnect(first.session, now=9.0)
out.append(s.launch("w", "a", now=10.0).to_dict())
s.telemetry("s0", cpu=95.0, now=11.0)
s.telemetry_many(["s1", "s2"], cpu=[10.0, 20.0], now=11.5)
s.set_mode("s3", "drain", now=12.0)
s.settings(pending_timeout=30.0)
out.append(s.launch("x", "a", now=13.0).to_dict())
out.append(s.sessions()["server"].tolist())
print(json.dumps(out))
"""


def _run(cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)


def _entries(cache: Path):
    """Every kernel's index and data files in a cache folder."""
    return sorted(cache.rglob("kernels.*.nbi")), sorted(cache.rglob("kernels.*.nbc"))


@pytest.fixture(scope="module")
def expected():
    """The decisions of SCRIPT, from this process's engine."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A first import with an empty cache folder, and the folder it filled."""
    cache = tmp_path_factory.mktemp("cold-cache")
    return _run(cache), cache


def test_a_cold_cache_says_on_stderr_that_the_kernels_compile(cold, expected):
    done, cache = cold
    assert done.returncode == 0, done.stderr
    assert kernels._CompileNotice.HEADLINE in done.stderr
    n_kernels = len(_entries(cache)[0])
    assert n_kernels >= 9
    assert f"{'.' * n_kernels} done ({n_kernels} kernels)" in done.stderr
    assert "usher" not in done.stdout  # stdout carries the script's output only
    assert json.loads(done.stdout) == expected


def test_a_warm_cache_says_nothing(cold, expected):
    _, cache = cold
    done = _run(cache)
    assert done.returncode == 0, done.stderr
    assert "usher:" not in done.stderr
    assert json.loads(done.stdout) == expected


def _truncated(data: bytes, rng) -> bytes:
    return data[: len(data) // 2]


def _zeroed(data: bytes, rng) -> bytes:
    return bytes(len(data))


def _random(data: bytes, rng) -> bytes:
    return rng.randbytes(len(data))


def _emptied(data: bytes, rng) -> bytes:
    return b""


DAMAGE = (_truncated, _zeroed, _random, _emptied)


def test_a_damaged_cache_warns_drops_the_entries_and_compiles_again(cold, expected, tmp_path):
    _, warm = cold
    cache = tmp_path / "damaged"
    shutil.copytree(warm, cache)
    index, data = _entries(cache)
    assert len(index) == len(data) >= 9
    rng = random.Random(7)
    # every kernel's entry damaged, one file each: the index or the data file, in
    # turn, each kind of damage in turn (so both kinds of file see every kind)
    damaged = []
    for k, (nbi, nbc) in enumerate(zip(index, data)):
        path = nbi if k % 2 == 0 else nbc
        how = DAMAGE[(k // 2) % len(DAMAGE)] if k % 2 == 0 else DAMAGE[(k // 2 + 2) % len(DAMAGE)]
        path.write_bytes(how(path.read_bytes(), rng))
        damaged.append(path)
    done = _run(cache)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "dropped an unreadable compiled kernel" in line]
    assert len(warnings) == len(damaged), done.stderr
    for path in damaged:
        assert sum(str(path) in line for line in warnings) == 1, (path, warnings)
    assert kernels._CompileNotice.HEADLINE in done.stderr
    assert json.loads(done.stdout) == expected
    # the entries were compiled and cached again: the next import is silent
    again = _run(cache)
    assert again.returncode == 0 and "usher:" not in again.stderr, again.stderr
    assert json.loads(again.stdout) == expected
