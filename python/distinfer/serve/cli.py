"""`distinfer serve` and `distinfer serve-config`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from distinfer.config import (
    DEFAULT_APP_NAME,
    ConfigError,
    ModelsFile,
    load_models_file,
    parse_replica_overrides,
    serve_config,
)

log = logging.getLogger(__name__)

# Serve's direct ingress behind HAProxy on the private Ray `distinfer serve` starts (measured:
# benchmarks/serve_overhead.md).
HAPROXY_DEFAULT = True

ModelsOpt = Annotated[Path, typer.Option("--models", help="Models file (YAML); see files/models/.")]
AppNameOpt = Annotated[str, typer.Option("--app-name", help="Ray Serve application name.")]


def serve(
    models: ModelsOpt,
    host: Annotated[str | None, typer.Option(help="Listen address (default: the file's http.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: the file's http.port).")] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Deploy onto this running Ray; default: start one.")
    ] = None,
    bare: Annotated[
        bool, typer.Option("--bare", help="No Ray: the same app with engines in-process (uvicorn).")
    ] = False,
    app_name: AppNameOpt = DEFAULT_APP_NAME,
    haproxy: Annotated[
        bool,
        typer.Option(
            "--haproxy/--no-haproxy",
            help="On the Ray this command starts: Serve's direct ingress behind HAProxy (no proxy actor "
            "on a request's path; benchmarks/README.md). With --ray-address that Ray's own settings decide.",
        ),
    ] = HAPROXY_DEFAULT,
    edge: Annotated[
        bool,
        typer.Option(
            "--edge/--no-edge",
            help="On the Ray this command starts: an HAProxy in front of Serve on the listen port that "
            "holds the model's slots and queue and answers 503 past them without a replica doing any "
            "work (serve/edge.py). With --ray-address there is no edge.",
        ),
    ] = True,
) -> None:
    """Serve the models file's models over an OpenAI-compatible HTTP API; blocks until Ctrl-C."""
    spec = load_models_file(models)
    if ray_address is None:  # the replicas run on this machine: their model folders must be here
        check_local_model_folders(spec, models)
    listen_host = host or spec.http.host
    listen_port = port or spec.http.port
    if bare:
        from distinfer.serve.bare import run_bare

        run_bare(spec, listen_host, listen_port)
        return
    from distinfer.serve.runner import run_on_ray

    run_on_ray(
        spec, listen_host, listen_port, ray_address=ray_address, app_name=app_name, haproxy=haproxy, edge=edge
    )


def check_local_model_folders(spec: ModelsFile, source: Path) -> None:
    """Refuse, before anything starts, a model given as a local path that is not a model folder here
    (a replica would otherwise fail to load it again and again, with a Hugging Face hub error)."""
    for entry in spec.models:
        name = getattr(entry, "model", None)
        if not name or not name.startswith(("/", "./", "../", "~")):
            continue  # a hub id: vLLM fetches it (or finds it in the hub cache)
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            what = "does not exist" if not folder.exists() else "has no config.json (not a model folder)"
            raise ConfigError(
                f"{source}: model {entry.name!r}: {folder} {what} on this machine; make it with "
                f"`distinfer model smollm2 {folder}` (SmolLM2) or `distinfer model make-tiny {folder}` (the "
                "tiny Llama), or point `model:` at a folder with the model's config.json and weights"
            )


def serve_config_command(
    models: ModelsOpt,
    replicas: Annotated[
        list[str] | None, typer.Option("--replicas", help="Override a model's replicas: NAME=N (repeatable).")
    ] = None,
    app_name: AppNameOpt = DEFAULT_APP_NAME,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> None:
    """Print the Ray Serve config (for `serve deploy` or a RayService serveConfigV2)."""
    if fmt not in ("yaml", "json"):
        raise ConfigError(f"--format takes yaml or json, got {fmt!r}")
    spec = load_models_file(models).with_replicas(parse_replica_overrides(replicas or []))
    config = serve_config(spec, app_name)
    if fmt == "json":
        typer.echo(json.dumps(config, indent=2))
    else:
        typer.echo(yaml.safe_dump(config, sort_keys=False), nl=False)


def _address(value: str, option: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option} takes HOST:PORT (e.g. 0.0.0.0:8000), got {value!r}")
    return host, int(port)


def edge_config_command(
    listen: Annotated[str, typer.Option("--listen", help="Where the edge listens: HOST:PORT.")],
    upstream: Annotated[str, typer.Option("--upstream", help="Serve's HTTP address behind it: HOST:PORT.")],
    models: Annotated[
        Path | None, typer.Option("--models", help="A models file (one model: its slots are held).")
    ] = None,
    serve_config_file: Annotated[
        Path | None,
        typer.Option(
            "--serve-config", help="Or a Serve config (YAML/JSON, `distinfer serve-config`'s; - for stdin)."
        ),
    ] = None,
    app_name: AppNameOpt = DEFAULT_APP_NAME,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the files into this folder; prints whether any changed."),
    ] = None,
    at: Annotated[
        Path | None,
        typer.Option("--at", help="The folder's path where HAProxy reads it (default: --out)."),
    ] = None,
    admin_socket: Annotated[
        Path | None, typer.Option("--admin-socket", help="HAProxy's admin socket (default: in the folder).")
    ] = None,
) -> None:
    """The edge's HAProxy files (serve/edge.py) for a deployment: written into --out, else printed as
    JSON (name -> content, e.g. for a ConfigMap)."""
    from distinfer.serve.edge import edge_files, edge_limits, serve_config_limits, write_edge_files

    if (models is None) == (serve_config_file is None):
        raise ConfigError("give one of --models (a models file) or --serve-config (a Serve config)")
    if out is None and at is None:
        raise ConfigError("give --out (write the files there) or --at (their folder where HAProxy runs)")
    if serve_config_file is not None:
        try:
            text = sys.stdin.read() if str(serve_config_file) == "-" else serve_config_file.read_text()
            config = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--serve-config {serve_config_file}: cannot read it: {err}") from err
        if not isinstance(config, dict):
            raise ConfigError(f"--serve-config {serve_config_file}: not a Serve config (a mapping)")
        limits = serve_config_limits(config, app_name)
    else:
        assert models is not None
        limits = edge_limits(load_models_file(models))
    folder = at or out
    assert folder is not None
    files = edge_files(
        limits, _address(listen, "--listen"), _address(upstream, "--upstream"), folder, admin_socket
    )
    shown = dataclasses.asdict(limits) if limits else None
    if out is None:
        typer.echo(json.dumps(files, indent=2))
        return
    changed = write_edge_files(files, out)
    typer.echo(json.dumps({"changed": changed, "folder": str(out), "limits": shown}))


def edge_command(
    folder: Annotated[Path, typer.Option("--folder", help="The folder `distinfer edge-config --out` wrote.")],
) -> None:
    """Run the edge's HAProxy on FOLDER/edge.cfg in the foreground (what the local platform's role
    keeps running on the head); ends with it."""
    from distinfer.serve.edge import haproxy_binary

    config = folder / "edge.cfg"
    if not config.is_file():
        raise ConfigError(
            f"{config} does not exist: write it first with `distinfer edge-config --out {folder}`"
        )
    binary = haproxy_binary()
    os.execv(binary, [binary, "-db", "-f", str(config)])


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("serve-config")(serve_config_command)
    app.command("edge-config")(edge_config_command)
    app.command("edge")(edge_command)
