"""`distinfer dashboards`: write (or print) the Grafana dashboards as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def dashboards_command(
    out: Annotated[
        Path | None, typer.Option(help="Folder to write <uid>.json files to (Grafana's import format).")
    ] = None,
    print_all: Annotated[
        bool, typer.Option("--print", help="Print {uid: dashboard} as one JSON object instead.")
    ] = False,
) -> None:
    """The guide's node views and the serving views as Grafana dashboards (generated, never hand-edited).

    The helm_releases role (release kube_prometheus) turns them into ConfigMaps for
    kube-prometheus-stack's Grafana sidecar; elsewhere import the files into any Grafana with a
    Prometheus data source.
    """
    from distinfer.config import ConfigError
    from distinfer.dashboards.build import all_dashboards

    dashboards = all_dashboards()
    if print_all:
        typer.echo(json.dumps(dashboards, sort_keys=True))
        return
    if out is None:
        raise ConfigError("give --out FOLDER to write the dashboards, or --print to print them")
    out.mkdir(parents=True, exist_ok=True)
    for uid, dashboard in dashboards.items():
        path = out / f"{uid}.json"
        path.write_text(json.dumps(dashboard, indent=2, sort_keys=True) + "\n")
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("dashboards")(dashboards_command)
