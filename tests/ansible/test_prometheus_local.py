"""roles/prometheus_local for real on this machine (playbooks/prometheus_local.yml, as site.yml runs it
on the local platform): Debian's prometheus and node exporter (installed by scripts/install-system-deps.sh,
so the role's apt step finds them at the pinned versions) run as pidfile processes on free ports;
Prometheus answers at the plan's URL and scrapes the node exporter and a Ray-style metrics endpoint
(job `ray`, label `host`); a second run changes nothing; a changed config is reloaded by the handler
(same process, new scrape interval); the `process` role stops both.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from helpers import REPO_ROOT, local_head_inventory
from helpers import run_playbook as run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prometheus"))
from fixtures_http import serving_text

from distinfer.serve.local_ray import free_ports

PLAYBOOK = str(REPO_ROOT / "playbooks" / "prometheus_local.yml")
RAY_STYLE = (
    '# TYPE ray_serve_num_http_requests_total counter\nray_serve_num_http_requests_total{application="x"} 3\n'
)


def _inventory(tmp_path: Path, ports: dict[str, int], interval: int) -> Path:
    url = f"http://127.0.0.1:{ports['prometheus']}"
    cluster_vars: dict[str, Any] = {
        "distinfer_platform": "local",
        "prometheus_local_state_dir": str(tmp_path / "state"),
        "prometheus_local_supervisor": "process",
        "prometheus_local_node_exporter_port": ports["node"],
        "prometheus_local_scrape_interval_s": interval,
        "ray_local_ports": {"metrics_export": ports["ray"]},
        # What the preflight role's plan says (the part the role reads).
        "distinfer_plan": {"head": "local", "prometheus_port": ports["prometheus"], "prometheus_url": url},
    }
    return local_head_inventory(tmp_path / f"inv-{interval}", cluster_vars)


def _pid(tmp_path: Path, name: str) -> int:
    return int(json.loads((tmp_path / "state" / f"{name}.json").read_text())["pid"])


def _targets_up(url: str, jobs: set[str], timeout_s: float = 60) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        active = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        found = {t["labels"]["job"]: t for t in active if t["health"] == "up"}
        if jobs <= set(found):
            return found
        time.sleep(1)
    raise AssertionError(f"targets up: {sorted(found)}, wanted {sorted(jobs)}")


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_role_runs_prometheus_and_the_node_exporter_once_reloads_and_stops(tmp_path: Path) -> None:
    prometheus_port, node_port = free_ports(2)
    with serving_text(RAY_STYLE) as ray_port:
        ports = {"prometheus": prometheus_port, "node": node_port, "ray": ray_port}
        url = f"http://127.0.0.1:{prometheus_port}"
        inventory = _inventory(tmp_path, ports, interval=2)
        try:
            first = run(PLAYBOOK, inventory, timeout=300)
            assert first.returncode == 0 and first.total_changed() >= 2, first.output[-3000:]
            assert f"Prometheus: {url}" in first.output
            up = _targets_up(url, {"ray", "node"})
            assert up["ray"]["labels"]["host"] == up["node"]["labels"]["host"] == "local"
            query = {"query": "ray_serve_num_http_requests_total"}
            data = httpx.get(f"{url}/api/v1/query", params=query, timeout=10).json()["data"]["result"]
            assert data and data[0]["metric"]["host"] == "local" and data[0]["value"][1] == "3"
            second = run(PLAYBOOK, inventory, timeout=300)
            assert second.returncode == 0 and second.total_changed() == 0, second.output[-3000:]

            pid = _pid(tmp_path, "distinfer-prometheus")
            third = run(PLAYBOOK, _inventory(tmp_path, ports, interval=3), timeout=300)
            assert third.returncode == 0, third.output[-3000:]
            assert "RUNNING HANDLER [prometheus_local : Prometheus local | Reload the config]" in third.output
            config = httpx.get(f"{url}/api/v1/status/config", timeout=10).json()["data"]["yaml"]
            assert "scrape_interval: 3s" in config
            assert _pid(tmp_path, "distinfer-prometheus") == pid  # reloaded, not restarted
        finally:
            stopper = tmp_path / "stop.yml"
            stopper.write_text(PROCESS_PLAY)
            for name in ("distinfer-prometheus", "distinfer-node-exporter"):
                stop = run(str(stopper), inventory, extra_vars=_stop_vars(name, tmp_path), timeout=120)
                assert stop.returncode == 0, stop.output[-3000:]
        assert _closed(prometheus_port) and _closed(node_port)


PROCESS_PLAY = """
- name: Stop one process the role started
  hosts: ray_cluster
  gather_facts: false
  tasks:
    - name: Stop it
      ansible.builtin.include_role: {name: process}
"""


def _stop_vars(name: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "process_name": name,
        "process_state": "stopped",
        "process_dir": str(tmp_path / "state"),
        "process_supervisor": "process",
    }
