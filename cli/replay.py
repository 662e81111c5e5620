"""``usher replay``: replay a broker trace and write every decision (docs/TRACE_FORMAT.md)."""

from __future__ import annotations

import gzip
import os
import sys

import click

from usher.formats.replay import BLOCK_BYTES, ReplayResult, replay

def _summary(result: ReplayResult, echo):
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
        echo(f"errors {len(result.errors):,}: {counts}; first at line {first.line}: "
             f"{first.error}: {first.message}")
    else:
        echo("errors 0")


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--fleet", type=click.Path(dir_okay=False), help="Fleet configuration (TOML) loaded first.")
@click.option("--servers", type=click.Path(dir_okay=False),
              help="Servers table (.csv or .parquet) of the fleet; needs --fleet.")
@click.option("--out", "-o", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Decision lines (JSON Lines; .gz compressed).")
@click.option("--explain", is_flag=True, help="Add each launch's explanation to its decision line.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal and the file is large).")
@click.option("--quiet", "-q", is_flag=True, help="No summary on stderr.")
def replay_command(trace, fleet, servers, out, explain, progress, quiet):
    """Replay a broker trace (JSON Lines; '-' = stdin) and write one decision per
    launch. Exit status: 0 all lines applied, 3 some lines failed, 2 bad command
    line or unreadable input. Formats: docs/TRACE_FORMAT.md."""
    from rich.console import Console

    err = Console(stderr=True)
    if servers is not None and fleet is None:
        raise click.UsageError("--servers needs --fleet (the configuration of pools and apps)")
    if trace != "-" and not os.path.isfile(trace):
        raise click.BadParameter(f"no such file: {trace}", param_hint="TRACE")
    from usher.errors import UsherError
    from usher.scheduler import Scheduler

    try:
        scheduler = Scheduler.from_files(fleet, servers) if fleet is not None else Scheduler()
    except UsherError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)

    show = progress
    if show is None:
        show = err.is_terminal and trace != "-" and os.path.getsize(trace) > 8 * BLOCK_BYTES
    bar = None
    callback = None
    if show:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        bar = Progress("replay", BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err,
                       transient=True)
        task = bar.add_task("replay", total=os.path.getsize(trace) if trace != "-" else None)

        def callback(done, total):
            bar.update(task, completed=done)

    if out == "-":
        sink, close = sys.stdout.buffer, None
    else:
        try:
            sink = close = gzip.open(out, "wb") if out.endswith(".gz") else open(out, "wb")
        except OSError as e:
            raise click.BadParameter(str(e), param_hint="--out") from None
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
    except OSError as e:
        click.echo(f"Error: cannot read {trace}: {e}", err=True)
        sys.exit(2)
    finally:
        if bar is not None:
            bar.stop()
        if close is not None:
            close.close()
    if not quiet:
        _summary(result, lambda text: click.echo(text, err=True))
    sys.exit(3 if result.errors else 0)
