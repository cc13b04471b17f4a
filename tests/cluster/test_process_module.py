"""roles/ray_local/library/distinfer_process.py on a real systemd host: a command whose environment
changes is restarted under the same transient unit name at once, again and again (systemd keeps a
just-stopped unit loaded for a moment; the module must wait for it, not fail), and stopped cleanly."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from playbook_runs import ansible_env
from testhosts import REPO_ROOT, TestHosts

pytestmark = pytest.mark.cluster

LIBRARY = REPO_ROOT / "roles" / "ray_local" / "library"
UNIT = "distinfer-proctest"


def keep(inventory: Path, env: dict[str, str], state: str = "started", **args: Any) -> dict[str, Any]:
    """One ad-hoc call of the module on node1; its JSON result."""
    module_args = {
        "name": UNIT,
        # like `ray start --block`: children in its cgroup, and a non-zero exit when told to stop
        "argv": ["/bin/bash", "-c", "trap 'exit 1' TERM; sleep 600 & sleep 600 & wait"],
        "env": env,
        "state": state,
        "state_dir": "/run/distinfer-proctest",
        "supervisor": "systemd",
        "settle": 0.5,
        **args,
    }
    proc = subprocess.run(
        [
            "ansible",
            "-i",
            str(inventory),
            "node1",
            "-M",
            str(LIBRARY),
            "-m",
            "distinfer_process",
            "-a",
            json.dumps(module_args),
            "--one-line",
        ],
        cwd=REPO_ROOT,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"^node1 \| (?:CHANGED|SUCCESS) => (\{.*\})$", proc.stdout, re.M)
    assert found, proc.stdout
    return dict(json.loads(found.group(1)))


def test_a_changed_environment_restarts_the_unit_every_time(
    test_hosts: TestHosts, test_inventory: Path
) -> None:
    pids = []
    try:
        for round_ in range(4):  # each call changes the fingerprint: stop, then start the same unit name
            result = keep(test_inventory, {"ROUND": str(round_)})
            assert result["changed"] and result["pid"] > 0, result
            pids.append(result["pid"])
        again = keep(test_inventory, {"ROUND": "3"})
        assert not again["changed"] and again["pid"] == pids[-1], again  # same fingerprint: left alone
        assert len(set(pids)) == len(pids), pids
        active = test_hosts.ssh("node1", f"systemctl is-active {UNIT}.service", check=False).stdout.strip()
        assert active == "active"
        running = test_hosts.ssh("node1", f"systemctl show -p MainPID --value {UNIT}.service").stdout.strip()
        assert int(running) == pids[-1]
    finally:
        stopped = keep(test_inventory, {}, state="stopped")
    assert stopped["changed"] and stopped["pid"] == 0, stopped
    for pid in pids:  # every earlier instance is gone, not left running beside the new one
        assert test_hosts.ssh("node1", f"test -d /proc/{pid}", check=False).returncode != 0, pid


def test_a_unit_still_stopping_by_itself_is_started_again(
    test_hosts: TestHosts, test_inventory: Path
) -> None:
    """A Ray worker whose head restarted exits by itself, and systemd is still stopping what is left in
    its cgroup (`deactivating`) when the next run starts it again under the same name: the module waits
    for the old unit to go, then starts the new one (it used to fail: "already loaded")."""
    # The main process exits after 2 s; a child ignores SIGTERM, so the unit stays deactivating until
    # systemd's stop timeout (stop_timeout = 4 s) kills it.
    dies = ["/bin/bash", "-c", "(trap '' TERM; exec sleep 600) & sleep 2; exit 1"]
    try:
        first = keep(test_inventory, {"ROUND": "dies"}, argv=dies, stop_timeout=4)
        assert first["changed"] and first["pid"] > 0, first
        state = "unknown"
        for _ in range(40):
            show = f"systemctl show -p ActiveState --value {UNIT}.service"
            state = test_hosts.ssh("node1", show, check=False).stdout.strip()
            if state == "deactivating":
                break
            time.sleep(0.25)
        assert state == "deactivating", state
        again = keep(test_inventory, {"ROUND": "again"}, stop_timeout=4)
        assert again["changed"] and again["pid"] > 0, again
        active = test_hosts.ssh("node1", f"systemctl is-active {UNIT}.service", check=False).stdout.strip()
        assert active == "active"
    finally:
        keep(test_inventory, {}, state="stopped")
