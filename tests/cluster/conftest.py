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
from playbook_runs import (
    POWEREDGE_INVENTORY,
    PREREQ_PLAYBOOK,
    TEST_HOST_VARS,
    PlaybookRun,
    inventory_hosts,
    run_playbook,
)
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


@pytest.fixture(scope="module")
def trixie_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    """One Debian 13 (trixie) test host, node1, for a module (its rootfs built once, cached beside
    bookworm's); on its own network, beside the session's bookworm hosts."""
    _require_tools()
    prune_stale_runs()
    with TestHosts(["node1"], tmp_path_factory.mktemp("trixie"), release="trixie") as hosts:
        yield hosts


@pytest.fixture(scope="session")
def test_inventory(test_hosts: TestHosts) -> Path:
    """An inventory with every host in group `testhosts` and its SSH connection vars."""
    return test_hosts.write_inventory(test_hosts.workdir / "inventory.yml", {"testhosts": list(HOST_NAMES)})


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    """Environment for ansible CLIs run from the repo root: the venv's tools first on PATH."""
    return _ansible_env()


# --- the repo's real inventory on the test hosts (prereq idempotency, K3s/addons check mode) -----------


@pytest.fixture(scope="session")
def poweredge_on_test_hosts(
    test_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]
) -> list[Path]:
    """`-i` sources: inventory/poweredge unchanged (groups, group_vars), its servers mapped in order onto
    node1..node3 by a connection overlay."""
    names = inventory_hosts(POWEREDGE_INVENTORY, ansible_env)
    assert 0 < len(names) <= len(HOST_NAMES), f"expected 1-3 hosts in {POWEREDGE_INVENTORY}, got {names}"
    overlay = tmp_path_factory.mktemp("poweredge") / "overlay.yml"
    test_hosts.write_connection_overlay(
        overlay, dict(zip(names, HOST_NAMES, strict=False)), host_vars=TEST_HOST_VARS
    )
    return [POWEREDGE_INVENTORY, overlay]


@pytest.fixture(scope="session")
def prereq_first_run(
    poweredge_on_test_hosts: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> PlaybookRun:
    """playbooks/prereq.yml applied for real, once per session, to the fresh test hosts."""
    log = tmp_path_factory.mktemp("prereq") / "first.log"
    return run_playbook(PREREQ_PLAYBOOK, poweredge_on_test_hosts, log=log)
