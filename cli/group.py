"""The ``usher`` command group (click).

Sub-commands live in their own modules and are imported only when invoked, so
``usher --help`` and ``usher --version`` stay fast.
"""

from __future__ import annotations

import importlib

import click

#: command name -> (module, attribute, one-line help)
_COMMANDS = {
    "storm": ("usher.cli.storm", "storm_command", "Place a morning logon storm on the built-in fleet and summarise it."),
    "replay": ("usher.cli.replay", "replay_command", "Replay a broker trace (JSON Lines) and write every decision."),
    "serve": ("usher.cli.serve", "serve_command", "Serve the scheduler over HTTP, with a crash-safe journal, metrics and a decision log."),
    "rollout": ("usher.cli.rollout", "rollout_command", "Plan an image rollout: the canary and the waves it would run on a fleet."),
    "demo": ("usher.cli.demo", "demo_command", "Play the simulated day against a live usher serve and watch its dashboard."),
    "simulate": ("usher.cli.simulate", "simulate_command", "Simulate a hospital group's day (or a scenario file) and report KPIs, series and a picture."),
}


#: a module a command imports when it needs it -> the extra that installs it
_EXTRA_OF = {"rich": "cli", "matplotlib": "sim", "pyarrow": "parquet", "starlette": "service", "uvicorn": "service",
             "prometheus_client": "service"}


class _LazyGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as missing:
            extra = _EXTRA_OF.get((missing.name or "").partition(".")[0])
            if extra is None:
                raise
            raise click.ClickException(f'{missing.name} is not installed: pip install "usher[{extra}]"') from None

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def get_command(self, ctx, name):
        if name in _COMMANDS:
            module, attr, _ = _COMMANDS[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, _COMMANDS[name][2]) for name in sorted(_COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version():
    from usher import __version__

    return __version__


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=None, package_name="usher", prog_name="usher", message="%(prog)s %(version)s")
def main():
    """usher — the placement engine of a connection broker for virtual apps and desktops.

    Placement (which server gets this session, or why none), replay of broker
    traces and simulation of a hospital group's day.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
