"""prereq applied for real to the three test hosts, then again: the second run changes nothing.

The repo's own inventory/poweredge is used unchanged (groups, group_vars); only its hosts' connection
vars point at the test hosts. What a container cannot do (sysctls, kernel modules) the role skips by
the facts (virtualization_type podman, role guest); everything else it does for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playbook_runs import POWEREDGE_INVENTORY, PREREQ_PLAYBOOK, PlaybookRun, run_playbook

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
