"""The rows of every table, from a loaded run. Field names follow vLLM's benchmark result JSON
(`request_throughput`, `median_ttft_ms`, `p99_e2el_ms`, ...) wherever the meaning is the same."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from distinfer.results.base import SCHEMA_VERSION
from distinfer.results.load import NodeSamples, Run, Scenario
from distinfer.results.nodes import NodeSample

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
    count = len(s.listed_nodes) or len(s.nodes)
    words = {1: "Single Node", 2: "Two Nodes", 3: "Three Nodes"}
    return words.get(count, f"{count} Nodes") if count else "-"


def scenario_row(s: Scenario) -> dict[str, Any]:
    """One flat row: the guide's columns, then the measured ones, vLLM-named."""
    spec = s.spec
    summary = s.summary
    row: dict[str, Any] = {
        "scenario": s.name,
        "finished": s.finished,
        "valid": summary.valid if summary else None,
        "invalid_reasons": summary.invalid_reasons if summary else [],
        "inference_nodes": _nodes_label(s),
        "nodes": ",".join(s.listed_nodes or sorted(s.nodes)),
        "devices": "-" if s.deployment.devices is None else s.deployment.devices,
        "gpus": "-" if s.deployment.gpus is None else s.deployment.gpus,
        "replicas": s.replicas,
        "users_per_replica": s.users_per_replica,
        "max_concurrency": spec.users if spec else None,
        "request_rate": spec.rate if spec else None,
        "max_tokens": spec.max_tokens if spec else None,
        "repeat_of": spec.repetition.of if spec and spec.repetition else None,
        "repeat_index": spec.repetition.index if spec and spec.repetition else None,
    }
    if summary is None:
        return row
    m = summary.metrics
    row.update(
        {
            "duration": m.window_s,
            "completed": m.completed,
            "failed": m.failed,
            "errors_by_kind": m.errors_by_kind,
            "request_throughput": m.request_throughput,
            "output_throughput": m.output_throughput,
            "total_token_throughput": m.total_token_throughput,
            "total_input_tokens": m.total_input_tokens,
            "total_output_tokens": m.total_output_tokens,
            "achieved_concurrency": m.achieved_concurrency,
            "guide_p95_token_latency_ms": m.guide_p95_token_latency_ms,
        }
    )
    row.update(slo_fields(s))
    for name, dist in (("ttft", m.ttft_ms), ("tpot", m.tpot_ms), ("itl", m.itl_ms), ("e2el", m.e2el_ms)):
        row[f"mean_{name}_ms"] = dist.mean
        row[f"median_{name}_ms"] = dist.p50
        row[f"std_{name}_ms"] = dist.std
        for p in (90, 95, 99):
            row[f"p{p}_{name}_ms"] = getattr(dist, f"p{p}")
    if summary.ttft_split is not None:  # each leg's share of the TTFT median (results/legs.py)
        for leg in summary.ttft_split.legs:
            row[f"ttft_leg_{leg.key}_ms"] = leg.at_median_ms
    return row


def slo_fields(s: Scenario) -> dict[str, Any]:
    """The SLO judged and its verdict, flat: goodput under vLLM's name (request_goodput)."""
    slo, verdict = s.slo
    if slo is None or verdict is None:
        return {"slo": None, "slo_met": None, "request_goodput": None, "output_goodput": None}
    fields: dict[str, Any] = {
        "slo": slo.label(),
        "slo_met": verdict.passed,
        "slo_share_meeting": verdict.share_meeting,
        "request_goodput": verdict.request_goodput,
        "output_goodput": verdict.output_goodput,
    }
    for key, limit in slo.limits().items():
        fields[f"slo_{key}_limit_ms"] = limit
        fields[f"slo_{key}_at_percentile_ms"] = verdict.at_percentile_ms.get(key)
    return fields


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


def node_row(s: Scenario, host: str, node: NodeSamples | None) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": s.name, "host": host, "samples": 0, "note": ""}
    if node is None:
        reason = s.node_errors.get(host, f"expected nodes/{host}.jsonl")
        row["note"] = f"MISSING: no samples from {host} ({reason})"
        return row
    window = s.window
    samples = [x for x in node.samples if window is None or window[0] <= x.time <= window[1]]
    row["samples"] = len(samples)
    if not samples:
        row["note"] = f"no samples inside the steady window ({len(node.samples)} outside)"
        return row
    gpus = [g for x in samples for g in x.gpus]
    rates = [_physical_rates(x) for x in samples]
    rx = [r for r, _ in rates]
    tx = [t for _, t in rates]
    row.update(
        {
            "avg_cpu_percent": _mean([x.cpu_percent for x in samples if x.cpu_percent is not None]),
            "avg_mem_percent": _mean([x.mem_percent for x in samples]),
            "avg_gpu_util_percent": _mean([g.util_percent for g in gpus if g.util_percent is not None]),
            "avg_gpu_mem_percent": _mean(
                [g.mem_used_percent for g in gpus if g.mem_used_percent is not None]
            ),
            "gpu_count": max((len(x.gpus) for x in samples), default=0),
            "net_rx_avg_bytes_per_s": _mean(rx),
            "net_rx_max_bytes_per_s": max(rx),
            "net_tx_avg_bytes_per_s": _mean(tx),
            "net_tx_max_bytes_per_s": max(tx),
        }
    )
    if not gpus:
        row["note"] = "no GPU: " + (node.notes[0] if node.notes else "samples carry no GPU figures")
    return row


SERVING_PARTS: tuple[Literal["proxy", "ingress", "replicas"], ...] = ("proxy", "ingress", "replicas")


def path_cost(s: Scenario) -> dict[str, Any] | None:
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
    return {
        "output_tokens_in_window": round(tokens),
        "cpu_s_per_1k_tokens": per_1k,
        "serving_path_cpu_s_per_1k_tokens": per_1k["proxy"] + per_1k["ingress"],
        "nodes_cpu_s_per_1k_tokens": nodes_cpu_s / tokens * 1000.0,
    }


def node_rows(s: Scenario) -> list[dict[str, Any]]:
    hosts = list(dict.fromkeys([*s.listed_nodes, *sorted(s.nodes), *sorted(s.node_errors)]))
    return [node_row(s, host, s.nodes.get(host)) for host in hosts]


def _dumped(model: BaseModel | None) -> dict[str, Any] | None:
    return model.model_dump(mode="json") if model is not None else None


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
        },
        "scenarios": [
            {
                **scenario_row(s),
                "nodes_detail": node_rows(s),
                "path_cost": path_cost(s),
                "spec": _dumped(s.spec),
                "client": _dumped(s.summary.client if s.summary else None),
                "ttft_split": _dumped(s.summary.ttft_split if s.summary else None),
            }
            for s in scenarios
        ],
    }
