"""The layers of python/distinfer (docs/architecture.md) kept true: every module parsed with `ast`, its
imports read wherever they stand (module level, inside a function, under TYPE_CHECKING), and the
test fails on an import that goes upward or sideways where the picture forbids it, and on any
import circle among distinfer's modules. And `distinfer plan` (run by preflight on the control
machine) loads none of the load driver."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import distinfer

PACKAGE = Path(distinfer.__file__).resolve().parent
ROOT = PACKAGE.parent

# What each layer may not import (a module of the layer -> a module under any of these prefixes).
FORBIDDEN = {
    "distinfer.results": ("distinfer.bench", "distinfer.report", "distinfer.plan", "distinfer.capacity_plan",
                          "distinfer.cli", "distinfer.serve", "distinfer.engines", "distinfer.models",
                          "distinfer.nodemetrics", "distinfer.chat", "distinfer.dashboards"),
    "distinfer.bench": ("distinfer.report", "distinfer.plan", "distinfer.capacity_plan"),
    "distinfer.report": ("distinfer.bench",),
    "distinfer.plan": ("distinfer.bench", "distinfer.report"),
    "distinfer.airgap": ("distinfer.bench", "distinfer.report", "distinfer.plan"),
    "distinfer.capacity_plan": ("distinfer.bench", "distinfer.report"),
    "distinfer.config": ("distinfer.results", "distinfer.bench", "distinfer.report", "distinfer.plan",
                         "distinfer.capacity_plan", "distinfer.serve"),
    "distinfer.errors": ("distinfer.",),
}  # fmt: skip
# The serving side and the tools beside it stand on config alone (the node recorder may also read the
# results schema of its own lines, results.nodes).
DRIVERS_AND_READERS = ("distinfer.bench", "distinfer.report", "distinfer.plan", "distinfer.capacity_plan")
for _side in ("serve", "engines", "models", "chat", "dashboards"):
    FORBIDDEN[f"distinfer.{_side}"] = (*DRIVERS_AND_READERS, "distinfer.results")
FORBIDDEN["distinfer.engines"] += ("distinfer.serve",)  # the engines run inside serve, never the reverse
FORBIDDEN["distinfer.nodemetrics"] = DRIVERS_AND_READERS


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every distinfer module `module` imports, anywhere in its file, with the line: `from a.b import c`
    is a.b.c where that is a module, else a.b."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "distinfer" or target.startswith("distinfer."):
                yield target, node.lineno


GRAPH = {m: sorted(set(imported(m, p))) for m, p in MODULES.items()}


def within(module: str, prefix: str) -> bool:
    return module == prefix.rstrip(".") or module.startswith(prefix if prefix.endswith(".") else prefix + ".")


def test_no_module_imports_a_layer_it_stands_under() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        for layer, forbidden in FORBIDDEN.items():
            if not within(module, layer):
                continue
            for target, line in targets:
                if any(within(target, f) for f in forbidden):
                    wrong.append(f"{MODULES[module].relative_to(ROOT.parent)}:{line}: {module} -> {target}")
    assert not wrong, "imports against the layers (docs/architecture.md):\n" + "\n".join(wrong)


def test_results_stand_on_config_and_errors_only() -> None:
    allowed = ("distinfer.results", "distinfer.config", "distinfer.errors")
    wrong = [
        f"{module} -> {target} (line {line})"
        for module, targets in GRAPH.items()
        if within(module, "distinfer.results")
        for target, line in targets
        if target != "distinfer" and not any(within(target, a) for a in allowed)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    edges = {m: sorted({t for t, _ in targets if t in MODULES and t != m}) for m, targets in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_graph_sees_lazy_imports() -> None:
    """The parser reads imports inside functions too (the guard against a circle hidden in one)."""
    lazy = {t for t, _ in GRAPH["distinfer.bench.cli"]}
    assert "distinfer.bench.runner" in lazy and "distinfer.bench.sweep" in lazy


@pytest.mark.parametrize("module", ["distinfer.plan", "distinfer.capacity_plan"])
def test_the_plan_loads_none_of_the_load_driver(module: str) -> None:
    loaded = "sorted(m for m in sys.modules if m.startswith(('distinfer.bench', 'distinfer.report', 'rich')))"
    code = f"import sys, {module}; print({loaded})"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]", result.stdout
