"""`distinfer nodemetrics record`: sample this node until stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distinfer.config import ConfigError

nodemetrics = typer.Typer(help="Sample this node's CPU, memory, network and GPUs into JSONL.")


@nodemetrics.command("record")
def record_command(
    out: Annotated[Path, typer.Option(help="JSONL file to append samples to.")],
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    host: Annotated[str | None, typer.Option(help="Name to record (default: hostname).")] = None,
) -> None:
    """Record until SIGTERM/SIGINT or --duration; every sample is flushed as it is taken."""
    from distinfer.nodemetrics.sampler import check_options, record

    problem = check_options(interval, duration)
    if problem:
        raise ConfigError(problem)
    count = record(out, interval, duration, host)
    typer.echo(f"wrote {count} samples to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(nodemetrics, name="nodemetrics")
