"""library/distinfer_process.py on a real systemd host: a command whose environment
changes is restarted under the same transient unit name at once, again and again (systemd keeps a
just-stopped unit loaded for a moment; the module must wait for it, not fail), and stopped cleanly;
with `restart: on-failure` systemd brings a failed command back, never a stopped one."""

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

LIBRARY = REPO_ROOT / "library"
UNIT = "distinfer-proctest"


def keep(
    inventory: Path, env: dict[str, str], state: str = "started", fails: bool = False, **args: Any
) -> dict[str, Any]:
    """One ad-hoc call of the module on node1; its JSON result (`fails`: the call must fail)."""
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
    assert (proc.returncode != 0) == fails, proc.stdout + proc.stderr
    outcome = "FAILED!" if fails else "(?:CHANGED|SUCCESS)"
    found = re.search(rf"^node1 \| {outcome} => (\{{.*\}})$", proc.stdout, re.M)
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


def _unit(test_hosts: TestHosts, prop: str) -> str:
    show = f"systemctl show -p {prop} --value {UNIT}.service"
    return test_hosts.ssh("node1", show, check=False).stdout.strip()


def test_restart_on_failure_brings_a_failed_command_back_and_a_stop_is_final(
    test_hosts: TestHosts, test_inventory: Path
) -> None:
    """A Ray worker whose `ray start` failed (its raylet missed Ray's 30 s registration timeout on a
    loaded host) is started again by systemd (restart: on-failure), the module then leaves the
    restarted instance alone, and a stop asked for is never undone."""
    marker = "/run/distinfer-proctest/failed-once"
    fails_once = ["/bin/bash", "-c", f"test -e {marker} && exec sleep 600; touch {marker}; sleep 1; exit 1"]
    test_hosts.ssh("node1", f"rm -f {marker}", check=False)
    try:
        first = keep(test_inventory, {"ROUND": "restart"}, argv=fails_once, restart="on-failure")
        assert first["changed"] and first["pid"] > 0, first
        pid = 0
        for _ in range(60):  # the first instance exits with 1 after 1 s; systemd restarts it 3 s later
            state, pid = _unit(test_hosts, "ActiveState"), int(_unit(test_hosts, "MainPID") or 0)
            if state == "active" and pid not in (0, first["pid"]):
                break
            time.sleep(0.25)
        assert pid not in (0, first["pid"]), f"not restarted: {_unit(test_hosts, 'SubState')}"
        again = keep(test_inventory, {"ROUND": "restart"}, argv=fails_once, restart="on-failure")
        assert not again["changed"] and again["pid"] == pid, again
    finally:
        stopped = keep(test_inventory, {}, state="stopped")
    assert stopped["changed"], stopped
    time.sleep(4)  # past RestartSec: a stop asked for stays a stop
    assert _unit(test_hosts, "ActiveState") in ("inactive", "failed", ""), _unit(test_hosts, "SubState")


def test_a_unit_waiting_for_its_restart_is_replaced_by_a_new_command(
    test_hosts: TestHosts, test_inventory: Path
) -> None:
    """A command that keeps failing sits between restarts (`auto-restart`) when the next run asks for
    another command: the module cancels the pending restart and starts the new one."""
    always_fails = ["/bin/bash", "-c", "sleep 1; exit 1"]
    try:
        keep(test_inventory, {"ROUND": "fails"}, argv=always_fails, restart="on-failure")
        sub = ""
        for _ in range(40):
            sub = _unit(test_hosts, "SubState")
            if sub == "auto-restart":
                break
            time.sleep(0.25)
        assert sub == "auto-restart", sub
        replaced = keep(test_inventory, {"ROUND": "replaced"}, restart="on-failure")
        assert replaced["changed"] and replaced["pid"] > 0, replaced
        assert _unit(test_hosts, "ActiveState") == "active"
        assert int(_unit(test_hosts, "MainPID")) == replaced["pid"]
    finally:
        keep(test_inventory, {}, state="stopped")


def test_a_start_waits_for_the_ready_file_not_a_fixed_settle(
    test_hosts: TestHosts, test_inventory: Path
) -> None:
    """With `ready_path` (the node recorder's samples file) a start returns once the command has written
    to it, however long that takes (here 3 s, past the 2 s settle), and not before; a command that exits
    before writing fails the start with its output, and so does one that never writes in time."""
    ready = "/run/distinfer-proctest/ready"
    writes_late = ["/bin/bash", "-c", f"sleep 3; echo started >> {ready}; exec sleep 600"]
    test_hosts.ssh("node1", f"rm -f {ready}", check=False)
    try:
        began = time.monotonic()
        late = keep(test_inventory, {"ROUND": "late"}, argv=writes_late, ready_path=ready)
        assert late["changed"] and late["pid"] > 0, late
        assert time.monotonic() - began >= 3, "returned before the file was written"
        assert test_hosts.ssh("node1", f"cat {ready}").stdout == "started\n"
        # The file is there already: a restart waits for it to grow, not for it to exist.
        again = keep(test_inventory, {"ROUND": "again"}, argv=writes_late, ready_path=ready)
        assert again["changed"] and again["pid"] != late["pid"], again
        assert test_hosts.ssh("node1", f"cat {ready}").stdout == "started\nstarted\n"
        dies = ["/bin/bash", "-c", "echo 'no such device' >&2; exit 3"]
        died = keep(test_inventory, {"ROUND": "dies"}, argv=dies, ready_path=ready, fails=True)
        assert "exited before it wrote" in died["msg"] and "no such device" in died["msg"], died
        never = ["/bin/bash", "-c", "exec sleep 600"]
        slow = keep(
            test_inventory, {"ROUND": "never"}, argv=never, ready_path=ready, ready_timeout=1, fails=True
        )
        assert f"did not write {ready} within 1" in slow["msg"], slow
        assert _unit(test_hosts, "ActiveState") in ("inactive", "failed", ""), "left running"
    finally:
        keep(test_inventory, {}, state="stopped")
        test_hosts.ssh("node1", f"rm -f {ready}", check=False)
