"""Read a test-host Ray cluster's state the way an operator's `ray list ... --format json` does: Ray's
state API on the head's dashboard (`/api/v0/<resource>`, the CLI's own endpoint: the same filters,
the same JSON), with the cluster's auth token (Ray's state, not our own config). Asked from this
machine: the CLI on the head imported Ray per call, 3-4 s of a busy 2-core machine each."""

from __future__ import annotations

from typing import Any

import httpx
from testhosts import TestHosts

DASHBOARD_PORT = 24265  # roles/ray_local/defaults/main.yml ray_local_ports.dashboard
TOKEN_FILE = "/var/lib/distinfer/ray/auth_token"  # roles/ray_local: ray_local_token_file


def ray_json(hosts: TestHosts, head: str, resource: str, *args: str) -> list[dict[str, Any]]:
    """What `ray list <resource> <args>` (`--filter key=value`, `--detail`) prints as JSON."""
    params: dict[str, Any] = {"limit": 1000, "filter_keys": [], "filter_predicates": [], "filter_values": []}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--detail":
            params["detail"] = "true"
        elif arg == "--filter":
            key, predicate, value = rest.pop(0).partition("=")
            params["filter_keys"].append(key)
            params["filter_predicates"].append(predicate)
            params["filter_values"].append(value)
        else:
            raise ValueError(f"ray_json: {arg!r} is not an option it knows")
    token = hosts.ssh(head, f"cat {TOKEN_FILE}").stdout.strip()
    answer = httpx.get(
        f"http://{hosts.host(head).ip}:{DASHBOARD_PORT}/api/v0/{resource.replace('-', '_')}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=180,
    )
    answer.raise_for_status()
    body = answer.json()
    assert body["result"], f"Ray's state API failed: {body.get('msg')}"
    # Like the CLI (raise_on_missing_output=False): a partial answer is what there is, not an error.
    listed = body["data"]["result"]
    return list(listed["result"])


def node_names(hosts: TestHosts, head: str) -> dict[str, str]:
    """Ray node id -> test host name, for the nodes alive now."""
    ip_to_name = {h.ip: h.name for h in hosts.hosts}
    return {
        n["node_id"]: ip_to_name.get(n["node_ip"], n["node_ip"])
        for n in ray_json(hosts, head, "nodes", "--filter", "state=ALIVE")
    }
