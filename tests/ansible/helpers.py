"""Run the repository's real playbooks against throwaway inventories on this machine.

Hosts use `ansible_connection: local`, so a play's facts are this machine's; inventories are
written to a temporary directory so each test states exactly the inventory it judges.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

LOCAL_HOST_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": str(VENV_BIN / "python"),
    "distinfer_node_iface": "lo",
}


def local_head_inventory(path: Path, cluster_vars: dict[str, Any]) -> Path:
    """An inventory of this machine alone as the Ray head (`local`, no workers), with `cluster_vars`."""
    host = {**LOCAL_HOST_VARS, "ansible_host": "127.0.0.1"}
    children = {"ray_head": {"hosts": {"local": host}}, "ray_workers": {"hosts": {}}}
    return write_inventory(
        path, {"all": {"children": {"ray_cluster": {"vars": cluster_vars, "children": children}}}}
    )


LLAMA_MODELS = {
    "models": [
        {
            "name": "llama-2-70b-chat",
            "engine": "vllm",
            "model": "meta-llama/Llama-2-70b-chat-hf",
            "tensor_parallel_size": 4,
            "dtype": "bfloat16",
        }
    ]
}


@dataclasses.dataclass(frozen=True)
class Run:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        return {
            m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
            for m in RECAP.finditer(self.output)
        }

    def total_changed(self) -> int:
        return sum(host["changed"] for host in self.recap().values())


def poweredge_inventory(models_file: Path | None = None) -> dict[str, Any]:
    """The guide's three servers as in inventory/poweredge, every host reached locally.

    With its shipped models file and scenarios file, unless `models_file` replaces the models file (the
    scenarios are then left out: the guide's name a model only the shipped file serves).
    """
    hosts = yaml.safe_load((REPO_ROOT / "inventory/poweredge/hosts.yml").read_text())
    group_vars: dict[str, Any] = {}
    for part in sorted((REPO_ROOT / "inventory/poweredge/group_vars/all").glob("*.yml")):
        group_vars.update(yaml.safe_load(part.read_text()) or {})
    group_vars.update(ray_service_hf_token="", distinfer_api_key="")
    if models_file is not None:
        group_vars.update(distinfer_models_file=str(models_file), distinfer_scenarios_file="")
    cluster = hosts["all"]["children"]["k3s_cluster"]["children"]
    for group in cluster.values():
        for name, host_vars in group["hosts"].items():
            host_vars.pop("ansible_host", None)
            host_vars.update(LOCAL_HOST_VARS)
            group["hosts"][name] = host_vars
    hosts["all"]["vars"] = group_vars
    return hosts


def local_connection_overlay(directory: Path, inventory: Path) -> Path:
    """Every host of a shipped inventory reached on this machine (connection local, NIC lo): with
    `-i inventory -i overlay`, only how Ansible reaches the hosts changes."""
    names = yaml.safe_load(
        subprocess.run(
            [str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list", "--yaml"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout
    )
    hosts: dict[str, Any] = {}

    def collect(group: dict[str, Any]) -> None:
        hosts.update({name: dict(LOCAL_HOST_VARS) for name in (group.get("hosts") or {})})
        for child in (group.get("children") or {}).values():
            collect(child)

    collect(names["all"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "local-connection.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    return path


def write_inventory(directory: Path, inventory: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(copy.deepcopy(inventory), sort_keys=False))
    return path


def write_models(directory: Path, models: dict[str, Any] | str = LLAMA_MODELS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "models.yaml"
    path.write_text(models if isinstance(models, str) else yaml.safe_dump(models, sort_keys=False))
    return path


def run_playbook(
    playbook: str,
    inventory: Path | list[Path],
    *,
    extra_vars: dict[str, Any] | None = None,
    check: bool = False,
    tags: str = "",
    timeout: float = 300,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Run:
    sources = inventory if isinstance(inventory, list) else [inventory]
    argv = [str(VENV_BIN / "ansible-playbook"), *[a for src in sources for a in ("-i", str(src))], playbook]
    argv += extra_args
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv.append("--check")
    if tags:
        argv += ["--tags", tags]
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        **(extra_env or {}),
    }
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


# The playbooks that render the roles' objects (`<role>_render_dir`), each with the tags it runs under.
RENDER_PLAYBOOKS = {
    "addons": ("playbooks/addons.yml", "gpu_operator,amd_device_plugin,kuberay_operator"),
    "ray_service": ("playbooks/ray_service.yml", ""),
    "monitoring": ("playbooks/kube_prometheus.yml", ""),
}


@dataclasses.dataclass(frozen=True)
class Render:
    out: Path
    inventory: Path
    extra_vars: dict[str, str]
    runs: dict[str, Run]

    @property
    def output(self) -> str:
        return "\n".join(run.output for run in self.runs.values())


def render_roles(
    tmp_path: Path,
    inventory: dict[str, Any],
    parts: tuple[str, ...] = ("addons", "ray_service"),
    *,
    extra_args: tuple[str, ...] = (),
) -> Render:
    """The roles' rendered objects, from the playbooks named in `parts` (each playbook run costs
    seconds here: a test renders only what it reads, and tests that read the same render share it)."""
    out = tmp_path / "render"
    extra = {f"{role}_render_dir": str(out) for role in ("ray_service", "helm_releases")}
    inv = write_inventory(tmp_path / "inv", inventory)
    runs = {}
    for part in parts:
        playbook, tags = RENDER_PLAYBOOKS[part]
        run = run_playbook(playbook, inv, extra_vars=extra, tags=tags, extra_args=extra_args)
        assert run.returncode == 0, run.output[-4000:]
        runs[part] = run
    return Render(out, inv, extra, runs)
