"""Run a real `ansible-playbook` from the repo root and read its PLAY RECAP per host.

Used by the idempotency gates (a second run must report `changed=0` on every host) and the check-mode
tests. The stdout callback is forced to the default one so the recap format is the one parsed here,
whatever ansible.cfg enables on top; the whole output is kept in a log file for debugging.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testhosts import REPO_ROOT

# The repo's real cluster inventory, put on the test hosts by the conftest fixtures.
POWEREDGE_INVENTORY = REPO_ROOT / "inventory" / "poweredge"
PREREQ_PLAYBOOK = REPO_ROOT / "playbooks" / "prereq.yml"
# What differs on a test host from the servers inventory/poweredge describes.
TEST_HOST_VARS = {"distinfer_node_iface": "eth0"}

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


@dataclasses.dataclass(frozen=True)
class HostRecap:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclasses.dataclass(frozen=True)
class PlaybookRun:
    argv: list[str]
    returncode: int
    output: str
    recap: dict[str, HostRecap]
    duration_s: float
    log: Path | None

    def changed(self) -> dict[str, int]:
        return {host: r.changed for host, r in self.recap.items()}

    def failed_hosts(self) -> list[str]:
        return [host for host, r in self.recap.items() if r.failed or r.unreachable]

    def describe(self, tail_lines: int = 60) -> str:
        """For assertion messages: the command, where the log is, and the end of the output."""
        tail = "\n".join(self.output.splitlines()[-tail_lines:])
        return f"`{' '.join(self.argv)}` exit {self.returncode} (full log: {self.log})\n{tail}"


def parse_recap(output: str) -> dict[str, HostRecap]:
    """Per-host counts from the last PLAY RECAP in `ansible-playbook` output."""
    start = output.rfind("PLAY RECAP")
    if start < 0:
        return {}
    recap = {}
    for line in output[start:].splitlines()[1:]:
        match = RECAP_LINE.match(line.strip())
        if not match:
            continue
        counts = dict(pair.split("=") for pair in match["counts"].split())
        known = {f.name for f in dataclasses.fields(HostRecap)}
        recap[match["host"]] = HostRecap(**{k: int(v) for k, v in counts.items() if k in known})
    return recap


_FACT_CACHE = Path(tempfile.mkdtemp(prefix="di-facts-"))
atexit.register(shutil.rmtree, _FACT_CACHE, ignore_errors=True)


def ansible_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The venv's ansible first on PATH; a private fact cache, so the test hosts' facts (under the real
    inventory's host names) never land in the repo's .cache/ansible/facts for later real runs."""
    venv_bin = REPO_ROOT / ".venv" / "bin"
    return {
        **os.environ,
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(_FACT_CACHE),
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        **(extra or {}),
    }


def run_playbook(
    playbook: Path | str,
    inventory: Path | str | Sequence[Path | str],
    *,
    check: bool = False,
    diff: bool = False,
    extra_vars: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    skip_tags: Sequence[str] = (),
    limit: str | None = None,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> PlaybookRun:
    """Run `ansible-playbook` from the repo root (so its ansible.cfg and roles apply).

    Several inventories merge in order (a later one overrides a host's vars), e.g. the repo's
    `inventory/poweredge` plus a file pointing its hosts at test hosts.
    """
    sources = [inventory] if isinstance(inventory, (str, Path)) else list(inventory)
    argv = ["ansible-playbook", *[arg for src in sources for arg in ("-i", str(src))], str(playbook)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars))]
    if tags:
        argv += ["--tags", ",".join(tags)]
    if skip_tags:
        argv += ["--skip-tags", ",".join(skip_tags)]
    if limit:
        argv += ["--limit", limit]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=ansible_env(env),
        stdin=subprocess.DEVNULL,  # a playbook that prompts (reset.yml) must not wait for a terminal
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout)
    return PlaybookRun(
        argv=argv,
        returncode=proc.returncode,
        output=proc.stdout,
        recap=parse_recap(proc.stdout),
        duration_s=time.monotonic() - started,
        log=log,
    )


def inventory_hosts(inventory: Path, env: dict[str, str]) -> list[str]:
    """The inventory's hosts in the order it lists them (`ansible-inventory --list` sorts them)."""
    proc = subprocess.run(
        ["ansible", "-i", str(inventory), "all", "--list-hosts"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # "  hosts (3):" then one indented name per line
    return [line.strip() for line in proc.stdout.splitlines()[1:] if line.strip()]
