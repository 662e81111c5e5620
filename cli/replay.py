"""``usher replay``: replay a broker trace and write every decision (docs/TRACE_FORMAT.md).

Exit status: 0 every line applied; 3 some lines failed (each has its error line in
the output, and the summary names the first); 2 a bad command line or input that
cannot be used at all (a trace or fleet file that cannot be read or loaded, a
truncated ``.gz``, an output that cannot be written). Every error is one line on
stderr that names the file, and the place and value where there is one.
"""

from __future__ import annotations

import gzip
import os
import sys

import click

from usher.formats.trace import BLOCK_BYTES

#: exit status: some trace lines failed / input that cannot be used
EXIT_FAILED_LINES = 3
EXIT_UNUSABLE = 2


def _fail(message) -> None:
    """Print ``Error: message`` as one line on stderr and exit with status 2."""
    text = " ".join(str(message).split())  # one line, whatever the message holds
    click.echo(f"Error: {text}", err=True)
    sys.exit(EXIT_UNUSABLE)


def _summary(result, trace, echo):
    ops = result.ops
    echo(f"replayed {ops:,} ops in {result.seconds:.2f} s: {result.ops_per_second:,.0f} ops/s")
    o = result.outcomes
    parts = [f"{k} {o[k]:,}" for k in ("placed", "reconnected", "shared") if k in o]
    rejected = {k.split(":", 1)[1]: v for k, v in o.items() if k.startswith("rejected:")}
    if rejected:
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1]))
        parts.append(f"rejected {sum(rejected.values()):,} ({detail})")
    echo(f"launches {result.launches:,}: " + (", ".join(parts) if parts else "none"))
    if result.errors:
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(result.error_counts.items(), key=lambda kv: -kv[1]))
        first = result.errors[0]
        message = " ".join(first.message.split())
        echo(f"errors {len(result.errors):,}: {counts}; first at {trace}, line {first.line}: "
             f"{first.error}: {message}")
    else:
        echo("errors 0")


def _load_scheduler(fleet, servers):
    from usher.errors import UsherError
    from usher.scheduler import Scheduler

    try:
        return Scheduler.from_files(fleet, servers) if fleet is not None else Scheduler()
    except UsherError as e:  # FleetFileError names the file, line, field and value
        _fail(e)


def _open_out(out):
    if out == "-":
        return sys.stdout.buffer, None
    try:
        sink = gzip.open(out, "wb") if out.endswith(".gz") else open(out, "wb")
    except OSError as e:
        _fail(f"{out}: cannot write: {e.strerror or e}")
    return sink, sink


def _progress_bar(err, trace, progress):
    """(bar, callback) of the progress bar on stderr, or (None, None)."""
    show = progress
    if show is None:
        try:
            big = trace != "-" and os.path.getsize(trace) > 8 * BLOCK_BYTES
        except OSError:
            big = False
        show = err.is_terminal and big
    if not show:
        return None, None
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    bar = Progress("replay", BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task("replay", total=None)

    def callback(done, total):
        bar.update(task, completed=done, total=total)

    return bar, callback


@click.command("replay")
@click.argument("trace", type=click.Path(allow_dash=True))
@click.option("--fleet", type=click.Path(), help="Fleet configuration (TOML) loaded first.")
@click.option("--servers", type=click.Path(), help="Servers table (.csv or .parquet) of the fleet; needs --fleet.")
@click.option("--out", "-o", default="-", show_default=True, type=click.Path(allow_dash=True),
              help="Decision lines (JSON Lines; .gz compressed).")
@click.option("--explain", is_flag=True, help="Add each launch's explanation to its decision line.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal and the file is large).")
@click.option("--quiet", "-q", is_flag=True, help="No summary on stderr.")
def replay_command(trace, fleet, servers, out, explain, progress, quiet):
    """Replay a broker trace (JSON Lines; '-' = stdin) and write one decision per
    launch. Exit status: 0 all lines applied, 3 some lines failed, 2 bad command
    line or input that cannot be used (unreadable file, bad fleet file, truncated
    archive). Formats: docs/TRACE_FORMAT.md."""
    from rich.console import Console

    from usher.formats.replay import TraceFileError, replay

    if servers is not None and fleet is None:
        raise click.UsageError("--servers needs --fleet (the configuration of pools and apps)")
    scheduler = _load_scheduler(fleet, servers)
    err = Console(stderr=True)
    bar, callback = _progress_bar(err, trace, progress)
    sink, close = _open_out(out)
    try:
        if bar is not None:
            bar.start()
        result = replay(trace, scheduler, out=sink, explain=explain, keep=False, progress=callback)
        sink.flush()
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        try:
            sys.stdout = None
        finally:
            os._exit(0)
    except TraceFileError as e:  # names the trace and the line it was read to
        _fail(e)
    except OSError as e:
        _fail(f"{out}: cannot write: {e.strerror or e}")
    finally:
        if bar is not None:
            bar.stop()
        if close is not None:
            close.close()
    if not quiet:
        _summary(result, trace, lambda text: click.echo(text, err=True))
    sys.exit(EXIT_FAILED_LINES if result.errors else 0)
