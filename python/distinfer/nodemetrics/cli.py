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
    from distinfer.nodemetrics.sampler import record

    if not 0.05 <= interval <= 3600:
        raise ConfigError(f"--interval {interval} must be between 0.05 and 3600 seconds (1 is the usual)")
    if duration is not None and duration <= 0:
        raise ConfigError(f"--duration {duration} must be positive; omit it to run until stopped")
    count = record(out, interval, duration, host)
    typer.echo(f"wrote {count} samples to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(nodemetrics, name="nodemetrics")
