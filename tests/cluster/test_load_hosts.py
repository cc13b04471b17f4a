"""Load from two load hosts with Locust's distributed mode (issue 24, part 1), on three test hosts of
its own: node1 serves (the local platform's Ray head with the synthetic engine, as
`test_local_platform.py`), node2 and node3 are the inventory group `loadgen`. One `site.yml` run, two
short scenarios:

1. `two-hosts`: the Locust master on this machine, one worker on each load host (Locust's own client
   ids name them); both hosts' records are fetched and merged, and the summary's TTFT and E2E
   percentiles are recomputed here from the hosts' raw records (each on its own clock, moved by its
   stated offset); each load host has its own certificate (`distinfer bench certify` run there) and
   its own guard (CPU, event-loop lag), and the report states per host the events/s it carried, its
   lag and its verdict;
2. `host-lost`: node3's machine is stopped (its container, `podman stop`) a few seconds into the load:
   the master notices by Locust's heartbeats, the run records which host, when and with how many users
   and requests, keeps node2's records, names node3's as lost, and marks the scenario INVALID.

The hosts mount this worktree and its venv read-only at the same path (testhosts.py), so the role's
environment check finds it there and installs nothing (its pip step is not exercised here).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_local_platform import MODELS, scenarios, site, write_inventory
from testhosts import TestHosts, prune_stale_runs

pytestmark = pytest.mark.cluster

RUN = "lh"
LOAD_HOSTS = ["node2", "node3"]
HOST_DIR = "/var/lib/distinfer/loadgen"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    prune_stale_runs()
    with TestHosts(["node1", *LOAD_HOSTS], tmp_path_factory.mktemp("loadhosts-th")) as th:
        yield th


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loadhosts")
    (path / "models.yaml").write_text(yaml.safe_dump(MODELS, sort_keys=False))
    return path


def inventory_with_loadgen(hosts: TestHosts, workdir: Path) -> Path:
    """The local platform's inventory (node1 alone serves) plus the group loadgen: node2, node3."""
    path = write_inventory(
        hosts,
        workdir,
        ["node1"],
        distinfer_run_id=RUN,
        distinfer_scenarios=scenarios(
            [
                {"name": "two-hosts", "users_per_replica": 4},
                {"name": "host-lost", "users_per_replica": 4, "duration_s": 12},
            ],
            duration_s=10,
            warmup_s=2,
            max_tokens=16,
        ),
    )
    data = yaml.safe_load(path.read_text())
    for name in LOAD_HOSTS:
        data["all"]["hosts"][name] = hosts.inventory_host_vars(name)
    data["all"]["children"]["loadgen"] = {"hosts": {name: None for name in LOAD_HOSTS}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stop_node3_mid_run(hosts: TestHosts, state: dict[str, Any]) -> None:
    """Once node3 has written records of `host-lost`, wait 2 s and stop its machine."""
    records = f"{HOST_DIR}/{RUN}/scenarios/host-lost/records.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        seen = hosts.exec("node3", "sh", "-c", f"test -s {records} && echo yes", check=False)
        if seen.stdout.strip() == "yes":
            time.sleep(2)
            state["stopped_at"] = time.time()
            hosts.power_off("node3")
            return
        time.sleep(1)


def scenario(workdir: Path, name: str) -> Path:
    return workdir / "results" / RUN / "scenarios" / name


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def percentiles(values: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return float(p50), float(p99)


def test_two_load_hosts_merged_certified_and_one_lost(hosts: TestHosts, workdir: Path) -> None:
    inventory = inventory_with_loadgen(hosts, workdir)
    state: dict[str, Any] = {}
    stopper = threading.Thread(target=stop_node3_mid_run, args=(hosts, state), daemon=True)
    stopper.start()
    run = site(inventory, workdir, "loadgen")
    stopper.join(timeout=5)
    said = " ".join(run.output.split())
    assert "load: Locust workers on node2, node3, master here" in said, run.log

    # 1. Both load hosts carried `two-hosts`: Locust's workers there (its client ids are hostname_uuid).
    folder = scenario(workdir, "two-hosts")
    loadgen = json.loads((folder / "loadgen.json").read_text())
    assert loadgen["hosts"] == LOAD_HOSTS and loadgen["losses"] == [], loadgen
    assert sorted(w["client_id"].split("_")[0] for w in loadgen["workers"]) == LOAD_HOSTS, loadgen
    assert sum(w["users"] for w in loadgen["workers"]) == 4 and all(w["done"] for w in loadgen["workers"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["completed"] > 0 and summary["metrics"]["failed"] == 0, summary["metrics"]
    # Nothing lost; a busy machine may still make a host's guard fail it (its loop lag), by name.
    assert all(r.startswith("load host node") for r in summary["invalid_reasons"]), summary["invalid_reasons"]
    assert not any("was lost" in r for r in summary["invalid_reasons"])
    merged = lines(folder / "records.jsonl")
    by_host = {h: lines(folder / "hosts" / h / "records.jsonl") for h in LOAD_HOSTS}
    assert all(by_host.values()) and len(merged) == sum(len(r) for r in by_host.values())
    assert sorted({r["load_host"] for r in merged}) == LOAD_HOSTS
    assert len({r["request_id"] for r in merged}) == len(merged)  # worker indexes unique across hosts

    # The summary's percentiles, recomputed from every host's raw records (each on its own clock,
    # moved onto the controller's by its stated offset; TTFT and E2E are differences on one clock).
    metrics = summary["metrics"]
    w0, w1 = metrics["window_start"], metrics["window_end"]
    offsets = {h["host"]: h["start_offset_ms"] / 1000.0 for h in summary["load_hosts"]}
    good = [
        r
        for host, records in by_host.items()
        for r in records
        if r["ok"] and w0 <= r["scheduled"] + offsets[host] < w1
    ]
    assert len(good) == metrics["completed"] > 0
    assert {r["load_host"] for r in good} == set(LOAD_HOSTS)  # the window holds both hosts' requests
    ttft = percentiles([(r["first_token"] - r["sent"]) * 1000.0 for r in good])
    e2el = percentiles([(r["end"] - r["sent"]) * 1000.0 for r in good])
    assert ttft == pytest.approx((metrics["ttft_ms"]["p50"], metrics["ttft_ms"]["p99"]), rel=1e-9)
    assert e2el == pytest.approx((metrics["e2el_ms"]["p50"], metrics["e2el_ms"]["p99"]), rel=1e-9)

    # Each load host: its own guard and its own certificate, stated in the report.
    for host in summary["load_hosts"]:
        assert host["records_fetched"] and host["lost"] is None, host
        assert host["valid"] == (not host["reasons"]), host  # its own guard's verdict, with its reasons
        assert host["events_per_s"] > 0 and host["client"]["loop_lag_ms_p99"] is not None, host
        assert host["client"]["workers_reporting"] == host["workers"] >= 1, host
    for name in LOAD_HOSTS:
        cert = json.loads(
            (workdir / "results" / RUN / "certificates" / name / "certificate.json").read_text()
        )
        assert cert["fidelity"]["requests"] > 0, cert
    report = (workdir / "results" / RUN / "report" / "report.md").read_text()
    section = report[report.index("### Load hosts") :]
    for name in LOAD_HOSTS:
        assert f"**{name}**: Load-generator fidelity: self-test at" in section
        assert f"| two-hosts | {name} | 1 | 2 |" in section, section[:3000]

    # 2. node3 stopped mid-run: recorded (which host, when, with what), node2's records kept.
    assert "stopped_at" in state, "node3 was never stopped (no records of host-lost appeared on it)"
    folder = scenario(workdir, "host-lost")
    loadgen = json.loads((folder / "loadgen.json").read_text())
    [loss] = loadgen["losses"]
    assert loss["host"] == "node3" and loss["users"] == 2 and loss["requests_reported"] >= 0, loss
    assert 0 < loss["at"] - state["stopped_at"] < 15, (loss, state)  # Locust's heartbeats: ~3-4 s
    summary = json.loads((folder / "summary.json").read_text())
    assert not summary["valid"]
    lost = [r for r in summary["invalid_reasons"] if r.startswith("load host node3 was lost")]
    assert lost and "its records could not be fetched" in lost[0], summary["invalid_reasons"]
    results = {h["host"]: h for h in summary["load_hosts"]}
    assert results["node3"]["lost"]["host"] == "node3" and not results["node3"]["records_fetched"]
    assert results["node2"]["records_fetched"] and results["node2"]["records"] > 0
    assert {r["load_host"] for r in lines(folder / "records.jsonl")} == {"node2"}
    assert "| host-lost | node3 |" in section and "LOST " in section
    (workdir / "durations.txt").write_text(f"site.yml {run.duration_s:.1f} s\n")
