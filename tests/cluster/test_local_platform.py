"""`site.yml` with the `local` platform on three real test hosts (issue 5).

One Ray cluster spans the podman test hosts (systemd inside, reached over SSH); the Serve app runs a
synthetic model with one replica per host; the benchmark role drives load from this machine (the
controller), records every host's metrics and writes the report. The tests run in order and share the
cluster:

1. two hosts in the inventory: a cluster of two nodes, two replicas, one scenario;
2. the third host added, the same run id: the cluster grows by one node and one replica, the first two
   hosts' Ray nodes and Serve replicas keep running (nothing restarts), the report shows both
   scenarios;
3. the idempotency gate: `site.yml` again without the benchmark tag reports changed=0 on every host;
4. a fault: one replica's process killed by PID mid-scenario is recorded as errors in that scenario, the
   service recovers, the next scenario runs clean, and the finished scenarios keep their data;
5. Ctrl-C during a benchmark, then the same command: the run resumes where it stopped; its two
   scenarios name their hosts (one: node3 alone, two replicas; the other: node2 and node3, three
   replicas), and every replica runs there (Ray's state API), where Serve's spreading would have put
   them on other hosts without the scenario's label selector; the resumed run goes on to an autoscaling
   scenario (Serve autoscaling 1-3 replicas, a load step from 1 to 6 users): the replicas grow within the
   bounds, and the summary's scale-up time, seconds past the SLO and replica-seconds are the ones computed
   here from its replicas.jsonl (Serve's REST API, sampled by the benchmark) and records;
6. `playbooks/reset.yml`: Ray, Prometheus and the node exporters stop on every host, the app and the chat
   page stop answering, a second reset changes nothing.

After step 1 the chat page (`distinfer chat`, started by the ray_local role) answers on the head. After
step 2 Debian's Prometheus (role prometheus_local) answers on the head, scraping Ray's metrics export and
the node exporter of every host, and the report has each scenario's server-side figures from it.

The synthetic engine (fixed time per token) keeps three Ray nodes and the load within this 2-core
machine; the `hf` engine runs the same path in `make demo`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from leaks import places_holding, secret_file_modes
from playbook_runs import PlaybookRun, ansible_env, run_playbook
from raystate import node_names, ray_json
from testhosts import REPO_ROOT, TestHosts

from autoscale_figures import check_figures
from distinfer.config import HOST_LABEL

SITE = REPO_ROOT / "site.yml"
RESET = REPO_ROOT / "playbooks" / "reset.yml"
HTTP_PORT = 24800
CHAT_PORT = 24860  # roles/ray_local/tasks/chat.yml's default
PROMETHEUS_PORT = 24090  # the plan's default on the local platform
USERS_PER_REPLICA = 4
# The API key the app asks for on this platform; made per run, so finding it anywhere means a leak.
API_KEY = "dk-" + secrets.token_hex(16)
# A Hugging Face token in the environment too, as a user with gated models has one: unused here, it must
# leak nowhere either.
HF_TOKEN = "hf_" + secrets.token_hex(16)
KEY_ENV = {"DISTINFER_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN}

MODELS = {
    "models": [
        {
            "name": "synth",
            "engine": "synthetic",
            "ttft_ms": 20,
            "itl_ms": 10,
            # One replica per host: each host offers Ray 2 CPUs (group vars below).
            "num_cpus": 1.5,
            "replicas": 1,
            "max_ongoing_requests": USERS_PER_REPLICA,
            "max_queued_requests": 64,
        }
    ],
    "ingress": {"num_cpus": 0.1},
    "http": {"host": "0.0.0.0", "port": HTTP_PORT},
}

# Faster than Ray's defaults at giving up on a lost node (seconds, not up to a minute).
FAST_NODE_LOSS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local-platform")
    (path / "models.yaml").write_text(yaml.safe_dump(MODELS, sort_keys=False))
    return path


def write_inventory(hosts: TestHosts, workdir: Path, names: list[str], **extra: Any) -> Path:
    """The local platform's inventory shape (inventory/local): ray_head + ray_workers under ray_cluster."""
    group_vars = {
        "distinfer_platform": "local",
        "distinfer_models_file": str(workdir / "models.yaml"),
        "distinfer_results_dir": str(workdir / "results"),
        "ray_local_num_cpus": 2,
        "ray_local_object_store_memory": 100 * 1024 * 1024,
        "distinfer_scenarios": scenarios(
            [{"users_per_replica": USERS_PER_REPLICA}], duration_s=12, warmup_s=4, max_tokens=16
        ),
        # From the first run on, so the lost-host test below does not restart Ray to set them.
        "ray_local_extra_env": FAST_NODE_LOSS,
        # As the shipped inventories do: the key comes from the control machine's environment.
        "distinfer_api_key": "{{ lookup('ansible.builtin.env', 'DISTINFER_API_KEY') }}",
        **extra,
    }
    return hosts.write_local_platform_inventory(
        workdir / f"inventory-{len(names)}-hosts.yml", names, group_vars
    )


def scenarios(entries: list[dict[str, Any]], **defaults: Any) -> dict[str, Any]:
    """A scenarios document (the schema of files/scenarios/*.yaml), given inline as distinfer_scenarios."""
    return {"defaults": defaults, "scenarios": entries}


def site(inventory: Path, workdir: Path, label: str, **kwargs: Any) -> PlaybookRun:
    run = run_playbook(
        SITE, inventory, log=workdir / "logs" / f"{label}.log", timeout=1500, env=KEY_ENV, **kwargs
    )
    assert run.returncode == 0, run.describe()
    return run


def synth_replicas(hosts: TestHosts) -> list[tuple[str, str, int]]:
    """Alive replica actors of the synth model: (test host, actor id, PID inside that host)."""
    nodes = node_names(hosts, "node1")
    return [
        (nodes.get(actor["node_id"], "?"), actor["actor_id"], int(actor["pid"]))
        for actor in ray_json(hosts, "node1", "actors", "--filter", "state=ALIVE")
        if actor["class_name"].endswith(":model-synth")
    ]


def replicas_by_host(hosts: TestHosts) -> dict[str, set[str]]:
    placed: dict[str, set[str]] = {}
    for host, actor_id, _ in synth_replicas(hosts):
        placed.setdefault(host, set()).add(actor_id)
    return placed


def ray_node_process(hosts: TestHosts, name: str) -> tuple[int, str]:
    """The Ray node process on a host: PID and its kernel start time (a restart changes either)."""
    record = json.loads(hosts.ssh(name, "cat /var/lib/distinfer/ray/distinfer-ray.json").stdout)
    pid = int(record["pid"])
    stat = hosts.ssh(name, f"cat /proc/{pid}/stat").stdout
    return pid, stat.rsplit(")", 1)[1].split()[19]


def scenario_dir(workdir: Path, run_id: str, scenario: str) -> Path:
    return workdir / "results" / run_id / "scenarios" / scenario


def placement(workdir: Path, run_id: str, scenario: str) -> dict[str, Any]:
    """The scenario's placement.json: where the benchmark found its replicas (Ray's state API)."""
    path = scenario_dir(workdir, run_id, scenario) / "placement.json"
    assert path.exists(), f"scenario {scenario}: no {path}"
    return dict(json.loads(path.read_text()))


def placed_hosts(hosts: TestHosts, record: dict[str, Any]) -> list[str]:
    """The test host of each replica in a placement.json, by its Ray node's address in this test's own
    read of Ray's state API (not by the host label the record carries)."""
    nodes = node_names(hosts, "node1")
    return sorted(nodes.get(r["node_id"], str(r["node_id"])) for r in record["replicas"])


def node_rows_of(report: str, scenario: str) -> list[str]:
    """The hosts of a scenario's rows in the report's node table."""
    section = report[report.index("## Resource utilisation per node") :].split("\n## ")[0]
    return sorted(
        line.split("|")[2].strip() for line in section.splitlines() if line.startswith(f"| {scenario} | ")
    )


def summary(workdir: Path, run_id: str, scenario: str) -> dict[str, Any]:
    path = scenario_dir(workdir, run_id, scenario) / "summary.json"
    assert path.exists(), f"scenario {scenario} did not finish: no {path}"
    return json.loads(path.read_text())


def error_count(data: dict[str, Any]) -> int:
    return int(data["metrics"]["failed"])


def completed(data: dict[str, Any]) -> int:
    return int(data["metrics"]["completed"])


def records(workdir: Path, run_id: str, scenario: str) -> list[dict[str, Any]]:
    path = scenario_dir(workdir, run_id, scenario) / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cluster(test_hosts: TestHosts, workdir: Path) -> Iterator[dict[str, Any]]:
    """Shared state of the ordered tests below; Ray is stopped on every host at the end."""
    state: dict[str, Any] = {"hosts": test_hosts}
    yield state
    for host in test_hosts.hosts:  # stop what the role started (only its unit), also after a failure
        command = (
            "systemctl stop --no-block distinfer-ray.service distinfer-nodemetrics.service"
            " distinfer-chat.service distinfer-edge.service distinfer-prometheus.service"
            " distinfer-node-exporter.service || true"
        )
        test_hosts.ssh(host.name, command, check=False, timeout=60)


def test_two_hosts_make_a_cluster_with_two_replicas(cluster: dict[str, Any], workdir: Path) -> None:
    hosts: TestHosts = cluster["hosts"]
    inventory = write_inventory(hosts, workdir, ["node1", "node2"], distinfer_run_id="scaling")
    site(inventory, workdir, "two-hosts")

    placed = replicas_by_host(hosts)
    assert {name: len(ids) for name, ids in placed.items()} == {"node1": 1, "node2": 1}, placed
    # Every Ray node carries its inventory host's name as a label (ray start --labels), and a scenario
    # naming no hosts has its replicas anywhere, where they ran recorded from Ray's state API.
    alive = ray_json(hosts, "node1", "nodes", "--filter", "state=ALIVE")
    assert {n["node_ip"]: n["labels"].get(HOST_LABEL) for n in alive} == {
        hosts.host(name).ip: name for name in ("node1", "node2")
    }, alive
    record = placement(workdir, "scaling", "2n-2r-4u")
    assert record["named"] == [] and sorted(record["served"]) == ["node1", "node2"], record
    assert placed_hosts(hosts, record) == ["node1", "node2"], record
    data = summary(workdir, "scaling", "2n-2r-4u")
    assert completed(data) > 0 and error_count(data) == 0, data
    nodes = scenario_dir(workdir, "scaling", "2n-2r-4u") / "nodes"
    assert sorted(p.name for p in nodes.glob("*.jsonl")) == ["node1.jsonl", "node2.jsonl"]
    # The chat page runs on the head beside the API it asks (its browser tests: tests/serve).
    head = hosts.host("node1").ip
    health = httpx.get(f"http://{head}:{CHAT_PORT}/health", timeout=10)
    assert health.json() == {"status": "ok", "api": f"http://{head}:{HTTP_PORT}/v1"}, health.text
    assert "gradio" in httpx.get(f"http://{head}:{CHAT_PORT}/", timeout=10).text.lower()
    # HAProxy (the default serving path) keeps its files under the head's Ray temp dir (Ray adds a
    # folder per Ray node), not in Ray's default /tmp/haproxy-serve that another Ray on the host shares.
    files = (
        "find /tmp/di-ray/haproxy -name haproxy.cfg -size +0 | grep -q ."
        " && find /tmp/di-ray/haproxy -name admin.sock -type s | grep -q ."
    )
    private = hosts.ssh("node1", f"{files} && ! test -e /tmp/haproxy-serve && echo private", check=False)
    assert private.stdout.strip() == "private", private.stdout + private.stderr
    # The edge (roles/ray_local/tasks/edge.yml) holds the endpoint port on the head, sized from the
    # scenario just deployed: 2 replicas x 4 slots, the models file's queue of 64.
    edge_cfg = "/var/lib/distinfer/ray/edge/edge.cfg"
    edge = hosts.ssh("node1", f"systemctl is-active distinfer-edge.service; cat {edge_cfg}", check=False)
    assert edge.stdout.startswith("active\n"), edge.stdout + edge.stderr
    assert f"maxconn {2 * USERS_PER_REPLICA}" in edge.stdout, edge.stdout
    assert "queue(model) ge 64" in edge.stdout, edge.stdout
    cluster["before"] = {
        "replicas": placed,
        "ray": {name: ray_node_process(hosts, name) for name in ("node1", "node2")},
    }


def test_adding_a_host_grows_the_cluster_and_restarts_nothing(cluster: dict[str, Any], workdir: Path) -> None:
    hosts: TestHosts = cluster["hosts"]
    before = cluster.get("before")
    assert before, "the two-host run did not complete"
    inventory = write_inventory(hosts, workdir, ["node1", "node2", "node3"], distinfer_run_id="scaling")
    site(inventory, workdir, "three-hosts")
    cluster["inventory"] = inventory

    nodes = ray_json(hosts, "node1", "nodes", "--filter", "state=ALIVE")
    assert sorted(n["node_ip"] for n in nodes) == sorted(h.ip for h in hosts.hosts)
    placed = replicas_by_host(hosts)
    assert {name: len(ids) for name, ids in placed.items()} == {"node1": 1, "node2": 1, "node3": 1}, placed
    for name in ("node1", "node2"):
        assert ray_node_process(hosts, name) == before["ray"][name], f"Ray restarted on {name}"
        assert placed[name] == before["replicas"][name], f"the Serve replica on {name} was replaced"

    data = summary(workdir, "scaling", "3n-3r-4u")
    assert completed(data) > 0 and error_count(data) == 0, data
    grown = scenario_dir(workdir, "scaling", "3n-3r-4u") / "nodes"
    assert sorted(p.name for p in grown.glob("*.jsonl")) == ["node1.jsonl", "node2.jsonl", "node3.jsonl"]
    # The first scenario is still there, and the report puts both side by side with 3 node rows.
    assert completed(summary(workdir, "scaling", "2n-2r-4u")) > 0
    report = (workdir / "results" / "scaling" / "report" / "report.md").read_text()
    assert "2n-2r-4u" in report and "3n-3r-4u" in report, report
    node_rows = [line for line in report.splitlines() if line.startswith("| 3n-3r-4u | node")]
    assert sorted(line.split("|")[2].strip() for line in node_rows) == ["node1", "node2", "node3"], report
    # What serving cost, from the Ray processes on the three hosts: the proxy took every request, the
    # replicas ran the engine, and the nodes' whole CPU holds both.
    document = json.loads((workdir / "results" / "scaling" / "report" / "results.json").read_text())
    (grown_entry,) = [e for e in document["scenarios"] if e["scenario"] == "3n-3r-4u"]
    cost = grown_entry["path_cost"]
    assert cost["cpu_s_per_1k_tokens"]["proxy"] > 0 and cost["cpu_s_per_1k_tokens"]["replicas"] > 0, cost
    parts = sum(cost["cpu_s_per_1k_tokens"].values())
    assert cost["nodes_cpu_s_per_1k_tokens"] > parts * 0.9, cost
    assert "What the serving path costs" in report
    _assert_prometheus_scrapes_every_host_and_feeds_the_report(hosts, report)


def _assert_prometheus_scrapes_every_host_and_feeds_the_report(hosts: TestHosts, report: str) -> None:
    """Debian's Prometheus on the head scrapes Ray's export and the node exporter of every host (label
    `host` = the inventory name), and the report's server-side figures come from it."""
    url = f"http://{hosts.host('node1').ip}:{PROMETHEUS_PORT}"
    active = httpx.get(f"{url}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
    up = sorted((t["labels"]["job"], t["labels"]["host"]) for t in active if t["health"] == "up")
    assert up == [(job, name) for job in ("node", "ray") for name in ("node1", "node2", "node3")], active
    query = {"query": 'sum by (host) (ray_serve_replica_processing_queries{deployment="model-synth"})'}
    answer = httpx.get(f"{url}/api/v1/query", params=query, timeout=30).json()["data"]["result"]
    assert sorted(s["metric"]["host"] for s in answer) == ["node1", "node2", "node3"], answer
    section = report[report.index("## Server-side figures") :].split("\n## ")[0]
    assert f"From Prometheus at {url}" in section, section
    row = next(line for line in section.splitlines() if line.startswith("| 3n-3r-4u |"))
    running = row.split("|")[5].strip()  # Engine running avg / max: the synthetic replicas were busy
    assert float(running.split(" / ")[0]) > 0, row


def test_the_api_key_is_asked_for_and_written_nowhere(cluster: dict[str, Any], workdir: Path) -> None:
    """The key exported for the playbook is enforced by the app, sent by the benchmark (whose runs
    completed above), and appears in no log, result, report or host file but its own 0600 file."""
    hosts: TestHosts = cluster["hosts"]
    assert cluster.get("inventory"), "the three-host run did not complete"
    url = f"http://{hosts.host('node1').ip}:{HTTP_PORT}/v1/models"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).status_code == 200
    # Every file the runs left: playbook output, results and reports here; on every host distinfer's
    # state (node-metrics files included), Ray's session logs and the systemd journal.
    for secret in (API_KEY, HF_TOKEN):
        assert places_holding(secret, hosts, [workdir / "logs", workdir / "results"]) == []
    for path in ("/var/lib/distinfer/ray/api_key", "/var/lib/distinfer/ray/auth_token"):
        assert set(secret_file_modes(hosts, path).values()) == {"600"}, path


def test_a_second_run_changes_nothing(cluster: dict[str, Any], workdir: Path) -> None:
    inventory = cluster.get("inventory")
    assert inventory, "the three-host run did not complete"
    run = site(inventory, workdir, "idempotent", skip_tags=["benchmark"])
    assert set(run.recap) >= {"node1", "node2", "node3"}, run.describe()
    assert all(count == 0 for count in run.changed().values()), run.describe()
    cluster["idempotent_s"] = run.duration_s
    (workdir / "idempotent_s.txt").write_text(f"{run.duration_s:.1f}\n")


def _kill_a_replica_mid_scenario(hosts: TestHosts, records_file: Path, outcome: dict[str, Any]) -> None:
    """Once the scenario's load runs, SIGKILL node2's replica by its PID, past the warm-up."""
    try:
        deadline = time.monotonic() + 900
        while not records_file.exists():  # the scenario's replicas are deployed and its load has begun
            if time.monotonic() > deadline:
                outcome["error"] = f"no traffic in {records_file}"
                return
            time.sleep(0.2)
        load_seen = time.monotonic()
        # `ray list` is slow on a busy machine: look the PID up first, kill later.
        pids = [pid for host, _, pid in synth_replicas(hosts) if host == "node2"]
        if not pids:
            outcome["error"] = "no synth replica found on node2"
            return
        pid = pids[0]
        time.sleep(max(0.0, 10 - (time.monotonic() - load_seen)))  # well past the 4 s warm-up
        asked = time.time()  # the kill acts within the SSH call, before it returns
        hosts.ssh("node2", f"kill -KILL {pid}")
        outcome.update(pid=pid, at=asked)
    except Exception as err:  # reported by the test's assertion, with the reason
        outcome["error"] = repr(err)


def test_a_killed_replica_is_recorded_and_the_next_scenario_runs_clean(
    cluster: dict[str, Any], workdir: Path
) -> None:
    hosts: TestHosts = cluster["hosts"]
    assert cluster.get("inventory"), "the three-host run did not complete"
    inventory = write_inventory(
        hosts,
        workdir,
        ["node1", "node2", "node3"],
        distinfer_run_id="fault",
        loadtest_certify=False,  # the load generator's self-test is the scaling run's (above)
        # Longer answers keep every replica busy (about 0.7 s per request in the replica), so the
        # killed one has requests in flight whatever the moment.
        distinfer_scenarios=scenarios(
            [
                {"name": "killed", "users_per_replica": USERS_PER_REPLICA, "duration_s": 30},
                {"name": "after", "users_per_replica": USERS_PER_REPLICA, "duration_s": 10},
            ],
            warmup_s=4,
            max_tokens=64,
        ),
    )
    outcome: dict[str, Any] = {}
    killer = threading.Thread(
        target=_kill_a_replica_mid_scenario,
        args=(hosts, scenario_dir(workdir, "fault", "killed") / "records.jsonl", outcome),
        daemon=True,
    )
    killer.start()
    # The deployment is the three-host run's (the idempotency gate above found nothing to change): only
    # the benchmark runs again, as an operator benchmarks a standing cluster (its scenarios deploy).
    site(inventory, workdir, "fault", tags=["benchmark"])
    killer.join(timeout=60)
    assert "pid" in outcome, outcome

    killed = summary(workdir, "fault", "killed")
    assert outcome["at"] < killed["load_end"], "the replica was killed after the load had ended"
    # The kill is recorded: the replica course from the kill on, and the requests it cost, if any (Ray
    # Serve sometimes gets them answered elsewhere); the raw records agree with the summary.
    faults = killed["availability"]
    killed_at_s = outcome["at"] - killed["started"]
    (course,) = faults["replicas"]
    assert (course["at_start"], course["lowest"]) == (3, 2), faults
    assert killed_at_s - 1 <= course["dropped_at_s"] < course["back_at_s"], (killed_at_s, faults)
    failed = [r for r in records(workdir, "fault", "killed") if r.get("error") or r.get("status") != 200]
    assert faults["failed"] == len([r for r in failed if r.get("error_kind") != "cancelled"]), faults
    if failed:
        assert killed_at_s - 1 <= faults["first_error_s"], faults
    after = summary(workdir, "fault", "after")
    assert completed(after) > 0 and error_count(after) == 0, after
    # Nothing finished earlier was lost: the scaling run's scenarios are intact.
    assert completed(summary(workdir, "scaling", "3n-3r-4u")) > 0
    report = (workdir / "results" / "fault" / "report" / "report.md").read_text()
    assert "killed" in report and "after" in report


def movable_models(workdir: Path) -> Path:
    """The synthetic model at 0.5 CPUs a replica: room for several replicas on one host (2 CPUs each)."""
    path = workdir / "models-movable.yaml"
    movable = {**MODELS, "models": [{**MODELS["models"][0], "num_cpus": 0.5}]}
    path.write_text(yaml.safe_dump(movable, sort_keys=False))
    return path


def three_hosts_in_turn(
    hosts: TestHosts,
    workdir: Path,
    durations: dict[str, int],
    defaults: dict[str, Any] | None = None,
    fields: dict[str, dict[str, Any]] | None = None,
    **extra: Any,
) -> Path:
    """The three hosts' inventory with scenarios run in turn, by name and duration, each at
    USERS_PER_REPLICA, a 4 s warm-up and 16 tokens unless `defaults` says more, plus any scenario's own
    `fields`; no self-test of the load generator (the scaling run's); `extra` more group vars."""
    entries = [
        {"name": n, "users_per_replica": USERS_PER_REPLICA, "duration_s": d, **(fields or {}).get(n, {})}
        for n, d in durations.items()
    ]
    return write_inventory(
        hosts,
        workdir,
        ["node1", "node2", "node3"],
        loadtest_certify=False,
        distinfer_scenarios=scenarios(entries, **{"warmup_s": 4, "max_tokens": 16, **(defaults or {})}),
        **extra,
    )


# Scenarios on their nodes (the one-node and the two-node case), in the interrupted run below: 0.5 CPUs
# a replica leave room for all of them on one host, so only the label selector keeps them off the others.
ON_NODES = {
    "first": {"replicas": 2, "nodes": ["node3"]},
    "second": {"replicas": 3, "nodes": ["node2", "node3"]},
}
# An autoscaling scenario through site.yml (issue 24), the resumed run's third: Serve autoscales the model
# between 1 and 3 replicas (2 ongoing requests each; short delays) while the load steps from 1 to 6
# users after 8 s: 6 users need 3 replicas. It follows a scenario of 3 fixed replicas, which Serve keeps
# as its first target when the deployment turns to autoscaling: one user for 8 s brings them down to 1
# (downscale delay 1 s) before the step. Its figures are computed again from what the run recorded.
SCALING_STEP_AT_S, SCALING_S, SCALING_SLO_TTFT_MS = 8.0, 20.0, 250.0
SCALING = {
    "duration_s": SCALING_S,
    "warmup_s": 0,
    "max_tokens": 20,
    "drain_timeout_s": 10,
    "steps": [{"at_s": 0, "users": 1}, {"at_s": SCALING_STEP_AT_S, "users": 6}],
    "slo": {"name": "scaling", "ttft_ms": SCALING_SLO_TTFT_MS, "percentile": 90},
    "autoscaling": {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 1,
        "downscale_delay_s": 1,
        "look_back_period_s": 1,
        "metrics_interval_s": 0.5,
    },
    "peak_static_replicas": 3,
}


def test_an_interrupted_benchmark_resumes_where_it_stopped(cluster: dict[str, Any], workdir: Path) -> None:
    """Ctrl-C during the second scenario, then the same command again: the run resumes under the same
    id, the finished scenario is not run again, the interrupted attempt's records are kept aside, and
    the report covers both scenarios.

    Its scenarios name their hosts (ON_NODES): each one's replicas, read from Ray's state API while its
    load runs, are on those hosts only, as its placement.json records, and its node rows in the report
    are the hosts that served. Without the selector Serve spreads replicas over the nodes with room
    (SPREAD): two replicas would not share node3, and three would not all miss node1; the lost-host test
    below is the control, the same model with no hosts named, its three replicas on the three hosts."""
    hosts: TestHosts = cluster["hosts"]
    assert cluster.get("inventory"), "the three-host run did not complete"
    inventory = three_hosts_in_turn(
        hosts,
        workdir,
        {"first": 10, "second": 20, "scaling": int(SCALING_S)},
        fields={**ON_NODES, "scaling": SCALING},
        distinfer_models_file=str(movable_models(workdir)),
    )
    results = workdir / "results"
    argv = ["ansible-playbook", "-i", str(inventory), str(SITE), "--tags", "benchmark"]
    log = (workdir / "logs" / "interrupted.log").open("w")
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=ansible_env(KEY_ENV),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    live: dict[str, list[str]] = {}  # scenario -> the test host of each replica while its load ran
    try:
        deadline = time.monotonic() + 600
        second = None
        while time.monotonic() < deadline and proc.poll() is None:
            if "first" not in live and list(results.glob("*/scenarios/first/records.jsonl")):
                live["first"] = sorted(host for host, _, _ in synth_replicas(hosts))
            found = sorted(results.glob("*/scenarios/second/records.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 20:
                second = found[0]
                live["second"] = sorted(host for host, _, _ in synth_replicas(hosts))
                break
            time.sleep(0.5)
        assert second is not None, f"the second scenario never ran; see {log.name}"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    run_dir = second.parents[2]
    assert (results / ".unfinished").read_text().strip() == run_dir.name
    first_summary = (run_dir / "scenarios" / "first" / "summary.json").read_bytes()
    partial = len(second.read_text().splitlines())

    site(inventory, workdir, "resumed", tags=["benchmark"])

    assert (run_dir / "scenarios" / "first" / "summary.json").read_bytes() == first_summary, "re-run"
    (kept,) = (run_dir / "interrupted").iterdir()
    assert len((kept / "records.jsonl").read_text().splitlines()) >= partial
    assert completed(summary(workdir, run_dir.name, "second")) > 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "first" in report and "second" in report
    assert not (results / ".unfinished").exists()
    # On their nodes: live (Ray's state API during each load), as recorded, and as the report's rows.
    assert live.get("first") == ["node3", "node3"], live  # one node: both replicas on node3
    assert len(live.get("second", [])) == 3 and set(live["second"]) <= {"node2", "node3"}, live
    for name, asked in ON_NODES.items():
        record = placement(workdir, run_dir.name, name)
        assert record["named"] == asked["nodes"] and record["outside"] == [], record
        assert len(record["replicas"]) == asked["replicas"], record
        assert placed_hosts(hosts, record) == live[name], (record, live)
        assert sorted(record["served"]) == sorted(set(live[name])), record
        assert node_rows_of(report, name) == sorted(record["served"]), report
    # The autoscaling scenario the resumed run went on to: the replicas grew within [1, 3] while the load
    # stepped up, and its figures are the samples' and records' (Serve's REST API via the head's dashboard).
    check_figures(
        scenario_dir(workdir, run_dir.name, "scaling"),
        bounds=(1, 3),
        step_at_s=SCALING_STEP_AT_S,
        need=3,
        duration_s=SCALING_S,
        slo_ttft_ms=SCALING_SLO_TTFT_MS,
    )
    assert "## Autoscaling" in report


def _power_off_mid_scenario(
    hosts: TestHosts, name: str, records_file: Path, outcome: dict[str, Any], give_up: threading.Event
) -> None:
    """Once the scenario's load runs, stop a host's machine (its container), past the warm-up; never
    once the test has given up waiting (the run ended first)."""
    try:
        deadline = time.monotonic() + 900
        while not records_file.exists():
            if time.monotonic() > deadline or give_up.is_set():
                outcome["error"] = f"no traffic in {records_file}"
                return
            time.sleep(0.2)
        if give_up.wait(10):  # well past the 4 s warm-up
            outcome["error"] = "the run ended before the host could be stopped"
            return
        # When the cut was asked for: `podman stop` returns later (over a second on a loaded machine),
        # and requests on the host fail from the moment it acts, not from when it returns.
        outcome["at"] = time.time()
        hosts.power_off(name)
    except Exception as err:  # reported by the test's assertion, with the reason
        outcome["error"] = repr(err)


def test_a_lost_host_is_recorded_its_replica_comes_back_and_the_sweep_goes_on(
    cluster: dict[str, Any], workdir: Path
) -> None:
    """node3's machine stops mid-scenario (the container, not a process): the report says when errors
    began and ended, the seconds the SLO was violated, and when Ray Serve had the lost replica back on
    the two hosts left; the next scenario runs clean; nothing measured earlier is lost. Then node3 is
    powered on again and rejoins."""
    hosts: TestHosts = cluster["hosts"]
    assert cluster.get("inventory"), "the three-host run did not complete"
    movable = movable_models(workdir)  # room left on 2 hosts
    inventory = three_hosts_in_turn(
        hosts,
        workdir,
        # Powered off ~10 s in; Serve had the replica back ~5 s later (2026-12-07): 40 s leaves room for
        # a slower recovery.
        {"lost": 40, "after": 10},
        {"timeout_s": 30, "drain_timeout_s": 30, "slo": {"ttft_ms": 2000}},
        distinfer_run_id="lost",
        distinfer_models_file=str(movable),
    )
    outcome: dict[str, Any] = {}
    give_up = threading.Event()
    stopper = threading.Thread(
        target=_power_off_mid_scenario,
        args=(hosts, "node3", scenario_dir(workdir, "lost", "lost") / "records.jsonl", outcome, give_up),
        daemon=True,
    )
    stopper.start()
    try:
        run = run_playbook(
            SITE, inventory, log=workdir / "logs" / "lost.log", timeout=1500, env=KEY_ENV, tags=["benchmark"]
        )
        give_up.set()
        stopper.join(timeout=60)
        assert "at" in outcome, (outcome, run.describe())
        _assert_the_loss_was_recorded(hosts, workdir, run, outcome)
        # The control of the scenarios on their nodes (above): no hosts named, Serve spread the same
        # model's three replicas over all three hosts (as the benchmark found them before the load).
        record = placement(workdir, "lost", "lost")
        assert record["named"] == [] and sorted(record["served"]) == ["node1", "node2", "node3"], record
    finally:  # whatever happened above, the tests after this one get three running hosts back
        give_up.set()
        stopper.join(timeout=60)
        if not hosts.is_running("node3"):
            hosts.power_on("node3")
    # and it rejoins: the Ray cluster has its three nodes again
    site(cluster["inventory"], workdir, "rejoined", skip_tags=["benchmark"])
    nodes = ray_json(hosts, "node1", "nodes", "--filter", "state=ALIVE")
    assert sorted(n["node_ip"] for n in nodes) == sorted(h.ip for h in hosts.hosts)


def _assert_the_loss_was_recorded(
    hosts: TestHosts, workdir: Path, run: PlaybookRun, outcome: dict[str, Any]
) -> None:
    # node3 is gone for Ansible too: unreachable, nothing failed on the others.
    assert run.recap["node3"].unreachable and not run.recap["node1"].failed, run.describe()

    lost = summary(workdir, "lost", "lost")
    faults = lost["availability"]
    off_at_s = outcome["at"] - lost["started"]
    # Requests in flight on node3 fail, or (when Serve got them elsewhere in time) none does; either
    # way errors are counted from the power cut on, and every second with one broke the SLO.
    if faults["failed"]:
        assert faults["error_seconds"] > 0 and off_at_s - 1 <= faults["first_error_s"], faults
    assert faults["slo_violated_seconds"] >= faults["error_seconds"], faults
    (course,) = faults["replicas"]
    assert (course["at_start"], course["lowest"]) == (3, 2), faults
    assert off_at_s - 1 <= course["dropped_at_s"] < course["back_at_s"], (off_at_s, faults)
    placed = replicas_by_host(hosts)
    assert sum(len(ids) for ids in placed.values()) == 3 and "node3" not in placed, placed
    after = summary(workdir, "lost", "after")
    assert completed(after) > 0 and error_count(after) == 0, after
    assert completed(summary(workdir, "scaling", "3n-3r-4u")) > 0  # nothing measured earlier is lost
    report = (workdir / "results" / "lost" / "report" / "report.md").read_text()
    assert "Faults during the load" in report and "| lost | " in report, report
    assert f"was back at {course['back_at_s']:.1f} s" in report


def test_reset_stops_ray_and_the_recorder_on_every_host(cluster: dict[str, Any], workdir: Path) -> None:
    """playbooks/reset.yml on the local platform: the Ray node, the node exporter (and any recorder)
    stop on every host and Prometheus on the head, the Serve app stops answering, and a second reset
    has nothing left to do."""
    hosts: TestHosts = cluster["hosts"]
    inventory = cluster.get("inventory")
    assert inventory, "the three-host run did not complete"
    pids = {host.name: ray_node_process(hosts, host.name)[0] for host in hosts.hosts}
    reset = run_playbook(
        RESET, inventory, extra_vars={"confirm": "yes"}, log=workdir / "logs" / "reset.log", env=KEY_ENV
    )
    assert reset.returncode == 0, reset.describe()
    for host in hosts.hosts:
        for unit in ("distinfer-ray", "distinfer-node-exporter", "distinfer-prometheus"):
            state = hosts.ssh(host.name, f"systemctl is-active {unit}.service || true", check=False).stdout
            assert state.strip() != "active", f"{host.name}: {unit} is still {state.strip()}"
        alive = hosts.ssh(host.name, f"test -d /proc/{pids[host.name]} && echo alive || true", check=False)
        assert "alive" not in alive.stdout, f"{host.name}: Ray node PID {pids[host.name]} survived"
    head = hosts.host("node1").ip
    probe = (
        "python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(3); "
        f'sys.exit(s.connect_ex(("{head}", {HTTP_PORT})) == 0)\' && echo closed || echo open'
    )
    assert hosts.ssh("node2", probe, check=False).stdout.strip() == "closed", "the app still answers"
    chat_probe = probe.replace(str(HTTP_PORT), str(CHAT_PORT))
    chat_state = hosts.ssh("node2", chat_probe, check=False).stdout.strip()
    assert chat_state == "closed", "the chat page still answers"
    again = run_playbook(
        RESET, inventory, extra_vars={"confirm": "yes"}, log=workdir / "logs" / "reset-again.log", env=KEY_ENV
    )
    assert again.returncode == 0, again.describe()
    assert all(count == 0 for count in again.changed().values()), again.describe()
