"""What check mode hides and the docs promise, checked without running anything on a host (seconds).

- Every `notify` resolves to a handler loaded in its play (check mode never fires handlers, so a
  misnamed one only shows on a real install: k3s_agent once notified the server's handler).
- Every scenarios file is valid, and serves a model of a shipped models file.
- Every command and path the README and the role READMEs show exists: `distinfer ...` answers
  `--help`, files and folders are there, `make` targets are in the Makefile.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO_ROOT, VENV_BIN

from distinfer.config import load_models_file
from distinfer.results.scenario import read_sweep

PLAYBOOK_KEYS = ("ansible.builtin.import_playbook", "import_playbook")
INCLUDE_ROLE = ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role")
INCLUDE_TASKS = (
    "ansible.builtin.include_tasks",
    "ansible.builtin.import_tasks",
    "include_tasks",
    "import_tasks",
)
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "roles").glob("*/README.md"))]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def plays(playbook: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every play of a playbook, following import_playbook."""
    for entry in _yaml(playbook) or []:
        target = next((entry[k] for k in PLAYBOOK_KEYS if k in entry), None)
        if target is not None:
            yield from plays(playbook.parent / target)
        else:
            yield playbook, entry


def tasks_of(items: Any) -> Iterator[dict[str, Any]]:
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_of(task.get(key))


def role_tasks(role: str, entry: str = "main.yml", seen: set[Path] | None = None) -> Iterator[dict[str, Any]]:
    """A role's tasks from one entry point, following include_tasks/import_tasks within the role."""
    seen = set() if seen is None else seen
    path = REPO_ROOT / "roles" / role / "tasks" / entry
    if path in seen or not path.exists():
        return
    seen.add(path)
    for task in tasks_of(_yaml(path)):
        yield task
        for key in INCLUDE_TASKS:
            if key in task:
                target = task[key] if isinstance(task[key], str) else task[key].get("file", "")
                if "{{" not in target:
                    yield from role_tasks(role, target, seen)


def roles_of_play(play: dict[str, Any]) -> set[str]:
    """The roles whose handlers a play loads: its roles and every role they include by name."""
    found: set[str] = set()
    todo = [r if isinstance(r, str) else r["role"] for r in play.get("roles", [])]
    todo += [t[k]["name"] for t in tasks_of(play.get("tasks")) for k in INCLUDE_ROLE if k in t]
    while todo:
        role = todo.pop()
        if role in found or "{{" in role:
            continue
        found.add(role)
        for folder in ("tasks", "handlers"):
            for path in (REPO_ROOT / "roles" / role / folder).glob("*.yml"):
                todo += [t[k]["name"] for t in tasks_of(_yaml(path)) for k in INCLUDE_ROLE if k in t]
    return found


def handler_names(role: str) -> set[str]:
    path = REPO_ROOT / "roles" / role / "handlers" / "main.yml"
    names: set[str] = set()
    for handler in tasks_of(_yaml(path) if path.exists() else []):
        names.add(handler.get("name", ""))
        listen = handler.get("listen", [])
        names.update([listen] if isinstance(listen, str) else listen)
    return names


def notifies(role: str) -> Iterator[tuple[str, str]]:
    for path in sorted((REPO_ROOT / "roles" / role / "tasks").glob("*.yml")):
        for task in tasks_of(_yaml(path)):
            notify = task.get("notify", [])
            for name in [notify] if isinstance(notify, str) else notify:
                yield f"{path.relative_to(REPO_ROOT)}: {task.get('name')}", name


PLAYBOOKS = [REPO_ROOT / "site.yml", *sorted((REPO_ROOT / "playbooks").glob("*.yml"))]


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_every_notify_resolves_to_a_handler_loaded_in_its_play(playbook: Path) -> None:
    for source, play in plays(playbook):
        roles = roles_of_play(play)
        loaded = set().union(*(handler_names(r) for r in roles)) if roles else set()
        loaded |= {h.get("name", "") for h in tasks_of(play.get("handlers"))}
        for role in roles:
            for where, name in notifies(role):
                assert name in loaded, (
                    f"{where} notifies {name!r}, but play {play.get('name')!r} ({source.name}) loads "
                    f"only the handlers {sorted(loaded)}"
                )


def test_the_notify_check_sees_a_handler_of_another_role() -> None:
    """The check itself: the agent play with a server handler's name is caught."""
    agent_play = {"name": "agents", "roles": ["k3s_agent"]}
    loaded = set().union(*(handler_names(r) for r in roles_of_play(agent_play)))
    assert "k3s_agent restart" in loaded and "k3s_server restart" not in loaded


SCENARIO_FILES = sorted((REPO_ROOT / "files" / "scenarios").glob("*.yaml"))
MODEL_NAMES = {
    m.name for path in (REPO_ROOT / "files/models").glob("*.yaml") for m in load_models_file(path).models
}


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_every_scenarios_file_is_valid_and_names_a_served_model(path: Path) -> None:
    sweep = read_sweep(path)
    models = {str(e.get("model", "")) for e in sweep.entries({})} - {""}
    assert models <= MODEL_NAMES, (
        f"{path.name} asks for {models - MODEL_NAMES}, served by no files/models/*.yaml"
    )


def _backticked(path: Path) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", path.read_text()))


PATH_ROOTS = (
    "files/",
    "roles/",
    "playbooks/",
    "inventory/",
    "tests/",
    "benchmarks/",
    "python/",
    "scripts/",
    "docs/",
)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_path_a_readme_shows_exists(doc: Path) -> None:
    missing = []
    for text in _backticked(doc):
        for word in text.split():
            word = word.strip("\"',;:()")
            if not word.startswith(PATH_ROOTS) or "<" in word or "*" in word or "{{" in word:
                continue
            if not (REPO_ROOT / word.split("#")[0]).exists():
                missing.append(word)
    assert not missing, f"{doc.relative_to(REPO_ROOT)} shows paths that do not exist: {missing}"


def _distinfer_commands() -> set[tuple[str, ...]]:
    commands = set()
    for doc in DOCS:
        for text in _backticked(doc):
            words = text.split()
            if words and words[0] == "distinfer":
                sub = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w)]
                commands.add(
                    tuple(sub[:2] if sub[:1] in (["bench"], ["nodemetrics"], ["model"]) else sub[:1])
                )
    return commands


@pytest.mark.parametrize("command", sorted(_distinfer_commands()), ids=lambda c: " ".join(c) or "distinfer")
def test_every_distinfer_command_a_readme_shows_answers_help(command: tuple[str, ...]) -> None:
    argv = [str(VENV_BIN / "distinfer"), *command, "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"`distinfer {' '.join(command)} --help` failed: {proc.stderr[-500:]}"


def test_every_make_target_the_readme_shows_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO_ROOT / "Makefile").read_text(), re.M))
    shown = {m for doc in DOCS for m in re.findall(r"`make ([a-z-]+)", doc.read_text())}
    assert shown and shown <= targets, f"README shows make targets {shown - targets} the Makefile lacks"


PLAY_HOSTS = re.compile(r"^\s+play #\d+ \([^)]*\): (.+?)\tTAGS.*\n\s+pattern: .*\n\s+hosts \((\d+)\)", re.M)


def test_every_play_of_site_yml_has_hosts_in_the_shipped_cluster_inventory() -> None:
    """`ansible-playbook -i inventory/poweredge site.yml --list-hosts`: no play matches zero hosts (the
    benchmark once targeted a group the cluster inventory does not have, and was silently skipped)."""
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "inventory/poweredge", "site.yml", "--list-hosts"]
    out = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    counts = PLAY_HOSTS.findall(out)
    assert len(counts) == len(list(plays(REPO_ROOT / "site.yml"))), out
    empty = [name for name, count in counts if int(count) == 0]
    assert not empty, f"plays with no hosts on inventory/poweredge: {empty}\n{out}"


def test_make_demo_passes_args_to_the_playbook() -> None:
    proc = subprocess.run(
        ["make", "-n", "demo", "ARGS=-e distinfer_local_model=tiny"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "scripts/demo.sh -e distinfer_local_model=tiny" in proc.stdout, proc.stdout


SHIPPED_INVENTORY_VARS = sorted((REPO_ROOT / "inventory").glob("*/group_vars/**/*.yml"))


def _dict_keys_read(role: Path, variable: str) -> set[str]:
    """Every `variable.key` the role's YAML reads (not a method call such as `.items()`)."""
    pattern = re.compile(rf"\b{re.escape(variable)}\.(\w+)\b(?!\()")
    return {m[1] for path in role.rglob("*.yml") for m in pattern.finditer(path.read_text())}


@pytest.mark.parametrize("path", SHIPPED_INVENTORY_VARS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_shipped_inventory_that_sets_a_roles_dict_whole_keeps_every_key_the_role_reads(path: Path) -> None:
    """An inventory that sets a dict variable replaces the role's default whole: every key the role
    reads must still be in it (make demo once failed on a key added to the default only)."""
    values = _yaml(path) or {}
    for variable, value in values.items():
        roles = [r for r in (REPO_ROOT / "roles").iterdir() if variable.startswith(r.name + "_")]
        if not isinstance(value, dict) or not roles:
            continue
        owner = max(roles, key=lambda r: len(r.name))
        missing = _dict_keys_read(owner, variable) - set(value)
        assert not missing, f"{path}: {variable} lacks {sorted(missing)}, which roles/{owner.name} reads"


def _tasks(node: Any) -> Iterator[dict[str, Any]]:
    """Every task dict in a tasks file or play, blocks and their rescue/always included."""
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks"):
            if key in node:
                yield from _tasks(node[key])


def _process_names(node: Any) -> set[str]:
    """The long-running processes a task list names: `distinfer_process: {name: ...}` and the process
    role's `process_name` (its own template `{{ process_name }}` left out), plain or looped over."""
    names: set[str] = set()
    for task in _tasks(node):
        module = task.get("distinfer_process")
        if isinstance(module, dict) and isinstance(module.get("name"), str):
            names.add(module["name"])
        for value in (task.get("vars") or {}, task):
            if isinstance(value.get("process_name"), str):
                names.add(value["process_name"])
        for item in task.get("loop") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                names.add(item["name"])
    return {n for n in names if "{{" not in n}


def test_reset_stops_every_process_a_role_starts() -> None:
    """A process the roles start and reset.yml does not stop would outlive a reset (issue 24's load
    hosts' workers were one); reset.yml's stops are only exercised on the local platform's hosts."""
    started = set()
    for path in sorted((REPO_ROOT / "roles").glob("*/tasks/*.yml")):
        started |= _process_names(_yaml(path))
    stopped = _process_names(_yaml(REPO_ROOT / "playbooks" / "reset.yml"))
    assert started >= {"distinfer-ray", "distinfer-loadgen", "distinfer-prometheus"}, started
    missing = started - stopped
    assert missing == set(), f"started by a role, never stopped by playbooks/reset.yml: {missing}"
