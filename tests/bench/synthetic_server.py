"""The project's lightest real server (`distinfer serve --bare`, synthetic engine) for bench tests.

Started as a subprocess in its own session on a free port, stopped by its process group only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

DISTINFER = str(Path(sys.executable).with_name("distinfer"))


@dataclass
class SyntheticServer:
    url: str
    model: str
    truth_log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def synthetic_server(
    workdir: Path, ttft_ms: float = 20, itl_ms: float = 10, api_key: str | None = None
) -> Iterator[SyntheticServer]:
    """With `api_key`, the server asks for it, read from a 0600 file (`<api_key_env>_FILE`)."""
    port = free_port()
    env = dict(os.environ)
    secured: dict[str, str] = {}
    if api_key is not None:
        key_file = workdir / "server-key"
        key_file.write_text(api_key)
        key_file.chmod(0o600)
        secured = {"api_key_env": "DISTINFER_TEST_KEY"}
        env.pop("DISTINFER_TEST_KEY", None)
        env["DISTINFER_TEST_KEY_FILE"] = str(key_file)
    truth = workdir / "truth.jsonl"
    models = workdir / "models.yaml"
    models.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "synthetic",
                        "engine": "synthetic",
                        "max_ongoing_requests": 512,
                        "max_queued_requests": 512,
                        "ttft_ms": ttft_ms,
                        "itl_ms": itl_ms,
                        "truth_log": str(truth),
                    }
                ],
                "http": {"host": "127.0.0.1", "port": port},
                **secured,
            }
        )
    )
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [DISTINFER, "serve", "--bare", "--models", str(models)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(workdir / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield SyntheticServer(url=url, model="synthetic", truth_log=truth)
    finally:
        stop_group(proc)
        log.close()
