"""Debian's prometheus and prometheus-node-exporter (scripts/install-system-deps.sh), run by a test on
free ports of 127.0.0.1, each in its own session and stopped by its own PID only."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from distinfer.serve.launch import child_process
from distinfer.serve.local_ray import free_ports

PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def need_binaries() -> None:
    missing = [b for b in (PROMETHEUS, NODE_EXPORTER) if not shutil.which(b)]
    if missing:
        pytest.fail(f"{missing} not installed: run `bash scripts/install-system-deps.sh` (Debian's packages)")


def _wait_ok(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running_node_exporter(workdir: Path) -> Iterator[int]:
    (port,) = free_ports(1)
    log = workdir / "node-exporter.log"
    with child_process([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"], log) as proc:
        _wait_ok(f"http://127.0.0.1:{port}/metrics", proc, log)
        yield port


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, scrape_configs: list[dict[str, Any]], interval: str = "1s"
) -> Iterator[str]:
    (port,) = free_ports(1)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "scrape_configs": scrape_configs,
            }
        )
    )
    log = workdir / "prometheus.log"
    argv = [
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    with child_process(argv, log) as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_ok(f"{url}/-/ready", proc, log)
        yield url


def job(name: str, port: int, host: str) -> dict[str, Any]:
    return {
        "job_name": name,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"host": host}}],
    }
