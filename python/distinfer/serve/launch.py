"""Run `distinfer serve [--bare]` as a child process: start it, wait until it answers, stop only it.

For the benchmark scripts and the tests that need a real server of their own. The child runs in a
session of its own, so it is stopped by its process group and nothing else: SIGINT first (the Ray
path then removes its application and stops the private Ray it started), SIGKILL to the group if it
does not go in time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from distinfer.serve.local_ray import free_ports

DISTINFER = str(Path(sys.executable).with_name("distinfer"))


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_until_answers(
    url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 180.0
) -> None:
    """Poll GET url until it answers 200; raise with the server's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} before answering:\n{log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not answering after {timeout_s:.0f} s:\n{log_tail(log_path)}")
        time.sleep(0.3)


def stop_process_group(
    proc: subprocess.Popen[bytes], first: signal.Signals = signal.SIGTERM, grace_s: float = 15.0
) -> None:
    """Signal the child's own process group, then SIGKILL the group if it has not exited in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    proc.wait()


@contextlib.contextmanager
def child_process(
    argv: list[str], log_path: Path, grace_s: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Any command as a child in its own session, output to `log_path`; SIGTERM then SIGKILL to its
    group at the end of the block (e.g. Debian's prometheus for the tests and benchmarks)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc, grace_s=grace_s)


@contextlib.contextmanager
def served(
    models: Path,
    port: int,
    log_path: Path,
    *,
    bare: bool,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 180.0,
    args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """`distinfer serve` for `models` on 127.0.0.1:port, answering /health, for the block's duration;
    `args`: more options of `distinfer serve` (e.g. --haproxy)."""
    cmd = [DISTINFER, "serve", "--models", str(models), "--host", "127.0.0.1", "--port", str(port)]
    if bare:
        cmd.append("--bare")
    cmd += args
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", proc, log_path, timeout_s)
        yield proc
    finally:
        # The Ray path needs time to delete its application and stop its Ray under load.
        stop_process_group(proc, signal.SIGINT, grace_s=30.0 if bare else 150.0)
