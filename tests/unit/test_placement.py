"""Scenarios on their nodes, without a cluster: what the plan pins, what it refuses, how Ray's answers
are judged, and the report's node rows.

- `config.pin_to_hosts`: a replica that is one actor selects the hosts itself, a tensor-parallel
  replica selects them for every bundle of its placement group; Ray Serve's own schema takes both.
- The plan (the guide's cluster, the shipped guide.yaml): each scenario's model pinned to its `nodes`,
  the others left free; unknown hosts, more replicas than the named hosts' GPUs, a host name Ray
  cannot carry as a label, `nodes` and the older `meta.nodes` disagreeing: each refused, named.
- `results.placement`: Ray's answers (Serve's running replicas, the state API's actors, placement
  groups and nodes) judged against the named hosts; `distinfer bench placement` writes placement.json
  and exits 7 when a replica is elsewhere.
- The report: a scenario with placement.json has node rows for the hosts that served it only.
The same on real Ray clusters: tests/cluster/test_local_platform.py and test_rehearsal.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_plan import LLAMA_NAME, POWEREDGE_HOSTS, REPO, deployment, refused, request, write

from distinfer.config import HOST_LABEL, model_deployment_options, parse_models, pin_to_hosts, serve_config
from distinfer.plan import build_plan
from distinfer.report.render import node_section
from distinfer.report.tables import node_row, node_rows, results_document, scenario_row
from distinfer.results.load import NodeSamples, Run, Scenario, load_scenario
from distinfer.results.placement import Placement, RayStateError, placement_from_state
from distinfer.results.scenario import ScenarioSpec, load_sweep

MODEL = "model-meta-llama_Llama-2-70b-chat-hf"
GUIDE = REPO / "files/scenarios/guide.yaml"
DISTINFER = [sys.executable, "-m", "distinfer.cli"]


def sweep(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"defaults": {"duration_s": 10}, "scenarios": list(entries)}


def tp4() -> dict[str, Any]:
    models = parse_models(
        {"models": [{"name": "llama", "engine": "vllm", "model": "m", "tensor_parallel_size": 4}]}
    )
    return model_deployment_options(models.models[0])


def test_a_tensor_parallel_replica_selects_the_hosts_for_each_bundle_and_a_single_actor_for_itself() -> None:
    pinned = pin_to_hosts(tp4(), ["xe9680", "xe8545"])
    assert pinned["placement_group_bundle_label_selector"] == [{HOST_LABEL: "in(xe9680,xe8545)"}] * 4
    assert "label_selector" not in pinned["ray_actor_options"]  # the actor sits in bundle 0
    synthetic = parse_models({"models": [{"name": "s", "engine": "synthetic"}]}).models[0]
    alone = pin_to_hosts(model_deployment_options(synthetic), ["node3"])
    assert alone["ray_actor_options"] == {"num_cpus": 0.1, "label_selector": {HOST_LABEL: "node3"}}
    assert "placement_group_bundle_label_selector" not in alone
    assert "label_selector" not in model_deployment_options(synthetic)["ray_actor_options"]  # not changed


def test_ray_serve_accepts_the_pinned_deployments() -> None:
    """Ray Serve's own schema and replica config (what `serve deploy` and KubeRay validate with) take both
    selectors. In a subprocess: importing ray here would break locust's gevent patching later."""
    config = serve_config(parse_models({"models": [{"name": "llama", "engine": "vllm", "model": "m",
                                                    "tensor_parallel_size": 4}]}))  # fmt: skip
    (app,) = config["applications"]
    app["deployments"] = [pin_to_hosts(d, ["xe9680", "xe8545"]) for d in app["deployments"]]
    single = serve_config(parse_models({"models": [{"name": "s", "engine": "synthetic"}]}))
    single["applications"][0]["deployments"] = [
        pin_to_hosts(d, ["node3"]) for d in single["applications"][0]["deployments"]
    ]
    code = (
        "import json, sys\n"
        "from ray.serve.schema import ServeDeploySchema\n"
        "from ray.serve._private.config import ReplicaConfig\n"
        "out = []\n"
        "for config in json.load(sys.stdin):\n"
        "    ServeDeploySchema.model_validate(config)\n"
        "    dep = config['applications'][0]['deployments'][-1]\n"
        "    replica = ReplicaConfig.create(lambda: None, ray_actor_options=dep['ray_actor_options'],\n"
        "        placement_group_bundles=dep.get('placement_group_bundles'),\n"
        "        placement_group_strategy=dep.get('placement_group_strategy'),\n"
        "        placement_group_bundle_label_selector=dep.get('placement_group_bundle_label_selector'))\n"
        "    out.append([replica.ray_actor_options.get('label_selector'),\n"
        "                replica.placement_group_bundle_label_selector])\n"
        "print(json.dumps(out, default=str))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps([config, single]), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (tp, one) = json.loads(done.stdout.strip().splitlines()[-1])
    assert tp[0] is None and tp[1] == [{HOST_LABEL: "in(xe9680,xe8545)"}] * 4
    assert one[0] == {HOST_LABEL: "node3"}


def test_the_guides_scenarios_are_pinned_to_their_nodes() -> None:
    plan = build_plan(request())
    assert plan.host_label == HOST_LABEL
    guide = yaml.safe_load(GUIDE.read_text())
    for planned, entry in zip(plan.scenarios, guide["scenarios"], strict=True):
        assert planned.nodes == entry["nodes"] and planned.deployment == MODEL
        assert planned.spec["meta"]["nodes"] == ",".join(entry["nodes"])
        selector = entry["nodes"][0] if len(entry["nodes"]) == 1 else f"in({','.join(entry['nodes'])})"
        pinned = deployment(planned.serve_config, MODEL)
        assert pinned["placement_group_bundle_label_selector"] == [{HOST_LABEL: selector}] * 4
    # The plan's own config (what runs outside a scenario) places the replicas anywhere.
    assert "placement_group_bundle_label_selector" not in deployment(plan.serve_config, MODEL)


def test_a_scenario_without_nodes_is_placed_anywhere_and_lists_every_host(tmp_path: Path) -> None:
    free = sweep({"name": "free", "replicas": 2, "users_per_replica": 4})
    (planned,) = build_plan(request(scenarios_file=write(tmp_path, "s.yaml", free))).scenarios
    assert planned.nodes == []
    assert "placement_group_bundle_label_selector" not in deployment(planned.serve_config, MODEL)
    assert planned.spec["meta"]["nodes"] == "xe9680,xe8545,r760xa" and planned.spec["meta"]["gpus"] == "16"


def test_nodes_as_a_string_or_the_older_meta_label_pin_the_same(tmp_path: Path) -> None:
    """`nodes: "a,b"` reads as the list; a file of before that only had `meta: {nodes: ...}` (which always
    meant the hosts it ran on) is pinned the same way, in the inventory's order."""
    both = sweep(
        {"name": "string", "replicas": 2, "users_per_replica": 4, "nodes": "xe8545, xe9680"},
        {"name": "label", "replicas": 2, "users_per_replica": 4, "meta": {"nodes": "xe8545,xe9680"}},
    )
    plan = build_plan(request(scenarios_file=write(tmp_path, "s.yaml", both)))
    for planned in plan.scenarios:
        assert planned.nodes == ["xe9680", "xe8545"], planned.name
        assert planned.spec["meta"]["nodes"] == "xe9680,xe8545" and planned.spec["meta"]["gpus"] == "12"


def test_a_scenario_naming_a_host_the_inventory_lacks_is_refused(tmp_path: Path) -> None:
    typo = sweep({"name": "typo", "replicas": 1, "users_per_replica": 4, "nodes": ["xe8454"]})
    message = refused(request(scenarios_file=write(tmp_path, "s.yaml", typo)))
    assert "scenario 'typo': nodes names xe8454, which the inventory does not have" in message, message
    assert "xe9680, xe8545, r760xa" in message, message


def test_more_replicas_than_the_named_hosts_gpus_hold_are_refused(tmp_path: Path) -> None:
    """2 replicas of 4 GPUs on xe8545's 4: refused with the numbers and the fix, though the whole
    inventory (16 GPUs) would hold them."""
    crowded = sweep({"name": "crowded", "replicas": 2, "users_per_replica": 4, "nodes": ["xe8545"]})
    message = refused(request(scenarios_file=write(tmp_path, "s.yaml", crowded)))
    assert f"scenario 'crowded' asks 2 replica(s) of {LLAMA_NAME}, 2 x 4 = 8 GPUs" in message, message
    assert "xe8545 (4 GPUs) hold 1 replica(s)" in message, message
    assert "lower its replicas to 1 or name more hosts in its nodes:" in message, message
    fits = sweep({"name": "fits", "replicas": 3, "users_per_replica": 4, "nodes": ["xe9680", "xe8545"]})
    assert build_plan(request(scenarios_file=write(tmp_path, "f.yaml", fits))).scenarios[0].replicas == 3


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"nodes": []}, "name at least one inventory host"),
        ({"nodes": ["xe8545", "xe8545"]}, "['xe8545'] named more than once"),
        (
            {"nodes": "xe8545", "meta": {"nodes": "xe9680"}},
            "nodes ['xe8545'] and meta.nodes 'xe9680' disagree",
        ),
    ],
)
def test_bad_nodes_are_refused_with_the_scenario_named(
    tmp_path: Path, entry: dict[str, Any], expected: str
) -> None:
    bad = sweep({"name": "bad", "replicas": 1, "users_per_replica": 4, **entry})
    message = refused(request(scenarios_file=write(tmp_path, "s.yaml", bad)))
    assert "'bad'" in message and expected in message, message


def test_a_host_name_ray_cannot_carry_as_a_label_is_refused() -> None:
    hosts = [*POWEREDGE_HOSTS[:2], {**POWEREDGE_HOSTS[2], "name": "r760xa_"}]
    message = refused(request(hosts=hosts, head="xe9680", scenarios_file=None))
    assert message.startswith(
        f"r760xa_: the inventory host name becomes the Ray node label {HOST_LABEL}=r760xa_"
    )


def test_a_sweep_without_a_plan_only_records_the_nodes() -> None:
    """`distinfer bench sweep` places nothing: the guide's nodes become its meta label, as before."""
    specs = load_sweep(GUIDE, {})
    assert [s.meta["nodes"] for s in specs[:2]] == ["xe8545", "xe9680,xe8545"]
    assert specs[0].deployment.nodes == ["xe8545"]


# ---- Ray's answers ------------------------------------------------------------------------------


def _answer(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One state API answer as the dashboard gives it (`GET /api/v0/<resource>`)."""
    return {"result": True, "msg": "", "data": {"result": {"total": len(rows), "result": rows}}}


NODES = {"n1": ("10.0.0.1", "xe9680"), "n2": ("10.0.0.2", "xe8545"), "n3": ("10.0.0.3", "r760xa")}


def ray_state(
    replicas: dict[str, str], bundles: dict[str, list[str]] | None = None, **extra: Any
) -> dict[str, Any]:
    """Serve's answer with RUNNING replicas (replica -> node id of its actor), the actors, their
    placement groups (replica -> node ids of its bundles) and the labelled nodes."""
    bundles = bundles or {}
    serve_replicas = [
        {"replica_id": r, "state": "RUNNING", "actor_id": f"a-{r}", "node_id": node}
        for r, node in replicas.items()
    ]
    serve_replicas.append({"replica_id": "old", "state": "STOPPING", "actor_id": "a-old", "node_id": "n3"})
    state = {
        "serve": {"applications": {"distinfer": {"deployments": {MODEL: {"replicas": serve_replicas}}}}},
        "nodes": _answer(
            [{"node_id": n, "node_ip": ip, "labels": {HOST_LABEL: host}} for n, (ip, host) in NODES.items()]
        ),
        "actors": _answer(
            [
                {
                    "actor_id": f"a-{r}",
                    "node_id": node,
                    "placement_group_id": f"pg-{r}" if r in bundles else None,
                }
                for r, node in replicas.items()
            ]
            + [{"actor_id": "a-old", "node_id": "n3"}]
        ),
        "placement_groups": _answer(
            [
                {"placement_group_id": f"pg-{r}", "bundles": [{"node_id": n} for n in nodes]}
                for r, nodes in bundles.items()
            ]
        ),
    }
    state.update(extra)
    return state


def test_replicas_on_the_named_hosts_are_placed_and_the_hosts_that_served_recorded() -> None:
    state = ray_state({"r1": "n2", "r2": "n1"}, {"r1": ["n2"] * 4, "r2": ["n1"] * 4})
    placed = placement_from_state(state, "distinfer", MODEL, ["xe9680", "xe8545"], HOST_LABEL, now=1.0)
    assert placed.ok and placed.outside == [] and placed.unused == []
    assert placed.served == ["xe9680", "xe8545"]  # named order; the STOPPING replica on r760xa is not counted
    assert [(r.host, r.bundle_hosts) for r in placed.replicas] == [
        ("xe8545", ["xe8545"] * 4),
        ("xe9680", ["xe9680"] * 4),
    ]
    assert placed.line() == f"2 replica(s) of {MODEL} on xe9680, xe8545 (named: xe9680, xe8545)"
    packed = placement_from_state(
        ray_state({"r1": "n1"}), "distinfer", MODEL, ["xe9680", "xe8545"], HOST_LABEL
    )
    assert packed.ok and packed.unused == ["xe8545"] and "xe8545 named but holding none" in packed.line()
    # The guide's table says it beside its "Inference Nodes".
    scenario = Scenario(
        name="s", spec=None, summary=None, nodes={}, listed_nodes=["xe9680", "xe8545"], placement=packed
    )
    assert scenario_row(scenario).inference_nodes == "Single Node (xe8545 named, held none)"


def test_a_replica_elsewhere_is_named_and_fails_the_check() -> None:
    state = ray_state({"r1": "n2", "r2": "n3"}, {"r2": ["n3", "n3", "n3", "n3"]})
    placed = placement_from_state(state, "distinfer", MODEL, ["xe8545"], HOST_LABEL)
    assert not placed.ok and placed.served == ["xe8545", "r760xa"]
    assert placed.outside == ["replica r2 (its actor) runs on r760xa, not one of xe8545"]
    # A bundle of its placement group elsewhere counts too (STRICT_PACK keeps them together: a check).
    split = placement_from_state(
        ray_state({"r1": "n2"}, {"r1": ["n2", "n2", "n1", "n2"]}), "distinfer", MODEL, ["xe8545"], HOST_LABEL
    )
    assert split.outside == ["replica r1 (a bundle of its placement group) runs on xe9680, not one of xe8545"]
    # Without named hosts nothing is outside: where they ran is only recorded.
    assert placement_from_state(state, "distinfer", MODEL, [], HOST_LABEL).ok


def test_a_node_without_the_host_label_is_not_a_named_host() -> None:
    state = ray_state({"r1": "n2"})
    state["nodes"]["data"]["result"]["result"][1]["labels"] = {}
    placed = placement_from_state(state, "distinfer", MODEL, ["xe8545"], HOST_LABEL)
    assert not placed.ok and placed.unlabelled == ["10.0.0.2"]
    assert placed.outside == [
        f"replica r1 runs on a node without the {HOST_LABEL} label (10.0.0.2), not on xe8545"
    ]


def test_answers_that_do_not_say_are_refused() -> None:
    with pytest.raises(RayStateError, match="refused the actors query: too many"):
        placement_from_state(
            ray_state({"r1": "n2"}, actors={"result": False, "msg": "too many"}),
            "distinfer",
            MODEL,
            [],
            HOST_LABEL,
        )
    with pytest.raises(RayStateError, match=r"Serve runs no application 'other' \(applications: distinfer\)"):
        placement_from_state(ray_state({"r1": "n2"}), "other", MODEL, [], HOST_LABEL)
    with pytest.raises(RayStateError, match="has no deployment 'model-x'"):
        placement_from_state(ray_state({"r1": "n2"}), "distinfer", "model-x", [], HOST_LABEL)


def _placement_cli(tmp_path: Path, state: dict[str, Any], nodes: str) -> subprocess.CompletedProcess[str]:
    argv = [*DISTINFER, "bench", "placement", "--out", str(tmp_path), "--deployment", MODEL, "--nodes", nodes]
    return subprocess.run(argv, input=json.dumps(state), capture_output=True, text=True, timeout=120)


def test_bench_placement_writes_placement_json_and_exits_7_when_a_replica_is_elsewhere(
    tmp_path: Path,
) -> None:
    good = _placement_cli(tmp_path / "good", ray_state({"r1": "n2"}), "xe8545")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"placement: 1 replica(s) of {MODEL} on xe8545 (named: xe8545)"
    assert Placement.load_file(tmp_path / "good").served == ["xe8545"]  # type: ignore[union-attr]
    bad = _placement_cli(tmp_path / "bad", ray_state({"r1": "n1"}), "xe8545")
    assert bad.returncode == 7, bad.stderr
    assert "PLACEMENT: replica r1 (its actor) runs on xe9680, not one of xe8545" in bad.stderr
    assert not Placement.load_file(tmp_path / "bad").ok  # type: ignore[union-attr]  # kept, to see why
    none = _placement_cli(tmp_path / "none", ray_state({}), "xe8545")
    assert none.returncode == 7 and f"no replica of {MODEL} is running" in none.stderr
    broken = _placement_cli(tmp_path / "broken", {"serve": {}}, "")
    assert broken.returncode == 2 and "cannot tell where the replicas run" in broken.stderr


# ---- the report ---------------------------------------------------------------------------------


def test_the_report_has_node_rows_for_the_hosts_that_served_only(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios" / "one"
    spec = ScenarioSpec.model_validate(
        {"name": "one", "model": "m", "url": "http://127.0.0.1:1", "users": 4, "duration_s": 10,
         "replicas": 2, "meta": {"nodes": "node3"}}
    )  # fmt: skip
    spec.save_file(folder)
    (folder / "nodes").mkdir()
    for host in ("node1", "node2", "node3"):
        (folder / "nodes" / f"{host}.jsonl").write_text("")
    # Before placement.json existed (an older run, `bench run` by hand): every host recorded has a row.
    assert [r.host for r in node_rows(load_scenario(folder))] == ["node3", "node1", "node2"]
    state = ray_state({"r1": "n3", "r2": "n3"}, serve={"applications": {"distinfer": {"deployments": {"m": {
        "replicas": [{"replica_id": "r1", "state": "RUNNING", "actor_id": "a-r1"},
                     {"replica_id": "r2", "state": "RUNNING", "actor_id": "a-r2"}]}}}}})  # fmt: skip
    state["nodes"] = _answer([{"node_id": "n3", "node_ip": "10.0.0.3", "labels": {HOST_LABEL: "node3"}}])
    placement_from_state(state, "distinfer", "m", ["node3"], HOST_LABEL).save_file(folder)
    scenario = load_scenario(folder)
    assert scenario.served_nodes == ["node3"]
    assert [r.host for r in node_rows(scenario)] == ["node3"]
    assert scenario_row(scenario).inference_nodes == "Single Node" and scenario_row(scenario).nodes == "node3"
    run = Run(path=tmp_path, provenance=None, scenarios=[scenario])
    (entry,) = results_document(run)["scenarios"]
    assert entry["placement"]["served"] == ["node3"] and [n["host"] for n in entry["nodes_detail"]] == [
        "node3"
    ]
    text = " ".join(str(b) for b in node_section(run))
    assert "the hosts that held its model's replicas" in text and "(one: node1, node2)" in text, text


def test_a_host_that_served_but_recorded_nothing_is_still_a_row() -> None:
    placed = placement_from_state(ray_state({"r1": "n2"}), "distinfer", MODEL, ["xe8545"], HOST_LABEL)
    recorded = {"xe9680": NodeSamples(host="xe9680")}
    scenario = Scenario(
        name="s", spec=None, summary=None, nodes=recorded, listed_nodes=["xe8545"], placement=placed
    )
    (row,) = node_rows(scenario)
    assert row == node_row(scenario, "xe8545", None) and row.note.startswith("MISSING")
