"""prereq applied for real to the three test hosts, then again: the second run changes nothing.
Then playbooks/reset.yml: without confirmation it stops before any change; with `-e confirm=yes` it
removes what prereq wrote (and the fetched kubeconfig), and prereq restores the hosts.

The repo's own inventory/poweredge is used unchanged (groups, group_vars); only its hosts' connection
vars point at the test hosts. What a container cannot do (sysctls, kernel modules) the role skips by
the facts (virtualization_type podman, role guest); everything else it does for real.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from playbook_runs import (
    POWEREDGE_INVENTORY,
    PREREQ_PLAYBOOK,
    PlaybookRun,
    ansible_env,
    parse_recap,
    run_playbook,
)
from testhosts import REPO_ROOT

RESET_PLAYBOOK = REPO_ROOT / "playbooks" / "reset.yml"

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not (PREREQ_PLAYBOOK.exists() and POWEREDGE_INVENTORY.exists()),
        reason="playbooks/prereq.yml or inventory/poweredge not in the tree yet (issue 4)",
    ),
]


def test_prereq_applies_for_real_then_changes_nothing(
    prereq_first_run: PlaybookRun, poweredge_on_test_hosts: list[Path], tmp_path: Path
) -> None:
    first = prereq_first_run
    assert first.returncode == 0, first.describe()
    assert first.recap and not first.failed_hosts(), first.describe()
    # Fresh minimal Debian hosts: the first run must have done real work, not skipped everything.
    assert sum(first.changed().values()) > 0, first.describe()

    second = run_playbook(PREREQ_PLAYBOOK, poweredge_on_test_hosts, log=tmp_path / "second.log")
    assert second.returncode == 0, second.describe()
    assert set(second.recap) == set(first.recap)
    assert second.changed() == dict.fromkeys(second.recap, 0), second.describe()


def _reset(inventory: list[Path], **extra_vars: str) -> PlaybookRun:
    """playbooks/reset.yml with stdin closed, as in CI: its confirmation prompt gets no answer."""
    argv = ["ansible-playbook", *[arg for src in inventory for arg in ("-i", str(src))], str(RESET_PLAYBOOK)]
    argv += ["-e", json.dumps(extra_vars)]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=ansible_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    duration = time.monotonic() - started
    return PlaybookRun(argv, proc.returncode, proc.stdout, parse_recap(proc.stdout), duration, None)


def test_reset_asks_first_then_removes_what_prereq_wrote(
    prereq_first_run: PlaybookRun, poweredge_on_test_hosts: list[Path], tmp_path: Path
) -> None:
    assert prereq_first_run.returncode == 0, prereq_first_run.describe()
    kubeconfig = tmp_path / "distinfer.yaml"  # stands in for the fetched kubeconfig on this machine
    kubeconfig.write_text("placeholder\n")
    guard = {"k3s_server_kubeconfig_dest": str(kubeconfig)}

    unconfirmed = _reset(poweredge_on_test_hosts, **guard)
    assert unconfirmed.returncode != 0, unconfirmed.describe()
    assert "reset not confirmed" in unconfirmed.output, unconfirmed.describe()
    assert sum(unconfirmed.changed().values()) == 0, unconfirmed.describe()
    assert kubeconfig.exists()
    untouched = run_playbook(PREREQ_PLAYBOOK, poweredge_on_test_hosts, check=True)
    assert untouched.returncode == 0 and sum(untouched.changed().values()) == 0, untouched.describe()

    confirmed = _reset(poweredge_on_test_hosts, confirm="yes", **guard)
    assert confirmed.returncode == 0, confirmed.describe()
    hosts = set(prereq_first_run.recap)
    assert all(confirmed.changed()[host] > 0 for host in hosts), confirmed.describe()
    assert not kubeconfig.exists()
    # What prereq wrote (the sysctl file) is gone: prereq would write it again on every host.
    removed = run_playbook(PREREQ_PLAYBOOK, poweredge_on_test_hosts, check=True)
    assert removed.returncode == 0, removed.describe()
    assert all(removed.changed()[host] > 0 for host in hosts), removed.describe()

    # Leave the hosts prepared, as the session's other tests expect them.
    restored = run_playbook(PREREQ_PLAYBOOK, poweredge_on_test_hosts)
    assert restored.returncode == 0 and not restored.failed_hosts(), restored.describe()
