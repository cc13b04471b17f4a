"""Read a test-host Ray cluster's state the way an operator would: `ray list ... --format json` on
the head, through SSH (Ray's state API, not our own config)."""

from __future__ import annotations

import json
from typing import Any

from testhosts import REPO_ROOT, TestHosts

DASHBOARD_PORT = 24265  # roles/ray_local/defaults/main.yml ray_local_ports.dashboard
RAY_BIN = REPO_ROOT / ".venv" / "bin" / "ray"
RAY_ENV = "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/var/lib/distinfer/ray/auth_token"


def ray_json(hosts: TestHosts, head: str, *args: str) -> list[dict[str, Any]]:
    """`ray list <args>` on the head, as JSON."""
    address = hosts.host(head).ip
    command = (
        f"{RAY_ENV} {RAY_BIN} list {' '.join(args)} --address http://{address}:{DASHBOARD_PORT}"
        " --format json --limit 1000"
    )
    out = hosts.ssh(head, command, timeout=180).stdout
    return json.loads(out[out.index("[") :])


def node_names(hosts: TestHosts, head: str) -> dict[str, str]:
    """Ray node id -> test host name, for the nodes alive now."""
    ip_to_name = {h.ip: h.name for h in hosts.hosts}
    return {
        n["node_id"]: ip_to_name.get(n["node_ip"], n["node_ip"])
        for n in ray_json(hosts, head, "nodes", "--filter", "state=ALIVE")
    }
