"""Load of ``usher serve``: a real server process on loopback, with its journal
(``--fsync batch``), driven by a separate process (tools/load_client.py) on the same cores.

Measured, on the 1,400-server fleet of mix (b) (fleets.py) written to fleet files:

- single: one launch per request, closed loop on 4 keep-alive connections (or each
  number of ``--connections``): requests/s;
- array: arrays of 1,000 launches (each followed by an array logging them off): launches/s;
- paced: one launch per request at a fixed 2,000 requests/s over 32 connections (open
  loop): p50/p99 latency.

Each run also reports the server's CPU time per request (user + system, and system
alone) and the group commits of the run (records per fsync, the mean fsync), read from
``/proc`` and the server's ``/metrics``.

As a test (``--benchmark-disable``, CI) each mode runs for a fraction of a second and
the answers are checked (every request answered 200, launches placed); the full
measurement (3 s a run, the figures of docs/SERVICE.md)::

    python benchmarks/bench_service.py                      # prints one JSON line per run
    python benchmarks/bench_service.py --connections 4,32   # single with 4, then 32 connections
    python benchmarks/bench_service.py --no-log-decisions   # the decision log off
    python benchmarks/bench_service.py --modes single --fsync off

The server and the client share the machine's cores: on 2 cores the client takes
part of one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "tools", "load_client.py")
SIZE, MIX, USERS = 1400, "b", 5000


def write_fleet(directory) -> list[str]:
    """Write the 1,400-server fleet (no sessions) as fleet.toml + servers.csv; returns its apps."""
    sys.path.insert(0, HERE)
    import fleets

    fleet = fleets.build(SIZE, MIX)  # its sessions are not written: the server starts empty
    fleet.s.to_files(os.path.join(directory, "fleet.toml"), os.path.join(directory, "servers.csv"))
    return list(fleet.apps)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(directory, extra=()):
    """``usher serve`` on a free loopback port with a new journal in ``directory``/state."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "usher.cli", "serve", "--fleet", os.path.join(directory, "fleet.toml"),
           "--servers", os.path.join(directory, "servers.csv"), "--journal", os.path.join(directory, "state"),
           "--listen", f"127.0.0.1:{port}", *extra]
    log = open(os.path.join(directory, "serve.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(open(os.path.join(directory, "serve.log")).read())
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("usher serve did not become ready")


def cpu_seconds(pid, system=False) -> float:
    """User + system CPU time of a process so far, or its system time only (Linux
    /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[12]) + (0 if system else int(fields[11]))) / os.sysconf("SC_CLK_TCK")


def journal_counters(url) -> dict:
    """Group commits so far, from the server's /metrics: fsyncs, records, fsync seconds."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = {"usher_journal_fsync_seconds_count": "fsyncs", "usher_journal_fsync_seconds_sum": "fsync_seconds",
              "usher_journal_records_total": "records"}
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def run_client(url, mode, apps, seconds, prefix, server_pid=None, **options) -> dict:
    """One mode of tools/load_client.py; with ``server_pid``, adds the server's CPU time
    per request (``server_cpu_us_per_request``: on a shared machine the steadier figure;
    ``server_system_us_per_request`` the part spent in the kernel)
    and the group commits of the run (``records_per_fsync``, ``fsync_ms``: the mean
    fsync; the logoffs that follow a mode, untimed, are counted in)."""
    cmd = [sys.executable, CLIENT, "--url", url, "--mode", mode, "--apps", ",".join(apps), "--users", str(USERS),
           "--seconds", str(seconds), "--prefix", prefix]
    for key, value in options.items():
        cmd += [f"--{key}", str(value)]
    before = cpu_seconds(server_pid) if server_pid else 0.0
    before_system = cpu_seconds(server_pid, system=True) if server_pid else 0.0
    commits = journal_counters(url) if server_pid else None
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout)
    if set(result["statuses"]) != {"200"}:  # a figure of failed requests measures nothing
        raise RuntimeError(f"{mode}: requests answered other than 200: {result['statuses']}")
    if server_pid:
        n = result.get("requests") or 2 * result["launches"] // result["batch"]
        result["server_cpu_us_per_request"] = (cpu_seconds(server_pid) - before) / n * 1e6
        result["server_system_us_per_request"] = (cpu_seconds(server_pid, system=True) - before_system) / n * 1e6
        after = journal_counters(url)
        fsyncs = after["fsyncs"] - commits["fsyncs"]
        if fsyncs:
            result["records_per_fsync"] = (after["records"] - commits["records"]) / fsyncs
            result["fsync_ms"] = (after["fsync_seconds"] - commits["fsync_seconds"]) / fsyncs * 1e3
    return result


MODES = ("single", "array", "paced")


def measure(seconds=3.0, extra=(), rate=2000.0, connections=(4,), modes=MODES, paced_connections=32) -> list[dict]:
    """The modes against one server (single once per number of ``connections``); one
    dict of figures per run."""
    with tempfile.TemporaryDirectory(prefix="usher-bench-serve-") as directory:
        apps = write_fleet(directory)
        proc, url = start_server(directory, ("--fsync", "batch", *extra) if "--fsync" not in extra else extra)
        try:
            run_client(url, "single", apps, min(seconds, 0.5), "w", connections=4)  # warm-up
            results = []
            for mode in modes:
                if mode == "single":
                    results += [run_client(url, "single", apps, seconds, f"s{n}-", proc.pid, connections=n)
                                for n in connections]
                elif mode == "array":
                    results.append(run_client(url, "array", apps, seconds, "a", proc.pid, batch=1000))
                else:
                    results.append(run_client(url, "paced", apps, seconds, "p", proc.pid, rate=rate,
                                              connections=paced_connections))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return results


def test_service_load(benchmark):
    """The three modes, briefly (CI) or for 3 s each; every answer is a 200 with decisions."""
    seconds = 0.3 if benchmark.disabled else 3.0
    results = benchmark.pedantic(measure, kwargs=dict(seconds=seconds, rate=500.0 if benchmark.disabled else 2000.0),
                                 rounds=1, iterations=1)
    single, array, paced = results
    for r in results:
        assert set(r["statuses"]) == {"200"}, r
    assert single["requests"] > 0 and array["launches"] >= 1000 and paced["requests"] > 0
    assert array["placed_in_last_array"] > 0
    benchmark.extra_info.update(single_requests_per_s=single["requests_per_s"],
                                array_launches_per_s=array["launches_per_s"],
                                paced_p50_ms=paced["p50_ms"], paced_p99_ms=paced["p99_ms"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Load of usher serve (see the module's doc)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--connections", default="4", help="single: comma-separated numbers of connections, one run each")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to run, of " + ", ".join(MODES))
    p.add_argument("--fsync", default="batch", choices=("always", "batch", "off"))
    p.add_argument("--no-log-decisions", action="store_true", help="run the server with --no-log-decisions")
    a = p.parse_args()
    extra = ["--fsync", a.fsync] + (["--no-log-decisions"] if a.no_log_decisions else [])
    for r in measure(a.seconds, extra, a.rate, [int(n) for n in a.connections.split(",")], a.modes.split(",")):
        print(json.dumps(r))
