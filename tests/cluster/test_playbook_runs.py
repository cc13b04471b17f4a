"""The harness the idempotency gates rely on: a real playbook over SSH, its PLAY RECAP read per host."""

from __future__ import annotations

from pathlib import Path

import pytest
from playbook_runs import parse_recap, run_playbook
from testhosts import TestHosts

pytestmark = pytest.mark.cluster

PLAYBOOK = """\
- name: Harness probe
  hosts: testhosts
  gather_facts: false
  tasks:
    - name: Probe | Write a marker file
      ansible.builtin.copy:
        dest: /etc/distinfer-probe
        content: "{{ inventory_hostname }}\\n"
        mode: "0644"
    - name: Probe | Fail where asked
      ansible.builtin.fail:
        msg: asked to fail
      when: probe_fail_on | default('') == inventory_hostname
"""


def test_second_run_of_an_idempotent_play_reports_changed_zero(
    test_hosts: TestHosts, test_inventory: Path, tmp_path: Path
) -> None:
    playbook = tmp_path / "probe.yml"
    playbook.write_text(PLAYBOOK)
    names = [h.name for h in test_hosts.hosts]

    first = run_playbook(playbook, test_inventory, log=tmp_path / "first.log")
    assert first.returncode == 0, first.describe()
    assert first.changed() == dict.fromkeys(names, 1), first.describe()

    second = run_playbook(playbook, test_inventory, log=tmp_path / "second.log")
    assert second.returncode == 0, second.describe()
    assert second.changed() == dict.fromkeys(names, 0), second.describe()
    assert test_hosts.ssh("node2", "cat /etc/distinfer-probe").stdout == "node2\n"

    failing = run_playbook(playbook, test_inventory, extra_vars={"probe_fail_on": "node3"})
    assert failing.returncode != 0
    assert failing.failed_hosts() == ["node3"], failing.describe()


def test_parse_recap_reads_the_last_recap() -> None:
    output = """
PLAY RECAP *********************************************************************
node1        : ok=3    changed=2    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
PLAY RECAP *********************************************************************
node1        : ok=4    changed=0    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
node2        : ok=1    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0

Tuesday 25 November 2026  00:50:01 +0000 (0:00:00.1)       0:00:03.2 *****
"""
    recap = parse_recap(output)
    assert recap["node1"].ok == 4 and recap["node1"].changed == 0 and recap["node1"].skipped == 1
    assert recap["node2"].unreachable == 1
    assert parse_recap("no recap here") == {}
