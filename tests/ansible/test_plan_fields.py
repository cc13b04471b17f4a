"""Every `distinfer_plan.<field>` the Ansible side reads exists on the plan model (seconds, no host).

The preflight role sets the fact `distinfer_plan` from `distinfer plan` (python/distinfer/plan.py,
the pydantic `Plan`); the roles, playbooks and templates only read it. A field renamed or dropped in
the model would otherwise show only as an undefined variable on a real install. Nested paths
(`distinfer_plan.worker_groups.0.hosts`) are walked through the nested models; below a free-form
field (`serve_config`, a dict of anything) any path is accepted.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT
from pydantic import BaseModel

from distinfer.plan import Plan

# `distinfer_plan.a.b` and `distinfer_plan['a']['b']`.
PLAN_PATH = re.compile(r"\bdistinfer_plan((?:\.[A-Za-z_]\w*|\.\d+|\[['\"]\w+['\"]\]|\[\d+\])+)")
SEGMENT = re.compile(r"\.(\w+)|\[['\"]?(\w+)['\"]?\]")
SOURCES = sorted(
    [
        REPO_ROOT / "site.yml",
        *(REPO_ROOT / "playbooks").glob("*.yml"),
        *(REPO_ROOT / "roles").glob("**/*.yml"),
        *(REPO_ROOT / "roles").glob("**/*.j2"),
    ]
)


def _members(annotation: Any) -> list[Any]:
    """The types an annotation allows (`X | None` -> [X, None])."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def missing_part(path: list[str], annotation: Any = Plan) -> str | None:
    """The first segment of `path` the annotation does not have, or None when the path exists."""
    if not path:
        return None
    head, rest = path[0], path[1:]
    found = head
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if member is Any or member is dict or origin is dict:
            return None  # free-form: anything below
        below: Any = None
        if origin in (list, tuple) and head.isdigit():
            below = typing.get_args(member)[0]
        elif isinstance(member, type) and issubclass(member, BaseModel) and head in member.model_fields:
            below = member.model_fields[head].annotation
        else:
            continue
        found = missing_part(rest, below)
        if found is None:
            return None
    return found


def plan_paths(text: str) -> list[list[str]]:
    return [[a or b for a, b in SEGMENT.findall(match.group(1))] for match in PLAN_PATH.finditer(text)]


def _reads() -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(REPO_ROOT)), ".".join(parts))
        for path in SOURCES
        for parts in plan_paths(path.read_text())
    ]


def test_the_ansible_side_reads_the_plan() -> None:
    fields = {read.split(".")[0] for _, read in _reads()}
    assert {"head", "endpoint", "serve_config", "scenarios", "worker_groups", "prometheus_url"} <= fields


@pytest.mark.parametrize("source", sorted({s for s, _ in _reads()}))
def test_every_plan_field_a_role_reads_is_on_the_plan_model(source: str) -> None:
    unknown = [
        f"distinfer_plan.{read} (no {missing_part(read.split('.'))!r})"
        for where, read in _reads()
        if where == source and missing_part(read.split(".")) is not None
    ]
    assert not unknown, f"{source} reads what python/distinfer/plan.py's Plan does not have: {unknown}"


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("{{ distinfer_plan.endpoint }}", None),
        ("{{ distinfer_plan.worker_groups.0.hosts }}", None),
        ("{{ distinfer_plan['scenarios'][0]['serve_config'].applications }}", None),
        ("{{ distinfer_plan.serve_config.applications }}", None),  # free-form below serve_config
        ("{{ distinfer_plan.prometheus_url_typo }}", "prometheus_url_typo"),
        ("{{ distinfer_plan.worker_groups.0.gpu_count }}", "gpu_count"),
        ("{{ distinfer_plan.endpoint.host }}", "host"),  # a string has no fields
    ],
)
def test_the_check_tells_a_made_up_field(text: str, missing: str | None) -> None:
    (path,) = plan_paths(text)
    assert missing_part(path) == missing


def test_sources_are_the_roles_playbooks_and_templates() -> None:
    names = {Path(s).name for s in map(str, SOURCES)}
    assert {"site.yml", "addons.yml", "rayservice.yaml.j2"} <= names
