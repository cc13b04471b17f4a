"""The test hosts themselves: systemd boots, Ansible reaches every host over SSH with checked host keys,
the hosts reach each other and nothing outside, distinfer runs inside, and teardown leaves nothing."""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from leaks import places_holding
from testhosts import REPO_ROOT, TestHosts, TestHostsError, podman, prune_stale_runs

pytestmark = pytest.mark.cluster


def test_every_host_booted_systemd(test_hosts: TestHosts) -> None:
    for host in test_hosts.hosts:
        state = test_hosts.ssh(host.name, "systemctl is-system-running", check=False).stdout.strip()
        assert state in ("running", "degraded"), f"{host.name}: systemd is {state!r}"
        assert test_hosts.ssh(host.name, "hostname").stdout.strip() == host.name
        assert test_hosts.ssh(host.name, "systemctl is-active ssh").stdout.strip() == "active"


def ad_hoc(args: list[str], env: dict[str, str]) -> str:
    """`ansible ARGS` from the repo root, which must succeed; its output."""
    proc = subprocess.run(
        ["ansible", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_ansible_pings_every_host_over_ssh(
    test_hosts: TestHosts, test_inventory: Path, ansible_env: dict[str, str]
) -> None:
    stdout = ad_hoc(["-i", str(test_inventory), "testhosts", "-m", "ansible.builtin.ping", "-o"], ansible_env)
    for host in test_hosts.hosts:
        assert re.search(rf"^{host.name} \| SUCCESS => .*\"ping\": \"pong\"", stdout, re.M), stdout


def test_facts_say_container_guest(test_inventory: Path, ansible_env: dict[str, str]) -> None:
    # Roles skip what a container cannot do (sysctls, kernel modules) by these facts.
    setup = ["-m", "ansible.builtin.setup", "-a", "filter=ansible_virt*"]
    stdout = ad_hoc(["-i", str(test_inventory), "node1", *setup], ansible_env)
    facts = json.loads(stdout.split("=>", 1)[1])["ansible_facts"]
    assert facts["ansible_virtualization_type"] == "podman"
    assert facts["ansible_virtualization_role"] == "guest"


def test_inventory_carries_groups_and_vars(test_hosts: TestHosts, ansible_env: dict[str, str]) -> None:
    path = test_hosts.write_inventory(
        test_hosts.workdir / "grouped.yml",
        {"head": ["node1"], "workers": ["node2", "node3"]},
        host_vars={"node2": {"extra_var": 2}},
        group_vars={"all": {"everyone": True}, "workers": {"worker_kind": "worker"}},
    )
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(path), "--list"],
        env=ansible_env,
        capture_output=True,
        text=True,
        check=True,
    )
    inventory = json.loads(proc.stdout)
    assert inventory["head"]["hosts"] == ["node1"]
    assert sorted(inventory["workers"]["hosts"]) == ["node2", "node3"]
    node2 = inventory["_meta"]["hostvars"]["node2"]
    assert node2["ansible_host"] == test_hosts.host("node2").ip
    assert node2["extra_var"] == 2 and node2["everyone"] is True and node2["worker_kind"] == "worker"
    assert "worker_kind" not in inventory["_meta"]["hostvars"]["node1"]
    with pytest.raises(ValueError, match="unknown test hosts"):
        test_hosts.write_inventory(test_hosts.workdir / "bad.yml", {"head": ["node9"]})


def test_connection_overlay_points_a_real_inventory_at_test_hosts(
    test_hosts: TestHosts, tmp_path: Path, ansible_env: dict[str, str]
) -> None:
    real = tmp_path / "real.yml"
    real.write_text(
        "all:\n  children:\n    servers:\n      hosts:\n        gpu-a: {ansible_host: 192.0.2.10, gpus: 8}\n"
    )
    overlay = test_hosts.write_connection_overlay(tmp_path / "overlay.yml", {"gpu-a": "node3"})
    hostname = ["servers", "-m", "ansible.builtin.command", "-a", "hostname"]
    stdout = ad_hoc(["-i", str(real), "-i", str(overlay), *hostname], ansible_env)
    assert re.search(r"^gpu-a \| CHANGED \| rc=0 >>\nnode3$", stdout, re.M), stdout


def test_host_keys_are_checked(test_hosts: TestHosts, tmp_path: Path) -> None:
    # known_hosts claiming node2's key for node1's address: ssh must refuse, not accept the real key.
    node1, node2 = test_hosts.host("node1"), test_hosts.host("node2")
    known = test_hosts.known_hosts.read_text().splitlines()
    node2_key = next(line for line in known if line.startswith(f"{node2.ip},"))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(node2_key.replace(f"{node2.ip},{node2.name}", node1.ip) + "\n")
    argv = [a.replace(str(test_hosts.known_hosts), str(wrong)) for a in test_hosts.ssh_argv("node1")]
    proc = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_hosts_reach_each_other_but_not_outside(test_hosts: TestHosts) -> None:
    for src in test_hosts.hosts:
        for dst in test_hosts.hosts:
            if dst is src:
                continue
            # TCP to the peer's sshd, by IP and by name (every host has the others in /etc/hosts).
            for target in (dst.ip, dst.name):
                test_hosts.ssh(src.name, f"timeout 5 bash -c 'echo > /dev/tcp/{target}/22'")
    # --internal network: no default route, so nothing leaves this machine.
    proc = test_hosts.ssh("node1", "ip route get 192.0.2.1", check=False)
    assert proc.returncode != 0 and "unreachable" in proc.stderr.lower(), proc.stdout + proc.stderr


def test_a_host_powered_on_again_is_reached_at_once(test_hosts: TestHosts) -> None:
    """Same address, same MAC after a power cycle (as a server's NIC): its peers reach it without
    waiting for their ARP entries to go stale."""
    mac = "cat /sys/class/net/eth0/address"
    before = test_hosts.ssh("node3", mac).stdout.strip()
    test_hosts.ssh("node2", "timeout 5 bash -c 'echo > /dev/tcp/node3/22'")  # node2 has node3's MAC now
    test_hosts.power_off("node3")
    try:
        assert not test_hosts.is_running("node3")
    finally:
        test_hosts.power_on("node3")
    assert test_hosts.ssh("node3", mac).stdout.strip() == before
    test_hosts.ssh("node2", "timeout 5 bash -c 'echo > /dev/tcp/node3/22'")


def test_distinfer_and_ray_run_inside(test_hosts: TestHosts) -> None:
    distinfer = REPO_ROOT / ".venv" / "bin" / "distinfer"
    here = subprocess.run([distinfer, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    for host in test_hosts.hosts:
        inside = test_hosts.ssh(host.name, f"{REPO_ROOT}/.venv/bin/distinfer --version").stdout.strip()
        assert inside == here
    ray = test_hosts.ssh("node1", f"{REPO_ROOT}/.venv/bin/python -c 'import ray; print(ray.__version__)'")
    assert re.fullmatch(r"\d+\.\d+\.\d+", ray.stdout.strip())
    # Ray's object store lives in /dev/shm: it must be the size we asked for, not docker's 64 MiB.
    shm_kib = int(test_hosts.ssh("node1", "df --output=size -k /dev/shm | tail -1").stdout)
    assert shm_kib >= 1024 * 1024
    # The repo is read-only inside; the scratch dir is shared and writable.
    assert test_hosts.ssh("node1", f"touch {REPO_ROOT}/x", check=False).returncode != 0
    test_hosts.ssh("node1", "echo hello > /scratch/probe")
    assert (test_hosts.host("node1").scratch / "probe").read_text() == "hello\n"


def test_down_removes_exactly_what_up_created(test_hosts: TestHosts, tmp_path: Path) -> None:
    # A second run beside the session's: its own network and subnet, and its down() leaves the other alone.
    hosts = TestHosts(["solo"], tmp_path / "solo").up()
    container, network = hosts.host("solo").container_id, hosts.network
    assert network is not None and network != test_hosts.network
    session_subnet = ipaddress.ip_network(f"{test_hosts.host('node1').ip}/24", strict=False)
    assert ipaddress.ip_address(hosts.host("solo").ip) not in session_subnet
    assert podman("container", "exists", container, check=False).returncode == 0
    hosts.ssh("solo", "true")
    hosts.down()
    assert podman("container", "exists", container, check=False).returncode == 1
    assert podman("network", "exists", network, check=False).returncode == 1
    hosts.down()  # idempotent
    test_hosts.ssh("node1", "true")


def test_leftovers_of_a_killed_run_are_pruned(tmp_path: Path) -> None:
    # The owner dies by SIGKILL (no atexit, no finally): the next session's prune removes its hosts.
    script = (
        "import sys, time; from testhosts import TestHosts; "
        f"h = TestHosts(['ghost'], {str(tmp_path / 'ghost')!r}).up(); "
        "print(h.run_id, h.host('ghost').container_id, h.network, flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=Path(__file__).parent, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        run_id, container, network = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait()
    assert podman("container", "exists", container, check=False).returncode == 0
    assert run_id in prune_stale_runs()
    assert podman("container", "exists", container, check=False).returncode == 1
    assert podman("network", "exists", network, check=False).returncode == 1


def test_failed_up_leaves_nothing_behind(tmp_path: Path) -> None:
    hosts = TestHosts(["solo"], tmp_path / "broken", venv=tmp_path / "no-venv")
    with pytest.raises(TestHostsError, match="not a virtual environment"):
        hosts.up()
    assert hosts.network is not None  # it got as far as creating the network ...
    assert podman("network", "exists", hosts.network, check=False).returncode == 1  # ... and removed it


def test_the_secret_search_finds_a_secret_wherever_a_run_could_leave_it(
    test_hosts: TestHosts, tmp_path: Path
) -> None:
    """leaks.places_holding, which the platform tests rely on to say a key leaked nowhere, does find one
    planted in a results file here, in distinfer's state and Ray's logs on a host, and in a journal."""
    secret = "planted-" + secrets.token_hex(8)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.json").write_text(f'{{"x": "{secret}"}}')
    test_hosts.ssh(
        "node2", f"mkdir -p /tmp/di-ray/session_x/logs && echo {secret} > /tmp/di-ray/session_x/logs/a.log"
    )
    test_hosts.ssh("node3", f"logger -t distinfer-test {secret}")
    try:
        found = places_holding(secret, test_hosts, [tmp_path / "results"])
        assert f"controller:{tmp_path / 'results' / 'summary.json'}" in found, found
        assert "node2:/tmp/di-ray/session_x/logs/a.log" in found and "node3:journal" in found, found
        assert not [place for place in found if place.startswith("node1:")], found
    finally:
        test_hosts.ssh("node2", "rm -rf /tmp/di-ray/session_x")
