"""Load client of ``usher serve``: drives ``POST /v1/ops`` over keep-alive connections
from its own process and prints one JSON object of measurements.

Modes (``--mode``):

- ``single``: closed loop, ``--connections`` connections each sending one launch per
  request as fast as answers come back; reports requests/s.
- ``array``: one connection sends arrays of ``--batch`` launches, each followed by an
  array of logoffs of the same sessions (so the fleet never fills); reports launches/s
  over the launch requests' own time, operations/s over the whole run, and the
  client's own CPU time per request.
- ``paced``: open loop at ``--rate`` requests/s spread over the connections; the latency
  of a request is counted from the time it was due (a late send counts against the
  server: no coordinated omission); reports p50/p90/p99/max in milliseconds.

The client speaks the little HTTP/1.1 it needs over asyncio streams (bodies prepared
before the clock starts, ``Content-Length`` answers), so that on a small machine it
costs a fraction of what a general client would and leaves the cores to the server.
After each mode the sessions it made are logged off (untimed).

    python benchmarks/tools/load_client.py --url http://127.0.0.1:8642 --mode single \\
        --apps desktop,records --users 5000 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

try:  # the same event loop as the server, when it is installed
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host, port, token=None):
        self.host, self.port = host, port
        self.head = (f"POST /v1/ops HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     + (f"Authorization: Bearer {token}\r\n" if token else "")).encode()

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def request_bytes(self, body: bytes) -> bytes:
        return self.head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self):
        self.writer.close()


class Ops:
    """Launch and logoff bodies with ids unique to this run."""

    def __init__(self, apps, users, prefix):
        self.apps, self.users, self.prefix, self.next = apps, users, prefix, 0

    def launches(self, k):
        out = []
        for _ in range(k):
            n = self.next
            self.next += 1
            out.append({"op": "launch", "id": f"{self.prefix}{n}", "user": f"u{n % self.users:07d}",
                        "app": self.apps[n % len(self.apps)]})
        return out

    def logoffs_of(self, launches):
        return [{"op": "logoff", "session": op["id"]} for op in launches]


def _body(ops) -> bytes:
    return json.dumps(ops if len(ops) != 1 else ops[0], separators=(",", ":")).encode()


async def _logoff_all(conn, ops, launched):
    for k in range(0, len(launched), 1000):
        status, _ = await conn.post(conn.request_bytes(_body(ops.logoffs_of(launched[k:k + 1000]))))
        assert status == 200, status


async def single(conns, ops, seconds, limit):
    launched = ops.launches(limit)
    requests = [conns[0].request_bytes(_body([op])) for op in launched]
    done, statuses = 0, {}
    deadline = time.perf_counter() + seconds

    async def worker(conn):
        nonlocal done
        while done < len(requests) and time.perf_counter() < deadline:
            k = done
            done += 1
            status, _ = await conn.post(requests[k])
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    await _logoff_all(conns[0], ops, launched[:done])
    return {"mode": "single", "requests": done, "seconds": elapsed, "requests_per_s": done / elapsed,
            "connections": len(conns), "statuses": statuses}


async def array(conns, ops, seconds, batch):
    conn = conns[0]
    rounds = []
    for _ in range(max(1, int(seconds * 400_000 / batch))):  # enough prepared bodies for the run
        launches = ops.launches(batch)
        rounds.append((conn.request_bytes(_body(launches)), conn.request_bytes(_body(ops.logoffs_of(launches)))))
    launch_s, n_launch, statuses = 0.0, 0, {}
    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    for launch, logoff in rounds:
        t0 = time.perf_counter()
        status, body = await conn.post(launch)
        launch_s += time.perf_counter() - t0
        statuses[status] = statuses.get(status, 0) + 1
        n_launch += batch
        status, _ = await conn.post(logoff)
        statuses[status] = statuses.get(status, 0) + 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    placed = body.count(b'"placed"')
    return {"mode": "array", "batch": batch, "launches": n_launch, "launch_seconds": launch_s,
            "launches_per_s": n_launch / launch_s, "ops_per_s": 2 * n_launch / elapsed,
            "placed_in_last_array": placed, "statuses": statuses,
            "client_cpu_us_per_request": cpu / (2 * n_launch // batch) * 1e6}


async def paced(conns, ops, seconds, rate):
    total = int(rate * seconds)
    launched = ops.launches(total)
    requests = [conns[0].request_bytes(_body([op])) for op in launched]
    latencies = [0.0] * total
    statuses: dict = {}
    start = time.perf_counter() + 0.05

    async def worker(j, conn):
        for k in range(j, total, len(conns)):
            due = start + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            status, _ = await conn.post(requests[k])
            latencies[k] = time.perf_counter() - due
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker(j, c) for j, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    await _logoff_all(conns[0], ops, launched)
    ms = sorted(x * 1000 for x in latencies)
    q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]  # noqa: E731
    return {"mode": "paced", "rate": rate, "requests": total, "achieved_per_s": total / elapsed,
            "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": ms[-1],
            "connections": len(conns), "statuses": statuses}


async def main(args):
    url = urlsplit(args.url)
    conns = [await Connection(url.hostname, url.port, args.token).open() for _ in range(args.connections)]
    ops = Ops(args.apps.split(","), args.users, args.prefix)
    try:
        if args.mode == "single":
            out = await single(conns, ops, args.seconds, args.limit)
        elif args.mode == "array":
            out = await array(conns, ops, args.seconds, args.batch)
        else:
            out = await paced(conns, ops, args.seconds, args.rate)
    finally:
        for c in conns:
            c.close()
    print(json.dumps(out))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=("single", "array", "paced"), required=True)
    p.add_argument("--apps", required=True, help="comma-separated app names to launch, in turn")
    p.add_argument("--users", type=int, required=True, help="users u0000000 .. u{N-1}, in turn")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--limit", type=int, default=20_000, help="single: at most this many requests")
    p.add_argument("--batch", type=int, default=1000, help="array: launches per request")
    p.add_argument("--rate", type=float, default=2000.0, help="paced: requests per second")
    p.add_argument("--prefix", default="b", help="prefix of the launch ids (unique per run)")
    p.add_argument("--token", default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main(arguments))
    sys.exit(0)
