"""Every panel of distinfer's dashboards: title, unit and PromQL, grouped by dashboard and row.

Labels the queries rely on: `host` (every target, set by the scrape config: the inventory host or the
Kubernetes node), Ray's `deployment` / `replica` / `application` (Ray Serve) and vLLM's `model_name`.
`$__rate_interval` is Grafana's own rate window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Physical NICs only: pod veths, bridges and tunnels carry the same bytes again (as the report's table).
PHYSICAL_NIC = (
    'device!~"lo|veth.*|cni.*|flannel.*|cali.*|docker.*|podman.*|ifb.*|virbr.*|br-.*|kube.*|tunl.*'
    '|vxlan.*|cilium.*|genev.*"'
)
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""
    # GPU panels: no GPU here, so the panel-query test runs them against a DCGM exporter sample.
    needs_gpu: bool = False


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: tuple[RowSpec, ...] = field(default_factory=tuple)


def _q(expr: str, legend: str) -> Query:
    return Query(expr=" ".join(expr.split()), legend=legend)


def _quantiles(metric: str, by: str, scale: str = "") -> tuple[Query, ...]:
    return tuple(
        _q(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{RATE}))){scale}",
            f"P{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95)
    )


NODES = DashboardSpec(
    uid="distinfer-nodes",
    title="distinfer / nodes",
    description="The guide's per-node views: CPU, memory, network, GPU utilisation and memory, power.",
    rows=(
        RowSpec(
            "CPU, memory, network (node exporter)",
            (
                PanelSpec(
                    "CPU utilisation",
                    "percent",
                    (
                        _q(
                            f'100 * (1 - avg by (host) (rate(node_cpu_seconds_total{{mode="idle"}}{RATE})))',
                            "{{host}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Memory used",
                    "percent",
                    (
                        _q(
                            "100 * (1 - sum by (host) (node_memory_MemAvailable_bytes)"
                            " / sum by (host) (node_memory_MemTotal_bytes))",
                            "{{host}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Network received (physical NICs)",
                    "Bps",
                    (
                        _q(
                            f"sum by (host) (rate(node_network_receive_bytes_total{{{PHYSICAL_NIC}}}{RATE}))",
                            "{{host}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Network sent (physical NICs)",
                    "Bps",
                    (
                        _q(
                            "sum by (host)"
                            f" (rate(node_network_transmit_bytes_total{{{PHYSICAL_NIC}}}{RATE}))",
                            "{{host}}",
                        ),
                    ),
                ),
            ),
        ),
        RowSpec(
            "GPUs (DCGM exporter)",
            (
                PanelSpec(
                    "GPU utilisation",
                    "percent",
                    (_q("avg by (host) (DCGM_FI_DEV_GPU_UTIL)", "{{host}}"),),
                    needs_gpu=True,
                ),
                PanelSpec(
                    "GPU memory used",
                    "percent",
                    (
                        _q(
                            "100 * sum by (host) (DCGM_FI_DEV_FB_USED)"
                            " / sum by (host) (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)",
                            "{{host}}",
                        ),
                    ),
                    needs_gpu=True,
                ),
                PanelSpec(
                    "GPU power",
                    "watt",
                    (_q("sum by (host) (DCGM_FI_DEV_POWER_USAGE)", "{{host}}"),),
                    needs_gpu=True,
                ),
                PanelSpec(
                    "GPU energy use (from the energy counter)",
                    "watt",
                    (
                        _q(
                            f"sum by (host) (rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{RATE})) / 1000",
                            "{{host}}",
                        ),
                    ),
                    description="DCGM's total energy counter (mJ) per second: joules per second.",
                    needs_gpu=True,
                ),
            ),
        ),
    ),
)

SERVING = DashboardSpec(
    uid="distinfer-serving",
    title="distinfer / serving",
    description="Ray Serve and the engines: throughput, server-side TTFT and TPOT, queues, replicas and "
    "the KV cache.",
    rows=(
        RowSpec(
            "Throughput",
            (
                PanelSpec(
                    "Output tokens/s",
                    "short",
                    (
                        _q(
                            f"sum by (model_name) (rate(ray_vllm_generation_tokens_total{RATE}))",
                            "{{model_name}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Prompt tokens/s",
                    "short",
                    (
                        _q(
                            f"sum by (model_name) (rate(ray_vllm_prompt_tokens_total{RATE}))",
                            "{{model_name}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "HTTP requests/s (Serve proxy)",
                    "reqps",
                    (
                        _q(
                            f"sum by (application) (rate(ray_serve_num_http_requests_total{RATE}))",
                            "{{application}}",
                        ),
                    ),
                ),
            ),
        ),
        RowSpec(
            "Latency (the server's histograms)",
            (
                PanelSpec(
                    "Time to first token (engine)",
                    "s",
                    _quantiles("ray_vllm_time_to_first_token_seconds", "model_name"),
                    description="From the model replica's receipt (vLLM: the engine's arrival).",
                ),
                PanelSpec(
                    "Time per output token (engine)",
                    "s",
                    _quantiles("ray_vllm_request_time_per_output_token_seconds", "model_name"),
                ),
                PanelSpec(
                    "Request latency in the model replica",
                    "ms",
                    _quantiles("ray_serve_deployment_processing_latency_ms", "deployment"),
                ),
            ),
        ),
        RowSpec(
            "Queues and replicas",
            (
                PanelSpec(
                    "Serve queue wait (router: request to replica assignment)",
                    "ms",
                    _quantiles("ray_serve_request_router_fulfillment_time_ms", "deployment"),
                ),
                PanelSpec(
                    "Requests queued at the handles",
                    "short",
                    (_q("sum by (deployment) (ray_serve_deployment_queued_queries)", "{{deployment}}"),),
                ),
                PanelSpec(
                    "Ongoing requests per replica",
                    "short",
                    (
                        _q(
                            "sum by (deployment, replica) (ray_serve_replica_processing_queries)",
                            "{{deployment}} {{replica}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Healthy replicas",
                    "short",
                    (_q("sum by (deployment) (ray_serve_deployment_replica_healthy)", "{{deployment}}"),),
                ),
            ),
        ),
        RowSpec(
            "Engines",
            (
                PanelSpec(
                    "Requests running / waiting in the engines",
                    "short",
                    (
                        _q("sum by (model_name) (ray_vllm_num_requests_running)", "running {{model_name}}"),
                        _q("sum by (model_name) (ray_vllm_num_requests_waiting)", "waiting {{model_name}}"),
                    ),
                ),
                PanelSpec(
                    "KV cache used",
                    "percentunit",
                    (_q("max by (model_name) (ray_vllm_kv_cache_usage_perc)", "{{model_name}}"),),
                    description="vLLM's KV-cache blocks in use; the hf engine's cached tokens over its "
                    "max batch x max_model_len.",
                ),
            ),
        ),
    ),
)

DASHBOARDS = (NODES, SERVING)
