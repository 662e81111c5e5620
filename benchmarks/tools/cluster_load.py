"""Launches/s through the leader of ``usher serve --store postgresql://...``.

Starts a throw-away PostgreSQL 15 (tests/pgserver.py), one leader and one hot standby
on it with the 1,400-server fleet of mix (b) (benchmarks/fleets.py), and drives the
leader with tools/load_client.py: ``single`` (one launch per request, 4 and 16
connections, closed loop) and ``array`` (arrays of 1,000 launches). Prints one JSON
line per mode, with the leader's CPU time per request.

    python benchmarks/tools/cluster_load.py --seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests"))

from bench_service import _free_port, run_client, write_fleet  # noqa: E402
from pgserver import PgServer  # noqa: E402


def start_broker(directory, dsn, name):
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "usher.cli", "serve", "--store", dsn, "--fleet", os.path.join(directory, "fleet.toml"),
           "--servers", os.path.join(directory, "servers.csv"), "--listen", f"127.0.0.1:{port}", "--advertise", url,
           "--no-log-decisions"]
    log = open(os.path.join(directory, f"{name}.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(open(os.path.join(directory, f"{name}.log")).read())
        try:
            if httpx.get(url + "/v1/cluster", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("usher serve did not become ready")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    import httpx

    with PgServer() as pg, tempfile.TemporaryDirectory(prefix="usher-bench-cluster-") as directory:
        apps = write_fleet(directory)
        leader, url = start_broker(directory, pg.dsn, "leader")
        while httpx.get(url + "/v1/cluster").json()["role"] != "leader":
            time.sleep(0.1)
        standby, _ = start_broker(directory, pg.dsn, "standby")
        try:
            run_client(url, "single", apps, 0.5, "w", connections=4)  # warm-up
            for mode, prefix, options in (("single", "s", {"connections": 4}), ("single", "m", {"connections": 16}),
                                          ("array", "a", {"batch": 1000})):
                result = run_client(url, mode, apps, args.seconds, prefix, leader.pid, **options)
                print(json.dumps({"mode": mode, **options, **result}), flush=True)
        finally:
            for proc in (standby, leader):
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
