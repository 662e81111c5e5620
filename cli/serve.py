"""``usher serve``: the scheduler as an HTTP service (docs/SERVICE.md).

With ``--journal DIR`` the state is recovered from DIR first (its latest snapshot and
the journal after it); the fleet files then only seed a new, empty directory. With
``--store postgresql://...`` the journal is kept in PostgreSQL and several brokers
share it: one leads, the others are hot standbys (docs/CLUSTER.md). Off
loopback a bearer token is required (``--token-file`` or the environment variable
named by ``--token-env``). Exit status 2: a bad command line, fleet or journal.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import sys
import time

import click

EXIT_UNUSABLE = 2
GRACE_SECONDS = 2  # seconds a stop waits for open requests (an open dashboard's event stream) before closing them


def _fail(message) -> None:
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)
    sys.exit(EXIT_UNUSABLE)


def _listen(value):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter("must be HOST:PORT (e.g. 127.0.0.1:8642)")
    return host.strip("[]"), int(port)


def _is_loopback(host) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(token_file, token_env):
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            _fail(f"{token_file}: cannot read the token: {e.strerror or e}")
        if not token:
            _fail(f"{token_file}: the token file is empty")
        return token
    return os.environ.get(token_env) or None


CLOCKS = ("wall", "monotonic-from-zero")


def make_clock(kind, last_t):
    """The clock that gives ``t`` to an operation sent without one.

    ``wall``: ``time.time()`` (seconds since the epoch). ``monotonic-from-zero``: seconds
    since the state began: 0 for a new state, counting on from the last ``t`` of a
    recovered one (``last_t``), at the pace of ``time.monotonic()``. Either way an
    operation's ``t`` is never earlier than the previous operation's, and an explicit
    ``t`` earlier than it is refused (TimeWentBackwards).
    """
    if kind == "wall":
        return time.time
    base = last_t if math.isfinite(last_t) else 0.0
    started = time.monotonic()
    return lambda: base + (time.monotonic() - started)


def _open_state(fleet, servers, journal_dir, fsync, snapshot_every, snapshot_share):
    from usher import journal
    from usher.errors import UsherError
    from usher.scheduler import Scheduler

    log = logging.getLogger("usher.serve")
    try:
        seed = None
        if journal_dir is None or not journal.has_state(journal_dir):
            seed = Scheduler.from_files(fleet, servers) if fleet is not None else None
        elif fleet is not None:
            log.warning("%s holds a journal: its state is recovered and --fleet is not read", journal_dir)
        if journal_dir is None:
            return journal.in_memory(seed)
        # automatic snapshots written by a forked child: the request that triggers one
        # does not wait for the pickle (the scheduler is only touched on the event loop)
        return journal.open(journal_dir, scheduler=seed, fsync=fsync, snapshot_every=snapshot_every or None,
                            background_snapshots=True, snapshot_share=snapshot_share)
    except UsherError as e:
        _fail(e)


@click.command("serve")
@click.option("--fleet", type=click.Path(), help="Fleet configuration (TOML): the initial state of a new journal.")
@click.option("--servers", type=click.Path(), help="Servers table (.csv or .parquet); needs --fleet.")
@click.option("--journal", "journal_dir", type=click.Path(file_okay=False),
              help="Journal directory: recovered at start, every applied operation made durable there.")
@click.option("--store", help="PostgreSQL URL (postgresql://...): keep the journal there, shared by several brokers "
                             "(one leader, hot standbys; docs/CLUSTER.md). Excludes --journal.")
@click.option("--advertise", help="The URL other brokers' clients send writes to when this one leads "
                                  "(default: http://LISTEN).")
@click.option("--lease-ttl", type=click.FloatRange(min=0.5), default=3.0, show_default=True,
              help="Seconds a leader's lease lasts without renewal (--store): a paused or cut-off leader "
                   "is replaced after this; a killed one at once.")
@click.option("--listen", default="127.0.0.1:8642", show_default=True, help="HOST:PORT to listen on.")
@click.option("--fsync", type=click.Choice(["always", "batch", "off"]), default="batch", show_default=True,
              help="When journal records reach the disk (batch: every 5 ms or 1,000 records).")
@click.option("--clock", type=click.Choice(CLOCKS), default="wall", show_default=True,
              help="The time of an operation sent without t: wall (seconds since the epoch) or "
                   "monotonic-from-zero (seconds since the state began; for clients sending small explicit t).")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=100_000, show_default=True,
              help="Records between snapshots (0: never).")
@click.option("--snapshot-share", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=0.1,
              show_default=True,
              help="The largest share of the time snapshots take: after one that took D seconds the next "
                   "waits D*(1/share-1) seconds (1: no limit; under a heavy load snapshots then come less "
                   "often than --snapshot-every).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the bearer token.")
@click.option("--token-env", default="USHER_TOKEN", show_default=True,
              help="Environment variable holding the bearer token (when there is no --token-file).")
@click.option("--max-body", type=click.IntRange(min=1), default=8 << 20, show_default=True,
              help="Largest request body, in bytes.")
@click.option("--log-decisions/--no-log-decisions", default=True, show_default=True,
              help="One JSON line per decision on stdout (logger usher.decisions).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Write the decision log to this file instead.")
def serve_command(fleet, servers, journal_dir, store, advertise, lease_ttl, listen, fsync, clock, snapshot_every,
                  snapshot_share, token_file, token_env, max_body, log_decisions, log_file):
    """Serve the scheduler over HTTP: POST /v1/ops, GET /v1/sessions/ID,
    /v1/servers, /v1/summary, /metrics, /healthz, /readyz, /openapi.json.
    Endpoints, journal and recovery: docs/SERVICE.md."""
    from usher.service.app import create_app
    from usher.service.decision_log import DecisionLog, configure
    from usher.service.http import serve
    from usher.service.metrics import Metrics

    if servers is not None and fleet is None:
        raise click.UsageError("--servers needs --fleet (the configuration of pools and apps)")
    host, port = _listen(listen)
    token = _token(token_file, token_env)
    if token is None and not _is_loopback(host):
        _fail(f"listening on {host} (not loopback) needs a bearer token: --token-file or ${token_env}")
    if store is not None and journal_dir is not None:
        raise click.UsageError("--store and --journal exclude each other: the journal is in one place")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    broker = None
    if store is not None:
        broker = _open_broker(store, advertise or f"http://{listen}", fleet, servers, lease_ttl, snapshot_every)
        state = broker.journal
    else:
        state = _open_state(fleet, servers, journal_dir, fsync, snapshot_every, snapshot_share)
    state.clock = make_clock(clock, state.replayer.last_t)
    metrics = Metrics(state)
    state.set_on_flush(metrics.on_flush)
    decision_log = None
    if log_decisions:
        configure(stream=sys.stdout, path=log_file)
        decision_log = DecisionLog()
    app = create_app(state, token=token, metrics=metrics, decision_log=decision_log, max_body=max_body, role=broker)
    click.echo(f"usher serve: {state.seq:,} records recovered"
               f"{f', {state.torn_records} torn record dropped' if state.torn_records else ''}"
               f"{' from ' + _redacted(store) + ' (standby until it holds the lease)' if broker else ''}; "
               f"listening on http://{host}:{port}", err=True)
    if broker is not None:
        broker.on_flush = metrics.on_flush
        _serve_cluster(app, host, port, broker)
        return
    try:
        serve(app, host, port, timeout_graceful_shutdown=GRACE_SECONDS)
    finally:
        state.close()


def _redacted(url) -> str:
    from usher.cluster.store import _redact

    return _redact(url)


def _open_broker(store, advertise, fleet, servers, lease_ttl, snapshot_every):
    """A standby broker on the PostgreSQL store (its state recovered from it)."""
    from usher.errors import UsherError
    from usher.scheduler import Scheduler

    try:
        from usher.cluster import open_broker
    except ImportError as e:
        _fail(f"--store needs psycopg: pip install 'usher[cluster]' ({e})")
    try:
        seed = Scheduler.from_files(fleet, servers) if fleet is not None else None
        return open_broker(store, advertise, seed=seed, ttl=lease_ttl, snapshot_every=snapshot_every or None)
    except UsherError as e:
        _fail(e)


def _serve_cluster(app, host, port, broker) -> None:
    """uvicorn with the broker's decision loop started on the server's event loop."""
    import asyncio

    import uvicorn

    from usher.service.http import SWITCH_INTERVAL, settle_heap, uvicorn_options

    class ClusterServer(uvicorn.Server):
        async def serve(self, sockets=None):
            broker.start(asyncio.get_running_loop())
            try:
                await super().serve(sockets)
            finally:
                await asyncio.to_thread(broker.stop)

    sys.setswitchinterval(SWITCH_INTERVAL)
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=GRACE_SECONDS,
                            **uvicorn_options())
    settle_heap()
    ClusterServer(config).run()
