"""`playbooks/preflight.yml` rejects broken inventories before any change, naming host, variable and fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    LLAMA_MODELS,
    REPO_ROOT,
    local_connection_overlay,
    poweredge_inventory,
    run_playbook,
    write_inventory,
    write_models,
)

MODEL = "meta-llama/Llama-2-70b-chat-hf"  # as files/models/llama2-70b-tp4.yaml serves it

Inventory = dict[str, Any]


def _cluster(inv: Inventory) -> dict[str, Any]:
    return inv["all"]["children"]["k3s_cluster"]["children"]


def _host(inv: Inventory, name: str) -> dict[str, Any]:
    for group in _cluster(inv).values():
        if name in group["hosts"]:
            return group["hosts"][name]
    raise KeyError(name)


def no_server(inv: Inventory) -> None:
    _cluster(inv)["k3s_server"]["hosts"] = {}


def gpus_not_divisible(inv: Inventory) -> None:
    _host(inv, "xe8545")["distinfer_gpu_count"] = 6


def unknown_vendor(inv: Inventory) -> None:
    _host(inv, "r760xa")["distinfer_gpu_vendor"] = "intel"


def missing_nic(inv: Inventory) -> None:
    _host(inv, "xe8545")["distinfer_node_iface"] = "ens9f9np9"


def unpinned_k3s(inv: Inventory) -> None:
    inv["all"]["vars"]["k3s_version"] = "latest"


def unpinned_image(inv: Inventory) -> None:
    inv["all"]["vars"]["ray_service_images"]["nvidia"] = "rayproject/ray-llm:latest"


def unsupported_os(inv: Inventory) -> None:
    inv["all"]["vars"]["preflight_supported_os"] = ["Ubuntu 22.04"]  # this machine runs something else


def bad_platform(inv: Inventory) -> None:
    inv["all"]["vars"]["distinfer_platform"] = "slurm"


def incomplete_airgap_dir(inv: Inventory) -> None:
    # A directory on the control machine that exists but lacks the images tarball.
    inv["all"]["vars"]["k3s_agent_airgap_dir"] = str(REPO_ROOT / "roles/k3s_agent")


def missing_helm_archive(inv: Inventory) -> None:
    inv["all"]["vars"]["helm_archive"] = "/nonexistent/helm.tar.gz"


def unknown_replica_override(inv: Inventory) -> None:
    inv["all"]["vars"]["distinfer_replicas"] = {"llama-3": 2}


def server_and_agent(inv: Inventory) -> None:
    _cluster(inv)["k3s_server"]["hosts"]["xe8545"] = _host(inv, "xe8545")


def more_replicas_than_gpus(inv: Inventory) -> None:
    inv["all"]["vars"]["distinfer_replicas"] = {MODEL: 5}  # 8 + 4 + 4 GPUs hold 4 at TP 4


def zero_users_per_replica(inv: Inventory) -> None:
    inv["all"]["vars"]["distinfer_scenarios"] = {"scenarios": [{"name": "empty", "users_per_replica": 0}]}


def scenario_model_not_served(inv: Inventory) -> None:
    inv["all"]["vars"]["distinfer_scenarios"] = {
        "defaults": {"model": "llama-2-70b-chat"},
        "scenarios": [{"users_per_replica": 32}],
    }


def more_replicas_than_the_named_nodes_hold(inv: Inventory) -> None:
    # xe8545's 4 GPUs hold one TP4 replica; the whole inventory (16 GPUs) would hold 4.
    inv["all"]["vars"]["distinfer_scenarios"] = {
        "defaults": {"duration_s": 10},
        "scenarios": [{"name": "one-node", "replicas": 2, "users_per_replica": 4, "nodes": ["xe8545"]}],
    }


def incremental_upgrade(inv: Inventory) -> None:
    # KubeRay 1.5's strategy (Gateway API); the pinned 1.4.2 would refuse the RayService at apply time.
    inv["all"]["vars"]["ray_service_upgrade_strategy"] = "NewClusterWithIncrementalUpgrade"


def upgrade_strategy_lower_case(inv: Inventory) -> None:
    inv["all"]["vars"]["ray_service_upgrade_strategy"] = "newcluster"


def load_host_that_serves(inv: Inventory) -> None:
    inv["all"]["children"]["loadgen"] = {"hosts": {"xe8545": None}}


CASES: dict[str, tuple[Callable[[Inventory], None], list[str]]] = {
    "no server": (no_server, ["k3s_server", "at least one host"]),
    "GPUs not divisible by TP": (gpus_not_divisible, ["xe8545", "distinfer_gpu_count is 6", "multiple of"]),
    "unknown vendor": (unknown_vendor, ["r760xa", "distinfer_gpu_vendor", "intel", "nvidia, amd, none"]),
    "missing NIC": (missing_nic, ["xe8545", "distinfer_node_iface", "ens9f9np9", "lo"]),
    "unpinned K3s": (unpinned_k3s, ["k3s_version", "latest", "versions.yml"]),
    "unpinned image": (unpinned_image, ["ray_service_images.nvidia", "pin an image tag"]),
    "unsupported OS": (unsupported_os, ["xe9680", "operating system", "Ubuntu 22.04"]),
    "unknown platform": (bad_platform, ["distinfer_platform", "slurm", "kubernetes, local"]),
    "air-gap dir incomplete": (
        incomplete_airgap_dir,
        [
            "k3s_agent_airgap_dir",
            "k3s-airgap-images-amd64.tar.zst is missing",
            "leave k3s_agent_airgap_dir empty",
        ],
    ),
    "helm archive missing": (
        missing_helm_archive,
        ["helm_archive", "/nonexistent/helm.tar.gz", "get.helm.sh"],
    ),
    "unknown replica override": (
        unknown_replica_override,
        ["distinfer_replicas", "llama-3", MODEL],
    ),
    "server and agent": (server_and_agent, ["xe8545", "both k3s_server and k3s_agent", "remove it from"]),
    "replicas beyond the GPUs": (more_replicas_than_gpus, ["distinfer_replicas asks 5", "at most 4"]),
    "users per replica 0": (zero_users_per_replica, ["'empty'", "users_per_replica", "(got 0)", ">= 1"]),
    "scenario model not served": (scenario_model_not_served, ["llama-2-70b-chat", MODEL, "set its model"]),
    "replicas beyond the scenario's nodes": (
        more_replicas_than_the_named_nodes_hold,
        ["scenario 'one-node' asks 2 replica(s)", "2 x 4 = 8 GPUs", "xe8545 (4 GPUs) hold 1", "more hosts"],
    ),
    "upgrade strategy of a later KubeRay": (
        incremental_upgrade,
        ["ray_service_upgrade_strategy", "NewClusterWithIncrementalUpgrade", "None and NewCluster"],
    ),
    "load host that serves": (
        load_host_that_serves,
        [
            "inventory group loadgen lists xe8545, which also serve the model",
            "List machines that do not serve",
        ],
    ),
    "upgrade strategy misspelt": (
        upgrade_strategy_lower_case,
        ["ray_service_upgrade_strategy", '"newcluster"', "case matters", "platform.yml"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_inventory_is_rejected_before_any_change(case: str, tmp_path: Path) -> None:
    breaker, expected = CASES[case]
    inventory = poweredge_inventory()
    breaker(inventory)
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", inventory))
    assert run.returncode != 0, run.output[-3000:]
    assert run.total_changed() == 0, run.output[-3000:]
    for text in expected:
        assert text in run.output, f"{text!r} missing from the preflight failure:\n{run.output[-3000:]}"


def test_bad_models_file_is_rejected_with_the_applications_message(tmp_path: Path) -> None:
    models = write_models(
        tmp_path, "models:\n  - name: x\n    engine: vllm\n    model: m\n    tensor_parallel_size: 0\n"
    )
    run = run_playbook(
        "playbooks/preflight.yml", write_inventory(tmp_path / "inv", poweredge_inventory(models))
    )
    assert run.returncode != 0
    assert "distinfer_models_file" in run.output and "tensor_parallel_size" in run.output, run.output[-3000:]


def test_missing_models_file_is_rejected(tmp_path: Path) -> None:
    inventory = poweredge_inventory(tmp_path / "nope.yaml")
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", inventory))
    assert run.returncode != 0
    assert "nope.yaml" in run.output and "distinfer_models_file" in run.output


def test_a_cap_above_the_engines_max_num_seqs_is_rejected(tmp_path: Path) -> None:
    models = yaml.safe_load((REPO_ROOT / "files/models/llama2-70b-tp4.yaml").read_text())
    models["models"][0]["max_num_seqs"] = 32
    inventory = poweredge_inventory(write_models(tmp_path, models))
    inventory["all"]["vars"]["distinfer_scenarios_file"] = "files/scenarios/guide.yaml"
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", inventory))
    assert run.returncode != 0 and run.total_changed() == 0, run.output[-3000:]
    for text in ("bs256-1node-1replica", "users_per_replica 256", "max_num_seqs 32", "remove max_num_seqs"):
        assert text in run.output, run.output[-3000:]


def test_a_token_written_in_plain_text_is_warned_about_and_never_shown(tmp_path: Path) -> None:
    token = "hf_" + "Qx7" * 12
    inventory = poweredge_inventory()
    inventory["all"]["vars"]["ray_service_hf_token"] = token
    path = write_inventory(tmp_path / "inv", inventory)
    run = run_playbook("playbooks/preflight.yml", path)
    assert run.returncode == 0, run.output[-3000:]
    assert "WARNING" in run.output and str(path) in run.output, run.output[-3000:]
    assert token not in run.output and token[3:20] not in run.output


def test_the_shipped_inventory_passes_as_it_is_and_plans_the_guides_matrix(tmp_path: Path) -> None:
    """inventory/poweredge exactly as shipped (its models file, the guide's scenarios, the secrets read
    from the environment); only how Ansible reaches the hosts changes."""
    inventory = REPO_ROOT / "inventory/poweredge"
    overlay = local_connection_overlay(tmp_path, inventory)
    run = run_playbook("playbooks/preflight.yml", [inventory, overlay], extra_env={"HF_TOKEN": ""})
    assert run.returncode == 0, run.output[-3000:]
    assert run.total_changed() == 0
    assert f"replicas per model: {{'{MODEL}': 4}}" in run.output, run.output[-3000:]  # 8 + 4 + 4 GPUs at TP 4
    guide = yaml.safe_load((REPO_ROOT / "files/scenarios/guide.yaml").read_text())
    assert "scenarios: " + ", ".join(s["name"] for s in guide["scenarios"]) in run.output, run.output[-3000:]
    assert "WARNING" not in run.output  # the shipped inventory holds no secret


def test_the_shipped_local_inventory_passes_as_it_is(tmp_path: Path) -> None:
    run = run_playbook("playbooks/preflight.yml", REPO_ROOT / "inventory/local")
    assert run.returncode == 0, run.output[-3000:]
    assert "replicas per model: {'smollm2': 1}" in run.output, run.output[-3000:]
    assert "scenarios: 1n-1r-2u, 1n-1r-8u" in run.output, run.output[-3000:]
    assert "Skipping" not in run.output, "something inside inventory/local is not an inventory source"


def test_two_node_scenario_gives_two_replicas(tmp_path: Path) -> None:
    inventory = poweredge_inventory()
    _host(inventory, "xe9680")["distinfer_gpu_count"] = 4  # the guide's 2-node / 8-GPU scenario
    del _cluster(inventory)["k3s_agent"]["hosts"]["r760xa"]
    inventory["all"]["vars"]["distinfer_scenarios_file"] = ""  # the guide's matrix needs 4 replicas
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", inventory))
    assert run.returncode == 0, run.output[-3000:]
    assert f"{{'{MODEL}': 2}}" in run.output


def test_a_models_file_of_its_own_is_planned_too(tmp_path: Path) -> None:
    run = run_playbook(
        "playbooks/preflight.yml",
        write_inventory(tmp_path / "inv", poweredge_inventory(write_models(tmp_path, LLAMA_MODELS))),
    )
    assert run.returncode == 0, run.output[-3000:]
    assert "{'llama-2-70b-chat': 4}" in run.output
