"""A private Ray does not outlive the process that started it, even one killed with SIGKILL.

`distinfer serve` (and every test or benchmark) starts its Ray with `LocalRay.start()`; a SIGKILL
gives it no chance to stop that Ray, so the kernel's parent-death signal must.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

OWNER = """
import sys, time
from distinfer.serve.local_ray import LocalRay
ray = LocalRay.start(num_cpus=1)
print(ray.process.pid, ray.temp_dir, flush=True)
time.sleep(300)
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_owner_takes_its_ray_down(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "owner.log").open("wb"),
        text=True,
        start_new_session=True,
    )
    ray_pid = 0
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        assert len(line) == 2 and line[0].isdigit(), (tmp_path / "owner.log").read_text()[-2000:]
        ray_pid, temp_dir = int(line[0]), Path(line[1])
        assert _group_alive(ray_pid)  # `ray start --block` leads its own process group
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 60
        while _group_alive(ray_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group_alive(ray_pid), "Ray kept running after its owner was killed"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if ray_pid and _group_alive(ray_pid):  # only the group this test started
            os.killpg(ray_pid, signal.SIGKILL)
        if ray_pid:  # its owner had no chance to remove it
            shutil.rmtree(temp_dir, ignore_errors=True)
