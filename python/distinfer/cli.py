"""`distinfer`: one entry point for serving, models, load, node metrics and reports.

Each command group lives beside the code it drives and registers itself here. Heavy libraries
(ray, torch, locust) are imported inside commands, never at module level: importing ray before
locust breaks gevent's ssl patching, and `distinfer --help` must stay fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from distinfer import __version__
from distinfer.config import ConfigError

app = typer.Typer(
    name="distinfer",
    help="Stand up distributed LLM inference and measure it the way the performance-testing guide does.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules exposing `register(app)`; each adds its own commands or command group.
COMMAND_MODULES = (
    "distinfer.plan",
    "distinfer.serve.cli",
    "distinfer.models.cli",
    "distinfer.bench.cli",
    "distinfer.nodemetrics.cli",
    "distinfer.report.cli",
    "distinfer.capacity_plan",
    "distinfer.chat.cli",
    "distinfer.dashboards.cli",
    "distinfer.airgap",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"distinfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    try:
        app()
    except ConfigError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
