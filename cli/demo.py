"""``usher demo``: the embedded hospital day, played against a live ``usher serve``.

Starts ``usher serve`` in a subprocess (in memory, on loopback, clock from zero) and
plays the simulated day (docs/SCENARIOS.md) against it over HTTP at ``--speed``
times real time, so that the dashboard at ``/`` can be watched with one command.

Design: the day runs in a thread of this process with a trace writer that, instead
of writing a file, hands each sample's operations to a bounded queue (the day waits
when the queue is full, so it never runs far ahead); the main thread sends the
operations whose ``t`` has come on the demo's clock, as JSON arrays to ``POST
/v1/ops``. The service decides every launch itself: the operations are the day's
replay trace, so its decisions are the day's (docs/TRACE_FORMAT.md). With ``--power
autoscale`` or ``citrix`` the planner's power and drain operations, and with
``--rollout`` the rollout's image changes, are in the trace and show on the page.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

import click

from usher.cli.serve import _listen
from usher.sim.trace import TraceWriter

__all__ = ["demo_command", "StreamingTrace"]

MAX_OPS_PER_REQUEST = 5_000
QUEUE_SAMPLES = 64  # samples of operations the day may run ahead of the clock


class StreamingTrace(TraceWriter):
    """A trace writer that, instead of a file, puts the operations of each sample on
    ``out``, a queue, as a list of ``(t, line)`` (``line`` the JSON text of the
    operation, bytes)."""

    def __init__(self, out: queue.Queue, telemetry: str = "rules"):  # no file: TraceWriter's own is not called
        import msgspec

        self.out = out
        self.telemetry = telemetry
        self.lines = 0
        self._encode = msgspec.json.Encoder().encode
        self._buf: list = []
        self.append = self._buf.append

    def maybe_flush(self) -> None:
        self.flush()

    def flush(self) -> None:
        if self._buf:
            enc = self._encode
            self.out.put([(op["t"] if isinstance(op, dict) else op.t, enc(op)) for op in self._buf])
            self.lines += len(self._buf)
            self._buf.clear()

    def close(self) -> None:
        self.flush()


def _run_day(sc, power, out: queue.Queue) -> None:
    """The day (or days) of ``sc`` under power policy ``power``, its operations on
    ``out``; then None (the end), or the exception that stopped it."""
    try:
        trace = StreamingTrace(out)
        if power == "fixed" and sc.day.days == 1:
            from usher.sim.day import simulate_day

            simulate_day(sc, trace=trace)
        else:
            from usher.planner import power_policy
            from usher.sim.days import simulate_days

            simulate_days(sc, power_policy=power_policy(power, None, sc.power.policy_interval_seconds), trace=trace)
        trace.close()
        out.put(None)
    except BaseException as e:  # handed to the main thread, which reports it
        out.put(e)


def _start_server(host, port, token):
    cmd = [sys.executable, "-m", "usher.cli", "serve", "--listen", f"{host}:{port}", "--clock",
           "monotonic-from-zero", "--no-log-decisions"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    import httpx

    client = httpx.Client(base_url=f"http://{host}:{port}", timeout=60,
                          headers={"authorization": f"Bearer {token}"} if token else {})
    while True:
        if proc.poll() is not None:
            raise click.ClickException(f"usher serve exited with status {proc.returncode} (is {host}:{port} in use?)")
        try:
            if client.get("/healthz").status_code == 200:
                return proc, client
        except httpx.TransportError:
            time.sleep(0.1)


def _clock(text: str) -> float:
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and int(mm) < 60):
        raise click.BadParameter(f"{text!r}: a time of day is HH:MM", param_hint="--start")
    return int(hh) * 3600.0 + int(mm) * 60.0


class _Player:
    """Sends the day's operations when their time comes: ``t <= start + speed x
    (wall seconds since the first operation was sent)``."""

    def __init__(self, client, feed: queue.Queue, speed: float, start: float, explain: bool):
        self.client, self.feed, self.speed, self.start = client, feed, speed, start
        self.path = "/v1/ops?explain=true" if explain else "/v1/ops"
        self.waiting: list = []  # (t, line), in time order
        self.sent = self.errors = 0
        self.ended = False
        self.wall0: float | None = None

    def clock(self) -> float:
        if self.wall0 is None:
            return self.start
        return self.start + (time.monotonic() - self.wall0) * self.speed

    def _pull(self, until: float) -> None:
        """Take samples off the feed until one reaches past ``until`` (or the day ends)."""
        while not self.ended and (not self.waiting or self.waiting[-1][0] <= until):
            item = self.feed.get()
            if item is None:
                self.ended = True
            elif isinstance(item, BaseException):
                raise click.ClickException(f"the simulated day failed: {item!r}")
            else:
                self.waiting.extend(item)

    def step(self) -> bool:
        """Send what is due; False once everything is sent."""
        now = self.clock()
        self._pull(now)
        due = 0
        while due < len(self.waiting) and self.waiting[due][0] <= now:
            due += 1
        for k in range(0, due, MAX_OPS_PER_REQUEST):
            self._send([line for _, line in self.waiting[k:min(due, k + MAX_OPS_PER_REQUEST)]])
        del self.waiting[:due]
        if due and self.wall0 is None:
            self.wall0 = time.monotonic()
        return not (self.ended and not self.waiting)

    def _send(self, lines) -> None:
        r = self.client.post(self.path, content=b"[" + b",".join(lines) + b"]",
                             headers={"content-type": "application/json"})
        if r.status_code != 200:
            raise click.ClickException(f"POST /v1/ops answered {r.status_code}: {r.text[:300]}")
        self.sent += int(r.headers.get("x-usher-applied", 0))
        errors = int(r.headers.get("x-usher-errors", 0))
        if errors and not self.errors:
            first = next(line for line in r.text.splitlines() if '"error"' in line)
            click.echo(f"usher demo: an operation was refused: {first}", err=True)
        self.errors += errors


def _fmt(t: float) -> str:
    s = int(t)
    return f"{'day %d ' % (s // 86400 + 1) if s >= 86400 else ''}{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}"


def _play(player: _Player, client, quiet: bool) -> None:
    next_report = time.monotonic()
    while player.step():
        if not quiet and time.monotonic() >= next_report:
            summary = client.get("/v1/summary").json()
            click.echo(f"usher demo: {_fmt(player.clock())}  sessions {summary['sessions']:,}  licences "
                       f"{summary['licences']['in_use']:,}  ops sent {player.sent:,}", err=True)
            next_report = time.monotonic() + 10.0
        time.sleep(0.05)


@click.command("demo")
@click.option("--speed", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Simulated seconds per wall-clock second.")
@click.option("--listen", default="127.0.0.1:8642", show_default=True, help="HOST:PORT of the service started.")
@click.option("--start", "start_at", default="00:00", show_default=True, metavar="HH:MM",
              help="Send the day up to this time at once, then play on at --speed.")
@click.option("--power", type=click.Choice(["fixed", "citrix", "autoscale"]), default="fixed", show_default=True,
              help="Power policy of the day (docs/AUTOSCALE.md): its actions show on the dashboard.")
@click.option("--rollout", default=None, metavar="IMAGE@HH:MM-HH:MM",
              help="Roll IMAGE out in that window of the day (docs/ROLLOUT.md).")
@click.option("--faults/--no-faults", default=None, help="The scenario's faults (crashes, a zone dark for an hour).")
@click.option("--seed", type=int, default=None, help="Seed of the day (default: the scenario's).")
@click.option("--scenario", "scenario_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file overriding knobs of the embedded day (docs/SCENARIOS.md).")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="Ask for each launch's explanation (shown by the dashboard's search).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a web browser.")
@click.option("--exit-at-end", is_flag=True, help="Stop the service when the day is over (default: keep serving).")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def demo_command(speed, listen, start_at, power, rollout, faults, seed, scenario_path, explain, open_browser,
                 exit_at_end, quiet):
    """Play the simulated day against a live `usher serve` and watch it on the dashboard."""
    from usher.cli.simulate import ScenarioFailure, parse_rollout
    from usher.sim.scenario import Scenario, ScenarioError

    host, port = _listen(listen)
    start = _clock(start_at)
    try:
        sc = Scenario.from_toml(scenario_path) if scenario_path else Scenario()
        if seed is not None:
            sc = sc.with_changes(day={"seed": seed})
        if faults is not None:
            sc = sc.with_changes(faults={"enabled": faults})
        if rollout is not None:
            sc = sc.with_changes(rollout=parse_rollout(rollout))
        sc = sc.copy().validate()
    except ScenarioError as exc:
        raise ScenarioFailure(str(exc)) from None
    token = os.environ.get("USHER_TOKEN") or None
    proc, client = _start_server(host, port, token)
    url = f"http://{host}:{port}/"
    try:
        click.echo(f"usher demo: the dashboard is at {url} ({sc.name}, {speed:g}x, power {power})", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        feed: queue.Queue = queue.Queue(maxsize=QUEUE_SAMPLES)
        threading.Thread(target=_run_day, args=(sc, power, feed), daemon=True, name="usher-demo-day").start()
        player = _Player(client, feed, speed, start, explain)
        _play(player, client, quiet)
        click.echo(f"usher demo: the day is over ({player.sent:,} operations applied, {player.errors:,} refused)",
                   err=True)
        if not exit_at_end:
            click.echo(f"usher demo: still serving {url} (Ctrl-C to stop)", err=True)
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
