"""The rows of every table, from a loaded run: typed (`ScenarioRow`, `NodeRow`, `PathCost`), read
by attribute in the report and the charts. Each row's `flat()` is the one form results.json, results.csv
and nodes.csv hold: field names follow vLLM's benchmark result JSON (`request_throughput`,
`median_ttft_ms`, `p99_e2el_ms`, ...) wherever the meaning is the same."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from distinfer.results.base import SCHEMA_VERSION
from distinfer.results.load import NodeSamples, Run, Scenario
from distinfer.results.nodes import NodeSample

if TYPE_CHECKING:
    from distinfer.results.metrics import Distribution

# Virtual interfaces carry the same bytes again (pod veths, bridges, CNI tunnels): counting them
# too would double a node's traffic. The node figure sums the rest.
VIRTUAL_NIC_PREFIXES = (
    "lo", "veth", "cni", "flannel", "cali", "docker", "podman", "ifb", "virbr", "br-", "kube", "tunl",
    "vxlan", "cilium", "genev", "nodelocaldns",
)  # fmt: skip

GUIDE_P95_TOKEN_LABEL = "P95 token latency (ms, guide's derived: P95 latency / max_tokens)"


def ordered(run: Run) -> list[Scenario]:
    return sorted(
        run.scenarios,
        key=lambda s: (s.users_per_replica or 0, s.replicas or 0, s.users, s.name),
    )


def _nodes_label(s: Scenario) -> str:
    """The guide's "Inference Nodes": the hosts that served (placement.json), else those listed; a host
    named for the scenario that held none of its replicas is said beside it."""
    count = len(s.serving_nodes) or len(s.nodes)
    words = {1: "Single Node", 2: "Two Nodes", 3: "Three Nodes"}
    label = words.get(count, f"{count} Nodes") if count else "-"
    unused = s.placement.unused if s.placement is not None and s.served_nodes is not None else []
    return f"{label} ({', '.join(unused)} named, held none)" if unused else label


@dataclass(frozen=True)
class Latency:
    """One latency's figures in ms under vLLM's names (`median_ttft_ms` is `ttft.median`)."""

    mean: float | None = None
    median: float | None = None
    std: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, dist: Distribution) -> Latency:
        return cls(dist.mean, dist.p50, dist.std, dist.p90, dist.p95, dist.p99)


@dataclass(frozen=True)
class ScenarioRow:
    """One scenario's row: the guide's columns, then the measured ones. An unfinished scenario (no
    summary.json) has only the first group; its measured figures stay None.

    `flat()` is the row as results.json, results.csv and the rest of the world read it, vLLM-named.
    """

    scenario: str
    finished: bool
    valid: bool | None
    invalid_reasons: list[str]
    inference_nodes: str
    nodes: str
    devices: str
    gpus: str
    replicas: int | None
    users_per_replica: int | None
    max_concurrency: int | None
    request_rate: float | None
    max_tokens: int | None
    repeat_of: str | None
    repeat_index: int | None
    # A synthetic engine stood in for the model (docs/rehearsal.md); not a column of its own.
    engine_stand_in: bool = False
    duration: float | None = None
    completed: int | None = None
    failed: int | None = None
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    request_throughput: float | None = None
    output_throughput: float | None = None
    total_token_throughput: float | None = None
    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    achieved_concurrency: float | None = None
    guide_p95_token_latency_ms: float | None = None
    # The SLO judged (its label) and its verdict; `slo` None: none judged.
    slo: str | None = None
    slo_met: bool | None = None
    slo_share_meeting: float | None = None
    request_goodput: float | None = None
    output_goodput: float | None = None
    # Per SLO limit (ttft, tpot, ...): the limit, and the latency at the SLO's percentile.
    slo_limit_ms: dict[str, float] = field(default_factory=dict)
    slo_at_percentile_ms: dict[str, float | None] = field(default_factory=dict)
    ttft: Latency = Latency()
    tpot: Latency = Latency()
    itl: Latency = Latency()
    e2el: Latency = Latency()
    # Each leg's share of the TTFT median (bench/legs.py), by leg key.
    ttft_legs: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """The row with vLLM's field names, in the order results.json and results.csv have them."""
        row: dict[str, Any] = {
            "scenario": self.scenario,
            "finished": self.finished,
            "valid": self.valid,
            "invalid_reasons": self.invalid_reasons,
            "inference_nodes": self.inference_nodes,
            "nodes": self.nodes,
            "devices": self.devices,
            "gpus": self.gpus,
            "replicas": self.replicas,
            "users_per_replica": self.users_per_replica,
            "max_concurrency": self.max_concurrency,
            "request_rate": self.request_rate,
            "max_tokens": self.max_tokens,
            "repeat_of": self.repeat_of,
            "repeat_index": self.repeat_index,
        }
        if not self.finished:
            return row
        row.update(
            {
                "duration": self.duration,
                "completed": self.completed,
                "failed": self.failed,
                "errors_by_kind": self.errors_by_kind,
                "request_throughput": self.request_throughput,
                "output_throughput": self.output_throughput,
                "total_token_throughput": self.total_token_throughput,
                "total_input_tokens": self.total_input_tokens,
                "total_output_tokens": self.total_output_tokens,
                "achieved_concurrency": self.achieved_concurrency,
                "guide_p95_token_latency_ms": self.guide_p95_token_latency_ms,
                "slo": self.slo,
                "slo_met": self.slo_met,
            }
        )
        if self.slo is not None:
            row["slo_share_meeting"] = self.slo_share_meeting
        row["request_goodput"] = self.request_goodput
        row["output_goodput"] = self.output_goodput
        for key, limit in self.slo_limit_ms.items():
            row[f"slo_{key}_limit_ms"] = limit
            row[f"slo_{key}_at_percentile_ms"] = self.slo_at_percentile_ms.get(key)
        for name, latency in (
            ("ttft", self.ttft),
            ("tpot", self.tpot),
            ("itl", self.itl),
            ("e2el", self.e2el),
        ):
            for stat, value in asdict(latency).items():
                row[f"{stat}_{name}_ms"] = value
        for key, ms in self.ttft_legs.items():
            row[f"ttft_leg_{key}_ms"] = ms
        return row


def scenario_row(s: Scenario) -> ScenarioRow:
    """The scenario's row. The deployment's facts (devices, GPUs, a stand-in engine) are read from
    the scenario's typed deployment here and nowhere else in the report."""
    spec = s.spec
    summary = s.summary
    first = ScenarioRow(
        scenario=s.name,
        finished=s.finished,
        valid=summary.valid if summary else None,
        invalid_reasons=summary.invalid_reasons if summary else [],
        inference_nodes=_nodes_label(s),
        nodes=",".join(s.serving_nodes or sorted(s.nodes)),
        devices="-" if s.deployment.devices is None else s.deployment.devices,
        gpus="-" if s.deployment.gpus is None else s.deployment.gpus,
        replicas=s.replicas,
        users_per_replica=s.users_per_replica,
        max_concurrency=spec.users if spec else None,
        request_rate=spec.rate if spec else None,
        max_tokens=spec.max_tokens if spec else None,
        repeat_of=spec.repetition.of if spec and spec.repetition else None,
        repeat_index=spec.repetition.index if spec and spec.repetition else None,
        engine_stand_in=bool(s.deployment.engine_stand_in),
    )
    if summary is None:
        return first
    m = summary.metrics
    split = summary.ttft_split
    return replace(
        first,
        duration=m.window_s,
        completed=m.completed,
        failed=m.failed,
        errors_by_kind=m.errors_by_kind,
        request_throughput=m.request_throughput,
        output_throughput=m.output_throughput,
        total_token_throughput=m.total_token_throughput,
        total_input_tokens=m.total_input_tokens,
        total_output_tokens=m.total_output_tokens,
        achieved_concurrency=m.achieved_concurrency,
        guide_p95_token_latency_ms=m.guide_p95_token_latency_ms,
        **_slo_fields(s),
        ttft=Latency.of(m.ttft_ms),
        tpot=Latency.of(m.tpot_ms),
        itl=Latency.of(m.itl_ms),
        e2el=Latency.of(m.e2el_ms),
        ttft_legs={leg.key: leg.at_median_ms for leg in split.legs} if split else {},
    )


def _slo_fields(s: Scenario) -> dict[str, Any]:
    """The SLO judged and its verdict: goodput under vLLM's name (request_goodput)."""
    slo, verdict = s.slo
    if slo is None or verdict is None:
        return {}
    limits = slo.limits()
    return {
        "slo": slo.label(),
        "slo_met": verdict.passed,
        "slo_share_meeting": verdict.share_meeting,
        "request_goodput": verdict.request_goodput,
        "output_goodput": verdict.output_goodput,
        "slo_limit_ms": limits,
        "slo_at_percentile_ms": {key: verdict.at_percentile_ms.get(key) for key in limits},
    }


def _physical_rates(sample: NodeSample) -> tuple[float, float]:
    nics = sample.net
    chosen = {n: v for n, v in nics.items() if not n.startswith(VIRTUAL_NIC_PREFIXES)} or {
        n: v for n, v in nics.items() if n != "lo"
    }
    return (
        sum(v.rx_bytes_per_s for v in chosen.values()),
        sum(v.tx_bytes_per_s for v in chosen.values()),
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class NodeRow:
    """One node's utilisation over a scenario's steady window. A node without samples inside the
    window has none of the figures; `note` says why. A peak is the highest of the window's samples,
    each the node's use over one recorder interval (`interval_s`, 1 s unless set)."""

    scenario: str
    host: str
    samples: int = 0
    note: str = ""
    avg_cpu_percent: float | None = None
    peak_cpu_percent: float | None = None
    avg_mem_percent: float | None = None
    peak_mem_percent: float | None = None
    avg_gpu_util_percent: float | None = None
    avg_gpu_mem_percent: float | None = None
    gpu_count: int = 0
    net_rx_avg_bytes_per_s: float | None = None
    net_rx_max_bytes_per_s: float | None = None
    net_tx_avg_bytes_per_s: float | None = None
    net_tx_max_bytes_per_s: float | None = None

    def flat(self) -> dict[str, Any]:
        """The row as results.json and nodes.csv have it."""
        row = {"scenario": self.scenario, "host": self.host, "samples": self.samples, "note": self.note}
        if not self.samples:
            return row
        return row | {
            "avg_cpu_percent": self.avg_cpu_percent,
            "peak_cpu_percent": self.peak_cpu_percent,
            "avg_mem_percent": self.avg_mem_percent,
            "peak_mem_percent": self.peak_mem_percent,
            "avg_gpu_util_percent": self.avg_gpu_util_percent,
            "avg_gpu_mem_percent": self.avg_gpu_mem_percent,
            "gpu_count": self.gpu_count,
            "net_rx_avg_bytes_per_s": self.net_rx_avg_bytes_per_s,
            "net_rx_max_bytes_per_s": self.net_rx_max_bytes_per_s,
            "net_tx_avg_bytes_per_s": self.net_tx_avg_bytes_per_s,
            "net_tx_max_bytes_per_s": self.net_tx_max_bytes_per_s,
        }


def node_row(s: Scenario, host: str, node: NodeSamples | None) -> NodeRow:
    if node is None:
        reason = s.node_errors.get(host, f"expected nodes/{host}.jsonl")
        return NodeRow(s.name, host, note=f"MISSING: no samples from {host} ({reason})")
    window = s.window
    samples = [x for x in node.samples if window is None or window[0] <= x.time <= window[1]]
    if not samples:
        return NodeRow(
            s.name, host, note=f"no samples inside the steady window ({len(node.samples)} outside)"
        )
    gpus = [g for x in samples for g in x.gpus]
    rates = [_physical_rates(x) for x in samples]
    rx = [r for r, _ in rates]
    tx = [t for _, t in rates]
    cpu = [x.cpu_percent for x in samples if x.cpu_percent is not None]
    mem = [x.mem_percent for x in samples]
    return NodeRow(
        s.name,
        host,
        samples=len(samples),
        note="" if gpus else "no GPU: " + (node.notes[0] if node.notes else "samples carry no GPU figures"),
        avg_cpu_percent=_mean(cpu),
        peak_cpu_percent=max(cpu, default=None),
        avg_mem_percent=_mean(mem),
        peak_mem_percent=max(mem),
        avg_gpu_util_percent=_mean([g.util_percent for g in gpus if g.util_percent is not None]),
        avg_gpu_mem_percent=_mean([g.mem_used_percent for g in gpus if g.mem_used_percent is not None]),
        gpu_count=max((len(x.gpus) for x in samples), default=0),
        net_rx_avg_bytes_per_s=_mean(rx),
        net_rx_max_bytes_per_s=max(rx),
        net_tx_avg_bytes_per_s=_mean(tx),
        net_tx_max_bytes_per_s=max(tx),
    )


ServingPart = Literal["proxy", "ingress", "replicas"]
SERVING_PARTS: tuple[ServingPart, ...] = ("proxy", "ingress", "replicas")


@dataclass(frozen=True)
class PathCost:
    """CPU seconds per 1,000 output tokens streamed in a scenario's steady window."""

    output_tokens_in_window: int
    cpu_s_per_1k_tokens: dict[ServingPart, float]
    serving_path_cpu_s_per_1k_tokens: float
    nodes_cpu_s_per_1k_tokens: float

    def flat(self) -> dict[str, Any]:
        return asdict(self)


def path_cost(s: Scenario) -> PathCost | None:
    """CPU seconds per 1,000 output tokens streamed in the steady window: the serving path's parts
    (their processes on every node, `serve_cpu_s` in the node samples) beside all the nodes' CPU.

    None when the scenario has no window, streamed no token, or no node sample carries the parts
    (a recorder older than them). Each sample holds what was used since the one before it, so the
    samples inside the window add up to the window's CPU time.
    """
    if s.summary is None:
        return None
    m = s.summary.metrics
    window = (m.window_start, m.window_end)
    tokens = m.output_throughput * m.window_s
    if tokens <= 0:
        return None
    parts = dict.fromkeys(SERVING_PARTS, 0.0)
    nodes_cpu_s, seen = 0.0, False
    for node in s.nodes.values():
        cores = (node.start.cpu_count if node.start else None) or 0
        previous = None
        for x in node.samples:
            inside = window[0] <= x.time <= window[1]
            if inside and x.serve_cpu_s is not None:
                seen = True
                for part in SERVING_PARTS:
                    parts[part] += x.serve_cpu_s.get(part, 0.0)
            if inside and previous is not None and x.cpu_percent is not None:
                nodes_cpu_s += x.cpu_percent / 100.0 * cores * (x.time - previous)
            previous = x.time
    if not seen:
        return None
    per_1k = {part: used / tokens * 1000.0 for part, used in parts.items()}
    return PathCost(
        output_tokens_in_window=round(tokens),
        cpu_s_per_1k_tokens=per_1k,
        serving_path_cpu_s_per_1k_tokens=per_1k["proxy"] + per_1k["ingress"],
        nodes_cpu_s_per_1k_tokens=nodes_cpu_s / tokens * 1000.0,
    )


def node_rows(s: Scenario) -> list[NodeRow]:
    """A row per host that served the scenario (its placement.json); without one (a run of an older
    distinfer, `distinfer bench` by hand), per host listed for it or recorded."""
    served = s.served_nodes
    if served is not None:
        return [node_row(s, host, s.nodes.get(host)) for host in served]
    hosts = list(dict.fromkeys([*s.listed_nodes, *sorted(s.nodes), *sorted(s.node_errors)]))
    return [node_row(s, host, s.nodes.get(host)) for host in hosts]


def _dumped(model: BaseModel | None) -> dict[str, Any] | None:
    return model.model_dump(mode="json") if model is not None else None


def _flat(cost: PathCost | None) -> dict[str, Any] | None:
    return cost.flat() if cost is not None else None


def results_document(run: Run) -> dict[str, Any]:
    scenarios = ordered(run)
    return {
        "schema_version": SCHEMA_VERSION,
        "run": str(run.path),
        "provenance": _dumped(run.provenance),
        "notes": {
            "guide_p95_token_latency_ms": GUIDE_P95_TOKEN_LABEL,
            "window": "every metric covers each scenario's steady window (warm-up and drain excluded)",
            "network": "bytes/s summed over non-virtual NICs (veth, cni, bridges ... excluded)",
            "peak": "a node's peak CPU / memory: the window's highest sample (one recorder interval each)",
        },
        "scenarios": [
            {
                **scenario_row(s).flat(),
                "nodes_detail": [n.flat() for n in node_rows(s)],
                "path_cost": _flat(path_cost(s)),
                "spec": _dumped(s.spec),
                "client": _dumped(s.summary.client if s.summary else None),
                "ttft_split": _dumped(s.summary.ttft_split if s.summary else None),
                # Where its replicas ran (placement.json), for runs that recorded it.
                **({"placement": _dumped(s.placement)} if s.placement is not None else {}),
            }
            for s in scenarios
        ],
    }
