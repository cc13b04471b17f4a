"""Look for a secret everywhere a run leaves text: the controller's folders (playbook logs, results,
reports) and, on every test host, distinfer's state, Ray's session logs and the systemd journal."""

from __future__ import annotations

import shlex
from pathlib import Path

from testhosts import TestHosts

# On the hosts: where the roles and Ray write, and the journal (the units' output).
HOST_PLACES = ("/var/lib/distinfer", "/tmp/di-ray", "/opt/distinfer")
# The files that are meant to hold a secret (0600, never printed).
SECRET_FILES = ("api_key", "auth_token")


def places_holding(secret: str, hosts: TestHosts, folders: list[Path]) -> list[str]:
    """Every file (or journal) that contains `secret`, as `host:path`; empty when it leaked nowhere."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(f"controller:{path}")
    quoted = shlex.quote(secret)
    excludes = " ".join(f"--exclude={name}" for name in SECRET_FILES)
    for host in hosts.hosts:
        command = (
            f"grep -rlF {excludes} -e {quoted} {' '.join(HOST_PLACES)} 2>/dev/null; "
            f"journalctl --no-pager -q 2>/dev/null | grep -qF -e {quoted} && echo journal; true"
        )
        out = hosts.ssh(host.name, command, timeout=120, check=False).stdout
        found += [f"{host.name}:{line}" for line in out.splitlines() if line.strip()]
    return found


def secret_file_modes(hosts: TestHosts, path: str) -> dict[str, str]:
    """The octal mode of `path` on every host that has it."""
    modes = {}
    for host in hosts.hosts:
        out = hosts.ssh(host.name, f"stat -c %a {shlex.quote(path)} 2>/dev/null || true", check=False).stdout
        if out.strip():
            modes[host.name] = out.strip()
    return modes
