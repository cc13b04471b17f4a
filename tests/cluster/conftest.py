"""Fixtures for tests against real test hosts (podman containers with systemd, reached over SSH).

`test_hosts` boots node1..node3 once per session (the rootfs is built on first use and cached under
.cache/testhosts/) and removes them at the end, also when a test fails. It fails loudly, never skips:
on this machine podman must work, and a skipped infrastructure test would hide a broken CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playbook_runs import ansible_env as _ansible_env
from testhosts import TestHosts, prune_stale_runs

HOST_NAMES = ("node1", "node2", "node3")


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("test hosts need root (podman containers with systemd, an address on their bridge)")
    tools = ("podman", "debootstrap", "ssh", "ssh-keygen", "ip")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        pytest.fail(f"test hosts need {missing}; install them with `bash scripts/install-system-deps.sh`")


@pytest.fixture(scope="session")
def test_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    """Three running test hosts, node1..node3, for the whole session."""
    _require_tools()
    prune_stale_runs()  # leftovers of a killed earlier run (only runs this code recorded)
    with TestHosts(HOST_NAMES, tmp_path_factory.mktemp("testhosts")) as hosts:
        yield hosts


@pytest.fixture(scope="session")
def test_inventory(test_hosts: TestHosts) -> Path:
    """An inventory with every host in group `testhosts` and its SSH connection vars."""
    return test_hosts.write_inventory(test_hosts.workdir / "inventory.yml", {"testhosts": list(HOST_NAMES)})


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    """Environment for ansible CLIs run from the repo root: the venv's tools first on PATH."""
    return _ansible_env()
