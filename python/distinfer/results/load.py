"""Read a results directory (its layout: results/__init__.py): runs, scenarios, node samples.

Every file is read through its model, so a file of an unknown schema version, or one whose fields do
not fit, stops the report with the file and the field named (`ResultsSchemaError`, a ValueError).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from distinfer.results.base import ResultsSchemaError, read_model
from distinfer.results.capacity import CapacityResult
from distinfer.results.certificate import Certificate
from distinfer.results.loadgen import CERTIFICATES_DIR
from distinfer.results.nodes import NodeError, NodeNote, NodeSample, NodeStart, read_node_lines
from distinfer.results.placement import Placement
from distinfer.results.run import Provenance
from distinfer.results.scenario import Deployment, ScenarioSpec
from distinfer.results.slo import Slo, SloResult
from distinfer.results.summary import Summary

log = logging.getLogger(__name__)


@dataclass
class NodeSamples:
    host: str
    samples: list[NodeSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    start: NodeStart | None = None
    source: Path | None = None


@dataclass
class Scenario:
    name: str
    # scenario.json; None when the folder has none (a scenario that never started its load).
    spec: ScenarioSpec | None
    summary: Summary | None
    nodes: dict[str, NodeSamples]
    listed_nodes: list[str]
    # host -> why it has no samples (nodes/<host>.error.json, written by the node_metrics role)
    node_errors: dict[str, str] = field(default_factory=dict)
    # The scenario's folder (records.jsonl is read from it for the latency distributions).
    folder: Path | None = None
    # `distinfer report --slo`: the SLO and its verdict judged again from the records, over the summary's.
    slo_override: tuple[Slo, SloResult] | None = None
    # placement.json: where its replicas ran (the benchmark role reads it from Ray before the load).
    placement: Placement | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def deployment(self) -> Deployment:
        """What it ran on (its `meta` labels, typed); empty when the folder has no scenario.json."""
        return self.spec.deployment if self.spec else Deployment()

    @property
    def served_nodes(self) -> list[str] | None:
        """The hosts its replicas ran on (placement.json); None when not recorded, or when a replica was
        on a node without a host label (a Ray started before the label existed)."""
        placed = self.placement
        if placed is None or not placed.replicas or placed.unlabelled:
            return None
        return list(placed.served)

    @property
    def serving_nodes(self) -> list[str]:
        """The hosts that served it when recorded, else the hosts listed for it (its meta `nodes`)."""
        served = self.served_nodes
        return self.listed_nodes if served is None else served

    @property
    def replicas(self) -> int | None:
        return (self.spec.replicas if self.spec else None) or self.deployment.replicas

    @property
    def users_per_replica(self) -> int | None:
        spec_value = self.spec.users_per_replica if self.spec else None
        return spec_value or self.deployment.users_per_replica

    @property
    def users(self) -> int:
        return self.spec.users if self.spec else 0

    @property
    def slo(self) -> tuple[Slo | None, SloResult | None]:
        """The SLO this scenario is judged against and the verdict (the report's --slo first)."""
        if self.slo_override is not None:
            return self.slo_override
        if self.summary is None:
            return None, None
        return self.summary.metrics.slo, self.summary.metrics.slo_result

    @property
    def window(self) -> tuple[float, float] | None:
        if self.summary is None:
            return None
        return (self.summary.metrics.window_start, self.summary.metrics.window_end)


@dataclass
class Run:
    path: Path
    provenance: Provenance | None
    scenarios: list[Scenario]
    # Capacity searches (`distinfer bench capacity` into capacity/<name>/), by name.
    capacity: list[CapacityResult] = field(default_factory=list)
    # The load generator's self-test (certificate.json), when the run has one.
    certificate: Certificate | None = None
    # Load hosts: each one's own self-test (certificates/<host>/certificate.json), by host.
    host_certificates: dict[str, Certificate] = field(default_factory=dict)


def read_node_samples(path: Path) -> NodeSamples:
    # The file name is the inventory name the report joins on (the recorder's host may differ).
    node = NodeSamples(host=path.stem, source=path)
    for line in read_node_lines(path):
        if isinstance(line, NodeSample):
            node.samples.append(line)
        elif isinstance(line, NodeNote):
            node.notes.append(line.message)
        else:
            node.start = line
    return node


def load_scenario(folder: Path) -> Scenario:
    spec = ScenarioSpec.load_file(folder)
    summary = Summary.load_file(folder)
    nodes = {}
    for path in sorted((folder / "nodes").glob("*.jsonl")):
        node = read_node_samples(path)
        nodes[node.host] = node
    errors = {}
    for path in sorted((folder / "nodes").glob("*.error.json")):
        error = read_model(path, NodeError)
        if error is not None:
            errors[error.host or path.name.removesuffix(".error.json")] = (
                error.error or "the host recorded no samples"
            )
    return Scenario(
        name=spec.name if spec else folder.name,
        spec=spec,
        summary=summary,
        nodes=nodes,
        listed_nodes=spec.deployment.nodes if spec else [],
        node_errors=errors,
        folder=folder,
        placement=Placement.load_file(folder),
    )


def load_run(path: Path) -> Run:
    scenarios_dir = path / "scenarios"
    scenarios = (
        [load_scenario(f) for f in sorted(scenarios_dir.iterdir()) if f.is_dir()]
        if scenarios_dir.is_dir()
        else []
    )
    capacity = [
        result
        for folder in sorted(f.parent for f in path.glob(f"capacity/*/{CapacityResult.DEFAULT_FILE}"))
        if (result := CapacityResult.load_file(folder)) is not None
    ]
    if not scenarios and not capacity:
        raise ValueError(
            f"{path} holds no scenario (scenarios/<name>/) and no capacity search (capacity/<name>/); "
            "pass a run directory (results/<run-id>) that `distinfer bench sweep`, `bench run --out "
            "results/<run-id>/scenarios/<name>` or `bench capacity --out "
            "results/<run-id>/capacity/<name>` wrote"
        )
    return Run(
        path=path,
        provenance=Provenance.load_file(path),
        scenarios=scenarios,
        capacity=capacity,
        certificate=Certificate.load_file(path),
        host_certificates=host_certificates(path),
    )


def host_certificates(path: Path) -> dict[str, Certificate]:
    """Each load host's certificate in a run (results/loadgen.py), by host."""
    found = {}
    for folder in sorted(p.parent for p in path.glob(f"{CERTIFICATES_DIR}/*/{Certificate.DEFAULT_FILE}")):
        certificate = Certificate.load_file(folder)
        if certificate is not None:
            found[folder.name] = certificate
    return found


__all__ = ["NodeSamples", "ResultsSchemaError", "Run", "Scenario", "load_run", "load_scenario"]
