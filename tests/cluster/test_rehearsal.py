"""The GPU-server path as shipped: `site.yml` on `inventory/poweredge`, rehearsed on four test hosts.

The shipped inventory is used exactly as it is (groups, GPU counts, versions, models file, the guide's
scenarios file, secrets read from the environment), with three layers on top (docs/rehearsal.md):

- the addresses: each PowerEdge host pointed at a test host (SSH user, key, known_hosts, the NIC name);
- `files/rehearsal/layer.yml`, as shipped: the rehearsal switch (cluster plays in check mode, Ray on the
  hosts standing in for the RayService, vLLM replaced by the synthetic engine with its placement kept);
- what this machine needs (extra vars): the hosts have no internet, so K3s and Helm come from air-gap
  placeholders (check mode compares them, never copies or runs them); results under the test's folder;
  two of the guide's eight scenarios, 10 s each with 16 output tokens (the full matrix is 80 minutes).

The tests run in order and share the hosts:
1. site.yml with three hosts: every play runs (none matches zero hosts); preflight and prereq for real;
   K3s, add-ons and the RayService in check mode (the K3s config diff comes from the inventory, the join
   token never shows); the stand-in serves the rendered serveConfigV2 at the NodePort's address with the
   API key the environment gave; the benchmark, node metrics and report for real, with a node row per
   host that served each scenario; the TP4 model's 4 replicas each hold 4 GPU bundles on one node (Ray's
   state API); the guide's one-node scenario (bs32-1node-1replica: xe8545) and two-node scenario
   (bs32-2nodes-2replicas: xe9680, xe8545) have their replicas only on those hosts while their load
   runs (Ray's state API), as their placement.json records;
2. a fourth host (4 GPUs) added to the inventory: 5 replicas, the first 4 placement groups unchanged;
3. playbooks/upgrade.yml on the same hosts: every play runs, agents one at a time;
4. the Ray head's machine stopped mid-scenario: the benchmark ends cleanly, records kept, and says so.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from leaks import places_holding, secret_file_modes
from playbook_runs import POWEREDGE_INVENTORY, REPO_ROOT, PlaybookRun, run_playbook
from raystate import node_names, ray_json
from testhosts import TestHosts

from distinfer.config import HOST_LABEL

pytestmark = pytest.mark.cluster

SITE = REPO_ROOT / "site.yml"
UPGRADE = REPO_ROOT / "playbooks" / "upgrade.yml"
LAYER = REPO_ROOT / "files" / "rehearsal" / "layer.yml"
HOSTS = ("node1", "node2", "node3", "node4")
MAPPING = {"xe9680": "node1", "xe8545": "node2", "r760xa": "node3"}
ADDED = {"name": "r760xa-2", "host": "node4", "gpus": 4, "model": "h100-pcie-80gb"}
SCENARIOS = ["bs32-1node-1replica", "bs32-2nodes-2replicas"]
MODEL = "meta-llama/Llama-2-70b-chat-hf"
NODE_PORT = 30800
API_KEY = "dk-" + secrets.token_hex(16)
# A Hugging Face token as the shipped secrets.yml reads it (it goes only into the RayService's Secret).
HF_TOKEN = "hf_" + secrets.token_hex(16)
AIRGAP_FILES = ("k3s", "install.sh", "k3s-airgap-images-amd64.tar.zst")
PLAYS = [
    "Preflight",
    "Prepare the operating system",
    "Install K3s servers",
    "Install K3s agents",
    "Label the K3s nodes",
    "Install the cluster add-ons",
    "Install kube-prometheus-stack, the monitors and the dashboards",
    "Deploy the RayService",
    "Ray on the hosts and the Serve app",
    "Prometheus on the hosts",
    "Benchmark",
]
PROMETHEUS_NODE_PORT = 30090  # kube-prometheus-stack's NodePort, where the stand-in listens


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Four test hosts of this module's own (the fourth joins in the second test)."""
    workdir = tmp_path_factory.mktemp("rehearsal")
    with TestHosts(HOSTS, workdir / "hosts") as hosts:
        yield {"hosts": hosts, "workdir": workdir}
        for host in hosts.hosts:  # stop what the roles started (only their units), also after a failure
            command = (
                "systemctl stop --no-block distinfer-ray.service distinfer-nodemetrics.service"
                " distinfer-prometheus.service distinfer-node-exporter.service || true"
            )
            hosts.ssh(host.name, command, check=False, timeout=60)


def address_layer(hosts: TestHosts, path: Path, added: bool) -> Path:
    """Each PowerEdge host pointed at a test host; with `added`, one more K3s agent with 4 GPUs."""
    host_vars = {"distinfer_node_iface": "eth0"}  # the test hosts' NIC, in place of ens1f0np0
    mapped = {name: {**hosts.inventory_host_vars(th), **host_vars} for name, th in MAPPING.items()}
    layer: dict[str, Any] = {"all": {"hosts": mapped}}
    if added:
        agent = {
            **hosts.inventory_host_vars(ADDED["host"]),
            **host_vars,
            "distinfer_gpu_count": ADDED["gpus"],
            "distinfer_gpu_vendor": "nvidia",
            "distinfer_gpu_model": ADDED["model"],
        }
        layer["all"]["children"] = {
            "k3s_cluster": {"children": {"k3s_agent": {"hosts": {ADDED["name"]: agent}}}}
        }
    path.write_text(yaml.safe_dump(layer, sort_keys=False))
    return path


def machine_vars(workdir: Path) -> dict[str, Any]:
    """What this machine needs: air-gap placeholders (no internet on the hosts), a private results
    folder and kubeconfig path, and a short selection of the guide's scenarios."""
    airgap = workdir / "airgap"
    airgap.mkdir(exist_ok=True)
    for name in AIRGAP_FILES:
        (airgap / name).write_text(f"placeholder {name}: check mode compares it, never copies or runs it\n")
    (airgap / "helm.tar.gz").write_text("placeholder helm tarball\n")
    return {
        "k3s_server_airgap_dir": str(airgap),
        "k3s_agent_airgap_dir": str(airgap),
        "helm_archive": str(airgap / "helm.tar.gz"),
        "k3s_server_kubeconfig_dest": str(workdir / "kubeconfig.yaml"),
        "distinfer_results_dir": str(workdir / "results"),
        "distinfer_run_id": "rehearsal",
        "distinfer_scenarios_only": SCENARIOS,
        "distinfer_scenario_overrides": {"duration_s": 10, "warmup_s": 3, "max_tokens": 16},
        # Ray gives up on a lost node in seconds, not up to a minute (the last test stops the head).
        "ray_local_extra_env": {
            "RAY_health_check_initial_delay_ms": "1000",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        },
    }


def play(
    playbook: Path, state: dict[str, Any], label: str, *, added: bool = False, **kwargs: Any
) -> PlaybookRun:
    hosts: TestHosts = state["hosts"]
    workdir: Path = state["workdir"]
    layers = [POWEREDGE_INVENTORY, address_layer(hosts, workdir / f"addresses-{label}.yml", added), LAYER]
    run = run_playbook(
        playbook,
        layers,
        diff=True,
        extra_vars=machine_vars(workdir),
        env={"DISTINFER_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN},
        log=workdir / "logs" / f"{label}.log",
        timeout=2400,
        **kwargs,
    )
    assert run.returncode == 0, run.describe()
    assert not run.failed_hosts(), run.describe()
    return run


def replicas_planned(run: PlaybookRun) -> int:
    """The replicas of the model preflight's plan shows."""
    found = re.search(r"replicas per model: \{'meta-llama/Llama-2-70b-chat-hf': (\d+)\}", run.output)
    return int(found[1]) if found else -1


def play_headers(run: PlaybookRun) -> list[str]:
    """Every PLAY header of the log (a serial play prints one per batch of hosts)."""
    assert "no hosts matched" not in run.output, run.describe()
    return re.findall(r"^PLAY \[(.+?)\] \*+$", run.output, re.M)


def plays_run(run: PlaybookRun) -> list[str]:
    """The plays that ran, in order, each once."""
    return list(dict.fromkeys(play_headers(run)))


def model_placement(hosts: TestHosts) -> dict[str, list[str]]:
    """Alive placement groups of the model's replicas: id -> the test host of each bundle (Ray's view)."""
    nodes = node_names(hosts, "node1")
    groups = ray_json(hosts, "node1", "placement-groups", "--detail", "--filter", "state=CREATED")
    return {
        group["placement_group_id"]: [nodes.get(b["node_id"], str(b["node_id"])) for b in group["bundles"]]
        for group in groups
        if "Llama-2-70b-chat-hf" in group.get("name", "")
    }


def watch_placement(
    hosts: TestHosts, results: Path, scenarios: list[str]
) -> tuple[dict[str, Any], threading.Event]:
    """A thread that, as each scenario's load begins (its records.jsonl appears), reads the model's
    placement groups from Ray's state API; the dict fills in as they run, the event stops it."""
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and len(seen) < len(scenarios):
            for name in scenarios:
                if name not in seen and (results / "scenarios" / name / "records.jsonl").exists():
                    try:
                        seen[name] = model_placement(hosts)
                    except Exception as err:  # said by the test's assertion
                        seen[name] = repr(err)
            stop.wait(0.5)

    threading.Thread(target=watch, daemon=True).start()
    return seen, stop


def test_the_shipped_inventory_runs_every_play_and_benchmarks_the_stand_in(rehearsal: dict[str, Any]) -> None:
    hosts: TestHosts = rehearsal["hosts"]
    results = rehearsal["workdir"] / "results" / "rehearsal"
    live, stop_watching = watch_placement(hosts, results, SCENARIOS)
    try:
        run = play(SITE, rehearsal, "site")
    finally:
        stop_watching.set()
    assert plays_run(run) == PLAYS, run.describe()
    # Preflight's plan: the GPUs give 4 replicas of the TP4 model.
    assert replicas_planned(run) == 4, run.describe()
    _assert_k3s_config_from_inventory_and_token_hidden(run)
    assert "the RayService is not checked" in run.output  # check mode, no cluster: said, not skipped silently
    assert "CRDs, chart, monitors and dashboards are not checked" in run.output  # kube-prometheus-stack

    report = (results / "report" / "report.md").read_text()
    _assert_the_scenarios_ran_on_their_nodes(hosts, results, report, live)
    assert "Rehearsal: a synthetic engine stood in for the model" in report, "the report hides the stand-in"
    # The stand-in Prometheus answers where kube-prometheus-stack's NodePort would, and fed the report.
    prometheus = f"http://{hosts.host('node1').ip}:{PROMETHEUS_NODE_PORT}"
    assert f"From Prometheus at {prometheus}" in report, report
    active = httpx.get(f"{prometheus}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
    ray_up = sorted(
        t["labels"]["host"] for t in active if t["labels"]["job"] == "ray" and t["health"] == "up"
    )
    assert ray_up == sorted(MAPPING), active

    # The stand-in serves at the NodePort's address, with the key the environment gave.
    models = f"http://{hosts.host('node1').ip}:{NODE_PORT}/v1/models"
    assert httpx.get(models, timeout=30).status_code == 401
    answer = httpx.get(models, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert answer.status_code == 200 and [m["id"] for m in answer.json()["data"]] == [MODEL]
    assert answer.json()["data"][0]["engine"] == "synthetic (stand-in for vllm)"
    workdir: Path = rehearsal["workdir"]
    for secret in (API_KEY, HF_TOKEN):
        assert places_holding(secret, hosts, [workdir / "logs", workdir / "results"]) == []
    for path in ("/var/lib/distinfer/ray/api_key", "/var/lib/distinfer/ray/auth_token"):
        assert set(secret_file_modes(hosts, path).values()) == {"600"}, path

    # Tensor parallelism placed as the RayService would: 4 replicas, each one's 4 GPU bundles on one node.
    placement = model_placement(hosts)
    assert len(placement) == 4, placement
    assert all(len(bundles) == 4 and len(set(bundles)) == 1 for bundles in placement.values()), placement
    per_host = sorted(bundles[0] for bundles in placement.values())
    assert per_host == ["node1", "node1", "node2", "node3"], placement  # 8 + 4 + 4 GPUs
    rehearsal["placement"] = placement


def _assert_the_scenarios_ran_on_their_nodes(
    hosts: TestHosts, results: Path, report: str, live: dict[str, Any]
) -> None:
    """The guide's one-node and two-node scenarios (their `nodes:` in files/scenarios/guide.yaml, as
    shipped): while each one's load ran, every bundle of every replica's placement group was on a named
    host (Ray's state API, read by this test); placement.json says the same, its replicas' Ray nodes
    being the named hosts' test hosts by address; the report's node rows are the hosts that served."""
    guide = {
        s["name"]: s
        for s in yaml.safe_load((REPO_ROOT / "files/scenarios/guide.yaml").read_text())["scenarios"]
    }
    nodes = node_names(hosts, "node1")
    section = report[report.index("## Resource utilisation per node") :].split("\n## ")[0]
    for name in SCENARIOS:
        named = guide[name]["nodes"]
        allowed = {MAPPING[h] for h in named}
        groups = live.get(name)
        assert isinstance(groups, dict) and len(groups) == guide[name]["replicas"], (name, live)
        for bundles in groups.values():
            assert len(bundles) == 4 and len(set(bundles)) == 1 and bundles[0] in allowed, (name, groups)
        record = json.loads((results / "scenarios" / name / "placement.json").read_text())
        assert record["label"] == HOST_LABEL and record["named"] == named and record["outside"] == [], record
        assert len(record["replicas"]) == guide[name]["replicas"], record
        for replica in record["replicas"]:
            assert nodes[replica["node_id"]] == MAPPING[replica["host"]], (record, nodes)
            assert replica["bundle_hosts"] == [replica["host"]] * 4, record
        served = record["served"]
        assert served and set(served) <= set(named), record
        live_hosts = sorted({bundles[0] for bundles in groups.values()})
        assert sorted(MAPPING[h] for h in served) == live_hosts, (record, groups)
        rows = [line for line in section.splitlines() if line.startswith(f"| {name} | ")]
        assert sorted(line.split("|")[2].strip() for line in rows) == sorted(served), section
    (only,) = live["bs32-1node-1replica"].values()  # the one-node scenario: xe8545 (node2) alone
    assert only == ["node2"] * 4, live


def _assert_k3s_config_from_inventory_and_token_hidden(run: PlaybookRun) -> None:
    """The --diff shows each node's K3s config as YAML built from the inventory (flannel on the NIC the
    address layer names, agents pointed at the first server); the join token never shows."""
    assert "+flannel-iface: eth0" in run.output, run.describe()
    assert "+token-file: /etc/rancher/k3s/distinfer-token" in run.output, run.describe()
    assert re.search(r"^\+server: https://[0-9.]+:6443$", run.output, re.M), run.describe()
    token_tasks = re.findall(r"Write the join token\] \*+\n(.*?)\n\n", run.output, re.S)
    assert token_tasks, run.describe()
    for section in token_tasks:
        assert "changed:" in section and "+++" not in section, section


def test_a_host_added_to_the_inventory_adds_a_replica_and_moves_none(rehearsal: dict[str, Any]) -> None:
    before = rehearsal.get("placement")
    assert before, "the first rehearsal did not complete"
    run = play(SITE, rehearsal, "added", added=True, skip_tags=["benchmark"])
    assert replicas_planned(run) == 5, run.describe()
    after = model_placement(rehearsal["hosts"])
    assert len(after) == 5, after
    assert {pg: after.get(pg) for pg in before} == before, "a placed replica moved or was replaced"
    (new,) = set(after) - set(before)
    assert after[new] == ["node4"] * 4, after


def test_upgrade_runs_every_play_one_host_at_a_time(rehearsal: dict[str, Any]) -> None:
    assert rehearsal.get("placement"), "the first rehearsal did not complete"
    run = play(UPGRADE, rehearsal, "upgrade", added=True)
    assert plays_run(run) == [
        "Preflight",
        "Upgrade K3s servers one at a time",
        "Upgrade K3s agents one at a time",
        "Label the K3s nodes",
        "Install the cluster add-ons",
        "Install kube-prometheus-stack, the monitors and the dashboards",
        "Deploy the RayService",
    ], run.describe()
    # serial: 1 - one batch per agent (xe8545, r760xa, r760xa-2), each running the whole role.
    assert play_headers(run).count("Upgrade K3s agents one at a time") == 3, run.describe()
    assert run.output.count("TASK [k3s_agent : K3s agent | Read the installed K3s version]") == 3


def test_the_ray_head_lost_ends_the_benchmark_cleanly(rehearsal: dict[str, Any]) -> None:
    """xe9680's machine (the Ray head, and the NodePort's address) stops mid-scenario: the scenario's
    records and summary are kept, the report is written with what happened, the run halts with a
    message saying so (the next scenario never starts), and it stays resumable."""
    hosts: TestHosts = rehearsal["hosts"]
    workdir: Path = rehearsal["workdir"]
    assert rehearsal.get("placement"), "the first rehearsal did not complete"
    scenarios = {
        "defaults": {"max_tokens": 16, "warmup_s": 3, "timeout_s": 20, "drain_timeout_s": 20},
        "scenarios": [
            {"name": "head-lost", "users_per_replica": 4, "duration_s": 40},
            {"name": "never-run", "users_per_replica": 4, "duration_s": 10},
        ],
    }
    records = workdir / "results" / "head-lost" / "scenarios" / "head-lost" / "records.jsonl"
    outcome: dict[str, Any] = {}

    give_up = threading.Event()

    def power_off_the_head() -> None:
        deadline = time.monotonic() + 900
        while not records.exists() and time.monotonic() < deadline and not give_up.is_set():
            time.sleep(0.2)
        if records.exists() and not give_up.wait(8):
            hosts.power_off(MAPPING["xe9680"])
            outcome["at"] = time.time()

    stopper = threading.Thread(target=power_off_the_head, daemon=True)
    stopper.start()
    layers = [POWEREDGE_INVENTORY, address_layer(hosts, workdir / "addresses-head.yml", True), LAYER]
    run = run_playbook(
        SITE,
        layers,
        tags=["benchmark"],
        extra_vars={
            **machine_vars(workdir),
            "distinfer_run_id": "head-lost",
            "distinfer_scenarios": scenarios,
            "distinfer_scenarios_only": [],  # machine_vars picks guide scenarios this file does not have
            "loadtest_certify": False,  # the load generator's self-test ran in the first rehearsal
        },
        env={"DISTINFER_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN},
        log=workdir / "logs" / "head-lost.log",
        timeout=1500,
    )
    give_up.set()
    stopper.join(timeout=60)
    assert "at" in outcome, f"the head was never powered off\n{run.describe()}"
    assert run.returncode != 0, run.describe()
    assert re.search(r"The benchmark stopped: scenario head-lost: .*stopped answering at", run.output), (
        run.describe()
    )
    run_dir = workdir / "results" / "head-lost"
    kept = json.loads((run_dir / "scenarios" / "head-lost" / "summary.json").read_text())
    assert kept["metrics"]["completed"] > 0 and kept["availability"]["endpoint_lost_at_s"] is not None, kept
    assert not (run_dir / "scenarios" / "never-run").exists()
    assert (workdir / "results" / ".unfinished").read_text().strip() == "head-lost"  # resumable
    report = (run_dir / "report" / "report.md").read_text()
    assert "Faults during the load" in report and "did not come back" in report, report
