"""`distinfer plan`: the one place replicas, placement, the Serve config and the scenarios are worked out.

The guide's cluster (inventory/poweredge: 8 + 4 + 4 GPUs, Llama 2 70B at tensor parallel 4) with the
shipped models and scenarios files, then what the planner must refuse, each message naming the
inventory variable (or scenarios-file field), the value and the fix.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from distinfer.config import ConfigError, SyntheticModel
from distinfer.plan import Plan, PlanRequest, build_plan

REPO = Path(__file__).resolve().parents[2]
LLAMA = REPO / "files/models/llama2-70b-tp4.yaml"
GUIDE = REPO / "files/scenarios/guide.yaml"
LLAMA_NAME = "meta-llama/Llama-2-70b-chat-hf"
NVIDIA = {"gpu_vendor": "nvidia"}
POWEREDGE_HOSTS = [
    {"name": "xe9680", "address": "192.0.2.10", "gpus": 8, **NVIDIA, "gpu_model": "a100-sxm-80gb"},
    {"name": "xe8545", "address": "192.0.2.11", "gpus": 4, **NVIDIA, "gpu_model": "a100-sxm-80gb"},
    {"name": "r760xa", "address": "192.0.2.12", "gpus": 4, **NVIDIA, "gpu_model": "h100-pcie-80gb"},
]


def request(**changes: Any) -> PlanRequest:
    data: dict[str, Any] = {
        "platform": "kubernetes",
        "models_file": str(LLAMA),
        "hosts": POWEREDGE_HOSTS,
        "head": "xe9680",
        "scenarios_file": str(GUIDE),
    }
    data.update(changes)
    return PlanRequest.model_validate(data)


def deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    (app,) = config["applications"]
    return next(d for d in app["deployments"] if d["name"] == name)


def refused(req: PlanRequest) -> str:
    with pytest.raises(ConfigError) as err:
        build_plan(req)
    return str(err.value)


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_the_guides_cluster_gets_four_replicas_each_on_one_node() -> None:
    plan = build_plan(request())
    assert plan.replicas == {LLAMA_NAME: 4}
    model = deployment(plan.serve_config, "model-meta-llama_Llama-2-70b-chat-hf")
    assert model["num_replicas"] == 4
    assert model["placement_group_strategy"] == "STRICT_PACK"
    assert sum(b.get("GPU", 0) for b in model["placement_group_bundles"]) == 4
    assert plan.serve_config["http_options"] == {"host": "0.0.0.0", "port": 8000}  # the pods' serve port
    assert plan.endpoint == "http://192.0.2.10:30800"
    assert [(g.name, g.gpus, g.hosts) for g in plan.worker_groups] == [
        ("nvidia-a100-sxm-80gb-x8", 8, ["xe9680"]),
        ("nvidia-a100-sxm-80gb-x4", 4, ["xe8545"]),
        ("nvidia-h100-pcie-80gb-x4", 4, ["r760xa"]),
    ]


def test_each_node_gets_labels_and_each_worker_group_selects_by_them_not_by_host() -> None:
    """The K3s roles put `node_labels` on each node; a group's pods select `distinfer.io/worker-group`,
    so a host added to a kind changes the group's hosts (its replicas) but not its selector."""
    plan = build_plan(request())
    assert plan.node_labels["xe8545"] == {
        "distinfer.io/gpu-vendor": "nvidia",
        "distinfer.io/gpu-model": "a100-sxm-80gb",
        "distinfer.io/gpu-count": "4",
        "distinfer.io/worker-group": "nvidia-a100-sxm-80gb-x4",
    }
    for group in plan.worker_groups:
        assert group.node_selector == {"distinfer.io/worker-group": group.name}
        for host in group.hosts:
            assert plan.node_labels[host].items() >= group.node_selector.items()
    twin = {**POWEREDGE_HOSTS[1], "name": "xe8545-2", "address": "192.0.2.13"}
    grown = build_plan(request(hosts=[*POWEREDGE_HOSTS, twin]))
    assert [g.node_selector for g in grown.worker_groups] == [g.node_selector for g in plan.worker_groups]
    assert grown.worker_groups[1].hosts == ["xe8545", "xe8545-2"]
    cpu_only = {"name": "cpu1", "address": "192.0.2.14", "gpus": 0, "gpu_vendor": "none"}
    labels = build_plan(request(hosts=[*POWEREDGE_HOSTS, cpu_only])).node_labels["cpu1"]
    assert labels["distinfer.io/worker-group"] == "none" and labels["distinfer.io/gpu-count"] == "0"


def test_a_gpu_model_too_long_for_a_node_label_is_refused() -> None:
    long = {**POWEREDGE_HOSTS[2], "gpu_model": "h100-" + "x" * 70}
    message = refused(request(hosts=[*POWEREDGE_HOSTS[:2], long]))
    assert message.startswith("r760xa: distinfer_gpu_model")
    assert "63" in message and "hosts.yml" in message


def test_a_host_added_to_the_inventory_raises_the_replicas() -> None:
    grown = [*POWEREDGE_HOSTS, {"name": "r760xa-2", "address": "192.0.2.13", "gpus": 4, **NVIDIA}]
    assert build_plan(request(hosts=grown)).replicas == {LLAMA_NAME: 5}


def test_the_shipped_guide_scenarios_resolve_with_their_own_serve_configs() -> None:
    plan = build_plan(request())
    guide = yaml.safe_load(GUIDE.read_text())
    assert [s.name for s in plan.scenarios] == [s["name"] for s in guide["scenarios"]]
    for scenario, entry in zip(plan.scenarios, guide["scenarios"], strict=True):
        model = deployment(scenario.serve_config, "model-meta-llama_Llama-2-70b-chat-hf")
        assert model["num_replicas"] == entry["replicas"]
        # One model: its replicas serve HTTP themselves (layout `direct`) and their own gate holds the
        # cap; Serve is told twice cap + queue so that the gate, not Serve's proxy, answers the 503.
        cap = entry["users_per_replica"]
        app_entry = scenario.serve_config["applications"][0]["args"]["models"][0]
        queued = app_entry["max_queued_requests"]
        assert model["max_ongoing_requests"] == model["max_queued_requests"] == 2 * (cap + queued)
        assert scenario.users == entry["replicas"] * entry["users_per_replica"]
        assert scenario.spec["url"] == plan.endpoint and scenario.spec["model"] == LLAMA_NAME
        assert scenario.spec["meta"]["gpus"] == entry["meta"]["gpus"]  # the file's labels win
        (app,) = scenario.serve_config["applications"]
        # The cap is in the app's args too (vLLM's max_num_seqs follows it), the replicas are not.
        assert app["args"]["models"][0]["max_ongoing_requests"] == entry["users_per_replica"]
        assert "replicas" not in app["args"]["models"][0]


def test_overrides_and_a_selection_of_scenarios() -> None:
    plan = build_plan(
        request(
            scenario_overrides={"duration_s": 20, "warmup_s": 4, "max_tokens": 16},
            scenarios_only=["bs32-1node-1replica", "bs32-3nodes-4replicas"],
        )
    )
    assert [(s.name, s.duration_s, s.spec["max_tokens"]) for s in plan.scenarios] == [
        ("bs32-1node-1replica", 20, 16),
        ("bs32-3nodes-4replicas", 20, 16),
    ]
    assert "nope" in refused(request(scenarios_only=["nope"]))


def test_pinned_replicas_beyond_the_gpus_are_refused() -> None:
    message = refused(request(replicas={LLAMA_NAME: 5}))
    assert "distinfer_replicas asks 5" in message and "at most 4" in message, message


def test_replicas_pinned_under_the_gpus_are_kept() -> None:
    plan = build_plan(request(replicas={LLAMA_NAME: 2}, scenarios_file=None))
    assert plan.replicas == {LLAMA_NAME: 2} and plan.scenarios == []


def test_gpus_not_divisible_by_tensor_parallel_size_are_refused() -> None:
    hosts = [dict(POWEREDGE_HOSTS[0]), {**POWEREDGE_HOSTS[1], "gpus": 6}]
    message = refused(request(hosts=hosts))
    assert "xe8545" in message and "distinfer_gpu_count is 6" in message and "multiple of" in message


def test_a_scenario_asking_more_replicas_than_the_gpus_hold_is_refused(tmp_path: Path) -> None:
    sweep = {"scenarios": [{"name": "too-many", "replicas": 5, "users_per_replica": 8}]}
    message = refused(request(scenarios_file=write(tmp_path, "s.yaml", sweep)))
    assert "too-many" in message and "asks 5" in message, message


def test_users_per_replica_of_zero_is_refused_with_the_scenario_named(tmp_path: Path) -> None:
    sweep = {"scenarios": [{"name": "empty", "users_per_replica": 0}]}
    message = refused(request(scenarios_file=write(tmp_path, "s.yaml", sweep)))
    assert "users_per_replica" in message and "0" in message, message
    inline = refused(request(scenarios={"scenarios": [{"name": "empty", "users_per_replica": 0}]}))
    assert "distinfer_scenarios" in inline and "users_per_replica" in inline, inline


def test_a_cap_above_the_engines_max_num_seqs_is_refused(tmp_path: Path) -> None:
    models = yaml.safe_load(LLAMA.read_text())
    models["models"][0]["max_num_seqs"] = 32
    req = request(models_file=write(tmp_path, "m.yaml", models))
    message = refused(req)  # the guide's 256-per-replica scenarios
    assert "bs256-1node-1replica" in message and "max_num_seqs 32" in message, message
    assert "remove max_num_seqs" in message, message


def test_a_scenario_model_the_models_file_does_not_serve_is_refused(tmp_path: Path) -> None:
    sweep = {"defaults": {"model": "llama-2-70b-chat"}, "scenarios": [{"users_per_replica": 32}]}
    message = refused(request(scenarios_file=write(tmp_path, "s.yaml", sweep)))
    assert "llama-2-70b-chat" in message and LLAMA_NAME in message, message


def test_several_gpu_models_must_be_split_by_the_inventory(tmp_path: Path) -> None:
    models = yaml.safe_load(LLAMA.read_text())
    models["models"].append({**models["models"][0], "name": "second"})
    path = write(tmp_path, "m.yaml", models)
    assert "distinfer_replicas" in refused(request(models_file=path, scenarios_file=None))
    plan = build_plan(request(models_file=path, scenarios_file=None, replicas={LLAMA_NAME: 2, "second": 2}))
    assert plan.replicas == {LLAMA_NAME: 2, "second": 2}
    # 3 + 2 replicas of 4 GPUs do not fit on 16 GPUs.
    too_many = request(models_file=path, scenarios_file=None, replicas={LLAMA_NAME: 3, "second": 2})
    assert "fit" in refused(too_many)


def test_the_api_key_is_asked_exactly_when_the_inventory_sets_one(tmp_path: Path) -> None:
    plan = build_plan(request(api_key=True, scenarios_file=None))
    (app,) = plan.serve_config["applications"]
    assert plan.api_key_env == "DISTINFER_API_KEY" and app["args"]["api_key_env"] == "DISTINFER_API_KEY"
    (open_app,) = build_plan(request(scenarios_file=None)).serve_config["applications"]
    assert "api_key_env" not in open_app["args"]
    models = {**yaml.safe_load(LLAMA.read_text()), "api_key_env": "MY_KEY"}
    message = refused(request(models_file=write(tmp_path, "m.yaml", models), scenarios_file=None))
    assert "distinfer_api_key is empty" in message and "MY_KEY" in message, message


def test_a_rehearsal_stand_in_keeps_the_vllm_placement() -> None:
    plan = build_plan(request(engine_stand_in={"ttft_ms": 10, "itl_ms": 5}))
    (app,) = plan.serve_config["applications"]
    assert app["args"]["engine_stand_in"] == {"engine": "synthetic", "ttft_ms": 10.0, "itl_ms": 5.0}
    model = deployment(plan.serve_config, "model-meta-llama_Llama-2-70b-chat-hf")
    assert len(model["placement_group_bundles"]) == 4  # the vLLM replica's GPUs, kept
    assert all("engine_stand_in" in s.spec["meta"] for s in plan.scenarios)
    models = Plan.model_validate(plan.model_dump()).serve_config["applications"][0]["args"]
    from distinfer.config import parse_models

    parsed = parse_models(models)
    runs = parsed.engine_spec(parsed.models[0])
    assert isinstance(runs, SyntheticModel) and runs.itl_ms == 5.0 and runs.name == LLAMA_NAME
    assert parsed.engine_label(parsed.models[0]) == "synthetic (stand-in for vllm)"


def test_the_local_platform_gives_one_replica_per_slot() -> None:
    hosts = [
        {"name": "local", "address": "127.0.0.1"},
        {"name": "box2", "address": "10.0.0.2", "replica_slots": 2},
    ]
    plan = build_plan(
        PlanRequest.model_validate(
            {
                "platform": "local",
                "models_file": str(REPO / "files/models/smollm2.yaml"),
                "hosts": hosts,
                "head": "local",
                "scenarios_file": str(REPO / "files/scenarios/demo.yaml"),
            }
        )
    )
    assert plan.replicas == {"smollm2": 3}
    assert plan.endpoint == "http://127.0.0.1:24800" and plan.worker_groups == []
    assert [s.name for s in plan.scenarios] == ["2n-3r-2u", "2n-3r-8u"]


def test_the_cli_prints_the_plan_and_refuses_with_exit_2(tmp_path: Path) -> None:
    cli = REPO / ".venv/bin/distinfer"
    argv = [str(cli), "plan", "--request", "-"]
    ok = subprocess.run(argv, input=request().model_dump_json(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["replicas"] == {LLAMA_NAME: 4}
    bad = subprocess.run(
        argv,
        input=request(replicas={LLAMA_NAME: 9}).model_dump_json(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "distinfer_replicas asks 9" in bad.stderr, bad.stderr


def test_a_cap_below_an_explicit_max_num_seqs_is_refused_as_in_a_file(tmp_path: Path) -> None:
    models = yaml.safe_load(LLAMA.read_text())
    models["models"][0].update(max_num_seqs=256, max_ongoing_requests=256)
    message = refused(request(models_file=write(tmp_path, "m.yaml", models)))  # the guide's 32 per replica
    assert "bs32-1node-1replica" in message and "max_num_seqs=256 exceeds max_ongoing_requests=32" in message


def test_the_models_files_own_cap_above_max_num_seqs_is_refused(tmp_path: Path) -> None:
    models = yaml.safe_load(LLAMA.read_text())
    models["models"][0].update(max_num_seqs=16)
    message = refused(request(models_file=write(tmp_path, "m.yaml", models), scenarios_file=None))
    assert "max_ongoing_requests 32 is above the engine's max_num_seqs 16" in message, message


def test_capacity_searches_repeats_slos_and_the_certificate_rate_are_planned(tmp_path: Path) -> None:
    scenarios = {
        "defaults": {"duration_s": 60, "warmup_s": 10, "slo": "mlperf-llama2-70b"},
        "scenarios": [
            {"name": "load", "replicas": 2, "users_per_replica": 32, "repeat": 3},
            {"name": "cap", "replicas": 4, "users_per_replica": 32, "capacity": {"start_rate": 2}},
        ],
    }
    plan = build_plan(request(scenarios_file=write(tmp_path, "s.yaml", scenarios)))
    assert [(s.name, s.kind, s.folder, s.done_file) for s in plan.scenarios] == [
        ("load-rep1", "load", "scenarios/load-rep1", "summary.json"),
        ("load-rep2", "load", "scenarios/load-rep2", "summary.json"),
        ("load-rep3", "load", "scenarios/load-rep3", "summary.json"),
        ("cap", "capacity", "capacity/cap", "capacity.json"),
    ]
    assert [s.spec["repetition"] for s in plan.scenarios[:3]] == [
        {"of": "load", "index": i, "count": 3} for i in (1, 2, 3)
    ]
    assert plan.scenarios[0].serve_config == plan.scenarios[2].serve_config  # every run redeploys the same
    assert plan.scenarios[3].spec["slo"]["name"] == "mlperf-llama2-70b"
    assert plan.scenarios[3].spec["capacity"]["start_rate"] == 2
    # The self-test rate: the largest load scenario's users x 100 tokens/s (capacity searches aside).
    assert plan.certify_events_per_s == 64 * 100
    bad = {"defaults": {"duration_s": 60}, "scenarios": [{"name": "x", "replicas": 1, "capacity": {}}]}
    assert "a capacity search needs an SLO" in refused(request(scenarios_file=write(tmp_path, "b.yaml", bad)))
