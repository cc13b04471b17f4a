"""The project's lightest real server (`distinfer serve --bare`, synthetic engine) for bench tests.

Started as a subprocess in its own session on a free port, stopped by its process group only
(distinfer.serve.launch).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distinfer.serve.launch import DISTINFER, free_port, served, stop_process_group

__all__ = ["DISTINFER", "FINISHED", "SyntheticServer", "free_port", "stop_group", "synthetic_server"]

# `distinfer bench` exit statuses of a run that finished and wrote its summary: 0 valid, 4 INVALID
# (the saturation guard; on a busy shared machine the load client's own event loop runs late). Tests
# whose subject is not that verdict accept both; the statuses themselves are tested on their own.
FINISHED = (0, 4)

KEY_ENV = "DISTINFER_SYNTHETIC_TEST_KEY"


@dataclass
class SyntheticServer:
    url: str
    model: str
    truth_log: Path
    process: subprocess.Popen[bytes] | None = None


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    stop_process_group(proc, grace_s=grace_s)


@contextlib.contextmanager
def synthetic_server(
    workdir: Path,
    ttft_ms: float = 20,
    itl_ms: float = 10,
    api_key: str | None = None,
    **model: Any,
) -> Iterator[SyntheticServer]:
    """`model` adds to or overrides the synthetic model entry (e.g. max_ongoing_requests=2). With
    `api_key`, the server asks for it and reads it from a 0600 file (`<api_key_env>_FILE`), as the
    roles hand it over."""
    port = free_port()
    truth = workdir / "truth.jsonl"
    models = workdir / "models.yaml"
    entry = {
        "name": "synthetic",
        "engine": "synthetic",
        "max_ongoing_requests": 512,
        "max_queued_requests": 512,
        "ttft_ms": ttft_ms,
        "itl_ms": itl_ms,
        "truth_log": str(truth),
        **model,
    }
    spec: dict[str, Any] = {"models": [entry], "http": {"host": "127.0.0.1", "port": port}}
    if api_key:
        spec["api_key_env"] = KEY_ENV
    models.write_text(yaml.safe_dump(spec))
    env = {}
    if api_key:
        key_file = workdir / "server-key"
        key_file.write_text(api_key)
        key_file.chmod(0o600)
        env = {f"{KEY_ENV}_FILE": str(key_file)}
    with served(models, port, workdir / "server.log", bare=True, env=env, timeout_s=60) as proc:
        yield SyntheticServer(
            url=f"http://127.0.0.1:{port}", model="synthetic", truth_log=truth, process=proc
        )
