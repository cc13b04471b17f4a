"""`playbooks/preflight.yml` rejects broken inventories before any change, naming host, variable and fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, poweredge_inventory, run_playbook, write_inventory, write_models

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
        ["distinfer_replicas", "llama-3", "llama-2-70b-chat"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_inventory_is_rejected_before_any_change(case: str, tmp_path: Path) -> None:
    breaker, expected = CASES[case]
    inventory = poweredge_inventory(write_models(tmp_path))
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


def test_guide_inventory_passes_and_derives_four_replicas(tmp_path: Path) -> None:
    inventory = poweredge_inventory(write_models(tmp_path))
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", inventory))
    assert run.returncode == 0, run.output[-3000:]
    assert run.total_changed() == 0
    # 8 + 4 + 4 GPUs at tensor parallel 4: the guide's 3-node scenario.
    assert "{'llama-2-70b-chat': 4}" in run.output


def test_two_node_scenario_gives_two_replicas(tmp_path: Path) -> None:
    inventory = poweredge_inventory(write_models(tmp_path))
    _host(inventory, "xe9680")["distinfer_gpu_count"] = 4  # the guide's 2-node / 8-GPU scenario
    del _cluster(inventory)["k3s_agent"]["hosts"]["r760xa"]
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", inventory))
    assert run.returncode == 0, run.output[-3000:]
    assert "{'llama-2-70b-chat': 2}" in run.output
