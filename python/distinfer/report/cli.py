"""`distinfer report DIR [--compare DIR2]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distinfer.config import ConfigError


def report_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory: results/<run-id>.")],
    compare: Annotated[Path | None, typer.Option(help="Another run directory to compare with.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write (default: DIR/report).")] = None,
    slo: Annotated[
        str | None,
        typer.Option(
            help="Judge every scenario against this SLO instead of its own, from the records: a preset "
            "(mlperf-llama2-70b, ...) or ttft=MS,tpot=MS[,p=99]."
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            help="Prometheus to ask for the server-side figures (default: the URL the scenarios name, "
            "from the plan); without an answer the report says so and goes on."
        ),
    ] = None,
) -> None:
    """Write report.md, report.html, results.json, results.csv, nodes.csv and PNG charts for a run."""
    from distinfer.report.goodput import rejudge
    from distinfer.report.render import write_report
    from distinfer.results.load import load_run
    from distinfer.results.slo import parse_slo

    try:
        run = load_run(run_dir)
        other = load_run(compare) if compare else None
        if slo:
            judged = parse_slo(slo)
            for each in (run, other):
                if each is not None:
                    rejudge(each, judged)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for path in write_report(run, out or run_dir / "report", other, prometheus):
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
