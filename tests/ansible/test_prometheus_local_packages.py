"""roles/prometheus_local's choice of package versions, on this machine with a stand-in `apt-cache`.

Each release's Debian has its own Prometheus: where the host's apt offers the pinned version the role
installs it, elsewhere (Debian 13 has no 2.42) the release's own, and says so; a host whose apt has no
version at all, a host without apt and pins that are not Debian versions stop with the problem and the
fix named. `apt-cache policy` is the only source (it reads apt's lists; a stand-in here prints what a
release would), and it runs in check mode too: these plays run in check mode. The same path for real:
`tests/cluster/test_local_platform_deb13.py` (a Debian 13 host) and `test_local_platform.py` (Debian 12).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import LOCAL_HOST_VARS, VENV_BIN, write_inventory
from helpers import run_playbook as run

# What apt has of each stand-in package: (installed, candidate, versions offered), as `apt-cache policy`
# prints them (`policy_text`).
POLICIES = {
    # Debian 12: the pinned version installed.
    "pinned-installed": ("1.0-1", "1.0-1", ["1.0-1"]),
    # the pinned version offered (not the candidate), nothing installed
    "pinned-offered": ("(none)", "2.0-1", ["2.0-1", "1.0-1"]),
    # Debian 13 with its own installed (a test host, or a second run): nothing to do
    "release-installed": ("2.0-1", "2.0-1", ["2.0-1"]),
    # Debian 13, nothing installed yet: the release's candidate
    "release-new": ("(none)", "1:2.0-1", ["1:2.0-1"]),
    # an older one installed than the release's candidate: the candidate
    "release-older": ("1.5-1", "2.0-1", ["2.0-1", "1.5-1"]),
    # apt knows no such package (no output at all)
    "absent": None,
}
PINNED = "1.0-1"
EXPECTED = {  # name -> (version chosen, fallback, settled)
    "pinned-installed": ("1.0-1", False, True),
    "pinned-offered": ("1.0-1", False, False),
    "release-installed": ("2.0-1", True, True),
    "release-new": ("1:2.0-1", True, False),
    "release-older": ("2.0-1", True, False),
    "absent": ("", False, False),
}

PLAY = """
- name: The role's checks and its choice of versions
  hosts: all
  gather_facts: true
  tasks:
    - name: Check the host and the pins
      ansible.builtin.include_role: {name: prometheus_local, tasks_from: check.yml}
      when: run_check | default(false)
    - name: Choose
      ansible.builtin.include_role: {name: prometheus_local, tasks_from: "{{ tasks_file }}"}
      when: tasks_file | default('') != ''
    - name: Keep the choice
      ansible.builtin.copy:
        content: "{{ prometheus_local_choice | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
      check_mode: false
      changed_when: false  # the test's own file: the role's changes are what the recap counts
"""


def policy_text(name: str, installed: str, candidate: str, versions: list[str]) -> str:
    """`apt-cache policy NAME` (LC_ALL=C) as apt prints it."""
    rows = []
    for version in versions:
        rows.append(f" {'***' if version == installed else '   '} {version} 500")
        rows.append("        500 http://deb.debian.org/debian trixie/main amd64 Packages")
        if version == installed:
            rows.append("        100 /var/lib/dpkg/status")
    head = f"{name}:\n  Installed: {installed}\n  Candidate: {candidate}\n  Version table:\n"
    return head + "\n".join(rows) + "\n"


def _stand_in_apt(tmp_path: Path) -> dict[str, str]:
    """An `apt-cache` first on PATH that prints POLICIES; the environment that puts it there."""
    policies = tmp_path / "policies"
    policies.mkdir()
    for name, policy in POLICIES.items():
        if policy is not None:
            (policies / name).write_text(policy_text(name, *policy))
    fake = tmp_path / "bin"
    fake.mkdir()
    apt_cache = fake / "apt-cache"
    apt_cache.write_text(f'#!/bin/sh\n[ "$1" = policy ] && cat "{policies}/$2" 2>/dev/null\nexit 0\n')
    apt_cache.chmod(0o755)
    return {"PATH": f"{fake}:{VENV_BIN}:{os.environ.get('PATH', '')}"}


def _inventory(tmp_path: Path, hosts: dict[str, dict[str, object]]) -> Path:
    all_hosts = {name: {**LOCAL_HOST_VARS, **host_vars} for name, host_vars in hosts.items()}
    return write_inventory(tmp_path / "inv", {"all": {"hosts": all_hosts, "vars": {"out": str(tmp_path)}}})


def test_the_pinned_version_where_apt_has_it_else_the_release_s_own(tmp_path: Path) -> None:
    env = _stand_in_apt(tmp_path)
    (tmp_path / "play.yml").write_text(PLAY)
    pins = {name: PINNED for name in POLICIES}
    inventory = _inventory(
        tmp_path, {"choice": {"tasks_file": "apt_offer.yml", "prometheus_local_package_versions": pins}}
    )
    result = run(str(tmp_path / "play.yml"), inventory, check=True, extra_env=env)
    assert result.returncode == 0, result.output[-3000:]
    choice = {c["name"]: c for c in json.loads((tmp_path / "choice.json").read_text())}
    assert {name: (c["version"], c["fallback"], c["settled"]) for name, c in choice.items()} == EXPECTED
    assert choice["release-new"]["spec"] == "release-new=1:2.0-1"


def test_a_fallback_is_said_and_changes_nothing_once_in_place(tmp_path: Path) -> None:
    """Debian 13 with its own packages in place (a test host, or a second run): the role says it uses
    them instead of the pinned ones, refreshes nothing and installs nothing."""
    env = _stand_in_apt(tmp_path)
    (tmp_path / "play.yml").write_text(PLAY)
    pins = {"release-installed": "1.0-1+deb12u1", "pinned-installed": PINNED}
    inventory = _inventory(
        tmp_path, {"deb13": {"tasks_file": "packages.yml", "prometheus_local_package_versions": pins}}
    )
    result = run(str(tmp_path / "play.yml"), inventory, check=True, extra_env=env)
    assert result.returncode == 0 and result.recap()["deb13"]["changed"] == 0, result.output[-3000:]
    said = " ".join(result.output.split())
    assert (
        "release-installed: Debian 12" in said
        and "has no 1.0-1+deb12u1, the pinned version (prometheus_local_package_versions);"
        " using the release's own 2.0-1 instead."
        in said
    ), result.output[-3000:]
    assert "pinned-installed: " not in said  # at the pinned version: nothing to say


def test_a_host_that_cannot_run_it_is_stopped_with_the_fix_named(tmp_path: Path) -> None:
    env = _stand_in_apt(tmp_path)
    (tmp_path / "play.yml").write_text(PLAY)
    good = {"prometheus": PINNED, "prometheus-node-exporter": PINNED}
    hosts = {
        "bad-version": {
            "run_check": True,
            "prometheus_local_package_versions": {**good, "prometheus": "latest"},
        },
        "one-missing": {"run_check": True, "prometheus_local_package_versions": {"prometheus": PINNED}},
        "no-version-at-all": {
            "tasks_file": "packages.yml",
            "ansible_python_interpreter": "/usr/bin/python3",  # the apt module's python-apt
            "prometheus_local_package_versions": {"absent": PINNED},
        },
    }
    result = run(str(tmp_path / "play.yml"), _inventory(tmp_path, hosts), check=True, extra_env=env)
    said = " ".join(result.output.split())
    assert result.returncode != 0 and all(result.recap()[h]["failed"] == 1 for h in hosts), result.output[
        -3000:
    ]
    assert 'bad-version: prometheus_local_package_versions is {"prometheus": "latest"' in said, said[-3000:]
    assert 'one-missing: prometheus_local_package_versions is {"prometheus": "1.0-1"}' in said
    assert "for prometheus and for prometheus-node-exporter, and nothing else" in said
    assert "no-version-at-all: apt on Debian 12" in said and "has no version at all of absent" in said
    assert "enable the archive area that carries it in apt's sources" in said

    # A host without apt (what its facts say on a RedHat-like one; this machine's say apt), checked
    # before anything changes: the role's first check, also run by the preflight role.
    no_apt = _inventory(tmp_path, {"no-apt": {"run_check": True, "prometheus_local_package_versions": good}})
    result = run(
        str(tmp_path / "play.yml"),
        no_apt,
        check=True,
        extra_env=env,
        extra_vars={"prometheus_local_pkg_mgr": "dnf"},
    )
    said = " ".join(result.output.split())
    assert result.returncode != 0 and result.recap()["no-apt"]["failed"] == 1, result.output[-3000:]
    assert "no-apt: Debian 12" in said and "installs packages with dnf, not apt;" in said, said[-3000:]
    assert "run the local platform on Debian hosts (tested: Debian 12 (bookworm), Debian 13 (trixie))" in said
