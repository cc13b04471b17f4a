"""Read a results directory (see docs of `distinfer bench`): runs, scenarios and node samples."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distinfer.bench.capacity import RESULT_FILE, CapacityResult
from distinfer.bench.fidelity import Certificate, read_certificate

log = logging.getLogger(__name__)


@dataclass
class NodeSamples:
    host: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: Path | None = None
    cpu_count: int | None = None  # from the recorder's start line


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
    # `distinfer report --slo`: {"slo", "slo_result"} judged again from the records, over the summary's.
    slo_override: dict[str, Any] | None = None

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
    def slo(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The SLO this scenario is judged against and the verdict (the report's --slo first)."""
        if self.slo_override is not None:
            return self.slo_override["slo"], self.slo_override["slo_result"]
        return self.metrics.get("slo"), self.metrics.get("slo_result")

    @property
    def window(self) -> tuple[float, float] | None:
        m = self.metrics
        return (m["window_start"], m["window_end"]) if m else None


@dataclass
class Run:
    path: Path
    provenance: dict[str, Any]
    scenarios: list[Scenario]
    # Capacity searches (`distinfer bench capacity` into capacity/<name>/), by name.
    capacity: list[CapacityResult] = field(default_factory=list)
    # The load generator's self-test (certificate.json), when the run has one.
    certificate: Certificate | None = None


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
        if kind == "start":
            node.host = path.stem  # the file name is the inventory name the report joins on
            node.cpu_count = _int(str(item.get("cpu_count")))
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


def load_capacity(path: Path) -> CapacityResult:
    try:
        return CapacityResult.model_validate_json(path.read_text())
    except (OSError, ValidationError) as err:
        raise ValueError(f"cannot read the capacity search {path}: {err}") from None


def load_run(path: Path) -> Run:
    scenarios_dir = path / "scenarios"
    scenarios = (
        [load_scenario(f) for f in sorted(scenarios_dir.iterdir()) if f.is_dir()]
        if scenarios_dir.is_dir()
        else []
    )
    capacity = [load_capacity(f) for f in sorted(path.glob(f"capacity/*/{RESULT_FILE}"))]
    if not scenarios and not capacity:
        raise ValueError(
            f"{path} holds no scenario (scenarios/<name>/) and no capacity search (capacity/<name>/); "
            "pass a run directory (results/<run-id>) that `distinfer bench sweep`, `bench run --out "
            "results/<run-id>/scenarios/<name>` or `bench capacity --out "
            "results/<run-id>/capacity/<name>` wrote"
        )
    provenance = _read_json(path / "run.json") or {}
    return Run(
        path=path,
        provenance=provenance,
        scenarios=scenarios,
        capacity=capacity,
        certificate=read_certificate(path),
    )
