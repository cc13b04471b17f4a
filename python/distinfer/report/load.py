"""Read a results directory (see docs of `distinfer bench`): runs, scenarios and node samples."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class NodeSamples:
    host: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: Path | None = None


@dataclass
class Scenario:
    name: str
    spec: dict[str, Any]
    summary: dict[str, Any] | None
    nodes: dict[str, NodeSamples]
    listed_nodes: list[str]
    # host -> why it has no samples (nodes/<host>.error.json, written by the node_metrics role)
    node_errors: dict[str, str] = field(default_factory=dict)
    # The scenario's folder (records.jsonl is read from it for the latency distributions).
    folder: Path | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def metrics(self) -> dict[str, Any]:
        return (self.summary or {}).get("metrics", {})

    @property
    def meta(self) -> dict[str, str]:
        return dict(self.spec.get("meta") or {})

    @property
    def replicas(self) -> int | None:
        return self.spec.get("replicas") or _int(self.meta.get("replicas"))

    @property
    def users_per_replica(self) -> int | None:
        return self.spec.get("users_per_replica") or _int(self.meta.get("users_per_replica"))

    @property
    def window(self) -> tuple[float, float] | None:
        m = self.metrics
        return (m["window_start"], m["window_end"]) if m else None


@dataclass
class Run:
    path: Path
    provenance: dict[str, Any]
    scenarios: list[Scenario]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else None


def read_node_samples(path: Path) -> NodeSamples:
    node = NodeSamples(host=path.stem, source=path)
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a torn last line from a killed sampler
        kind = item.get("kind")
        if kind == "sample":
            node.samples.append(item)
        elif kind == "note":
            node.notes.append(str(item.get("message", "")))
        if item.get("host") and kind == "start":
            node.host = path.stem  # the file name is the inventory name the report joins on
    return node


def load_scenario(folder: Path) -> Scenario:
    spec = _read_json(folder / "scenario.json") or {"name": folder.name}
    summary = _read_json(folder / "summary.json")
    nodes = {}
    for path in sorted((folder / "nodes").glob("*.jsonl")):
        node = read_node_samples(path)
        nodes[node.host] = node
    errors = {}
    for path in sorted((folder / "nodes").glob("*.error.json")):
        data = _read_json(path) or {}
        host = str(data.get("host") or path.name.removesuffix(".error.json"))
        errors[host] = str(data.get("error") or "the host recorded no samples")
    meta = spec.get("meta") or {}
    listed = [n.strip() for n in str(meta.get("nodes", "")).split(",") if n.strip()]
    return Scenario(
        name=spec.get("name", folder.name),
        spec=spec,
        summary=summary,
        nodes=nodes,
        listed_nodes=listed,
        node_errors=errors,
        folder=folder,
    )


def load_run(path: Path) -> Run:
    scenarios_dir = path / "scenarios"
    if not scenarios_dir.is_dir():
        raise ValueError(
            f"{path} has no scenarios/ folder; pass a run directory (results/<run-id>) that "
            "`distinfer bench sweep` or `bench run --out results/<run-id>/scenarios/<name>` wrote"
        )
    scenarios = [load_scenario(f) for f in sorted(scenarios_dir.iterdir()) if f.is_dir()]
    if not scenarios:
        raise ValueError(f"{scenarios_dir} holds no scenario folders")
    return Run(path=path, provenance=_read_json(path / "run.json") or {}, scenarios=scenarios)
