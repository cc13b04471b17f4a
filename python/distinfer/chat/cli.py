"""`distinfer chat --url URL [--host H] [--port P] [--api-key-file F]`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from distinfer.config import ConfigError

DEFAULT_PORT = 7860


def read_api_key(path: Path | None) -> str | None:
    """The key in the file (surrounding whitespace dropped), else $DISTINFER_API_KEY, else none."""
    if path is None:
        return os.environ.get("DISTINFER_API_KEY") or None
    try:
        key = path.read_text().strip()
    except OSError as err:
        raise ConfigError(
            f"cannot read --api-key-file {path}: {err.strerror}; give a readable file"
        ) from None
    if not key:
        raise ConfigError(f"--api-key-file {path} is empty; put the app's API key in it, or drop the option")
    return key


def chat_command(
    url: Annotated[
        str, typer.Option(help="The app's base URL, e.g. http://127.0.0.1:24800 (with or without /v1).")
    ],
    host: Annotated[str, typer.Option(help="Listen address of the page.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port of the page.")] = DEFAULT_PORT,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File holding the app's API key (default: env DISTINFER_API_KEY, else none)."),
    ] = None,
) -> None:
    """Serve a chat page (Gradio) that asks the app through its OpenAI API; blocks until Ctrl-C."""
    from distinfer.chat.client import ApiTarget
    from distinfer.chat.server import run_chat

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url {url!r} must start with http:// or https://, e.g. http://127.0.0.1:24800")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} must be between 1 and 65535")
    run_chat(ApiTarget(url, read_api_key(api_key_file)), host, port)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat_command)
