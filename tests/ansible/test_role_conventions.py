"""The cluster roles keep the project's conventions (what ansible-lint does not check).

Every role has a README, argument specs that describe exactly its defaults, defaults prefixed with the
role's name; Helm releases go through one kubernetes.core.helm task with a pinned chart_version, and
no task shells out to helm or kubectl.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT

# Every role of the repository (13): a new role is held to the same conventions without a list to edit.
ROLES = tuple(sorted(spec.parents[1].name for spec in REPO_ROOT.glob("roles/*/meta/argument_specs.yml")))
SHELL_MODULES = ("ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.raw")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _tasks(node: Any) -> Iterator[dict[str, Any]]:
    """Every task of a task file, also inside block/rescue/always."""
    for task in node or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _role_tasks(role: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for folder in ("tasks", "handlers"):
        for path in sorted((REPO_ROOT / "roles" / role / folder).glob("**/*.yml")):
            for task in _tasks(_yaml(path)):
                yield path, task


def test_every_role_is_held_to_the_conventions() -> None:
    assert len(ROLES) == len(list((REPO_ROOT / "roles").iterdir())) == 13, ROLES


@pytest.mark.parametrize("role", ROLES)
def test_role_has_readme_and_argument_specs_matching_its_defaults(role: str) -> None:
    """Every default is prefixed and documented; what is documented without a default is an input of an
    entry point other than main (e.g. the `process` entry point's command) or is required."""
    root = REPO_ROOT / "roles" / role
    assert (root / "README.md").read_text().strip(), f"{role}: README.md is empty"
    defaults = _yaml(root / "defaults/main.yml") or {}
    unprefixed = [name for name in defaults if not name.startswith(f"{role}_")]
    assert not unprefixed, f"{role}: defaults not prefixed with '{role}_': {unprefixed}"
    specs = _yaml(root / "meta/argument_specs.yml")["argument_specs"]
    documented: set[str] = set()
    inputs: set[str] = set()
    for entry_point, entry in specs.items():
        for name, option in (entry.get("options") or {}).items():
            assert option.get("description"), f"{role}: argument spec {name} has no description"
            documented.add(name)
            if entry_point != "main" or option.get("required"):
                inputs.add(name)
    undocumented = sorted(set(defaults) - documented)
    assert not undocumented, f"{role}: defaults without a spec {undocumented}"
    undocumented_inputs = documented - set(defaults) - inputs
    assert not undocumented_inputs, f"{role}: specs without a default {sorted(undocumented_inputs)}"


@pytest.mark.parametrize("role", ROLES)
def test_no_task_shells_out_to_helm_or_kubectl(role: str) -> None:
    for path, task in _role_tasks(role):
        for module in SHELL_MODULES:
            if module in task:
                text = yaml.safe_dump(task[module])
                # the words, not a variable name such as helm_releases_*
                assert not re.search(r"\b(helm|kubectl)\b", text), f"{path}: {task.get('name')}"


def test_every_helm_release_pins_its_chart_version() -> None:
    """One kubernetes.core.helm task (the helm_releases role's loop) installs every release; each
    release's chart_version is a knob whose default is a version pinned in versions.yml."""
    releases = [
        (path, task["kubernetes.core.helm"])
        for role in ROLES
        for path, task in _role_tasks(role)
        if "kubernetes.core.helm" in task
    ]
    assert [path.relative_to(REPO_ROOT).as_posix() for path, _ in releases] == [
        "roles/helm_releases/tasks/install.yml"
    ], releases
    ((_, args),) = releases
    assert args["chart_version"] == "{{ helm_releases_release.chart_version }}"
    table = _yaml(REPO_ROOT / "roles/helm_releases/vars/main.yml")["helm_releases_all"]
    # GPU Operator, AMD device plugin, KubeRay operator, kube-prometheus-stack
    assert sorted(table) == ["amd_device_plugin", "gpu_operator", "kube_prometheus", "kuberay_operator"]
    defaults = _yaml(REPO_ROOT / "roles/helm_releases/defaults/main.yml")
    versions = _yaml(REPO_ROOT / "inventory/poweredge/group_vars/all/versions.yml")
    for name, release in table.items():
        knob = release["chart_version"].strip("{} ")
        variable = str(defaults.get(knob, "")).strip("{} ")
        assert variable in versions, f"{name}: chart_version {knob!r} is not pinned in versions.yml"


def test_k3s_restarts_only_through_handlers() -> None:
    """Only handlers restart K3s: a re-run with nothing changed restarts nothing."""
    for role in ("k3s_server", "k3s_agent"):
        for path, task in _role_tasks(role):
            service = task.get("ansible.builtin.systemd_service") or {}
            if service.get("state") == "restarted":
                assert path.parent.name == "handlers", f"{path}: {task.get('name')} restarts K3s"
