"""The server's own figures for each scenario's steady window, asked from Prometheus's HTTP API.

For a window [start, end) every query is an instant query at `end` over a range of the window's
length (`avg_over_time(...[Ws])`, `increase(...[Ws])`; gauges summed over replicas through a subquery
at the scrape step), restricted to the scenario's model (`model_name`, and its Serve deployment) and,
for GPU figures, to the scenario's hosts (`host`). The names are the ones exported under Ray
(serve/engine_metrics.py) and by the DCGM exporter; the dashboards ask the same.

When no Prometheus answers, the report says so in one line and goes on without these figures.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import httpx
from pydantic import Field

from distinfer.config import deployment_name
from distinfer.results.base import Strict
from distinfer.results.load import Scenario

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
# The subquery step for sums over replicas: the scrape interval of prometheus_local / the monitors.
STEP = "5s"


class Pair(Strict):
    avg: float | None = None
    max: float | None = None


class ServerFigures(Strict):
    """One scenario's server-side figures (None: Prometheus had no such series for the window)."""

    prometheus: str
    window_s: float
    serve_queue_wait_ms: Pair = Field(description="Ray Serve's router: request -> replica (avg, P95 as max).")
    queued_at_handles: Pair = Field(description="Requests waiting in the handles' queues (sum over handles).")
    ongoing_per_replica: Pair = Field(description="Requests in each replica: avg over replicas, max of any.")
    engine_running: Pair = Field(description="Requests the engines generate for (sum over replicas).")
    engine_waiting: Pair = Field(
        description="Requests waiting to join an engine's batch (sum over replicas)."
    )
    kv_cache_percent: Pair = Field(description="KV cache in use, % (the fullest replica).")
    gpu_util_percent: Pair = Field(description="DCGM: GPU utilisation, % (avg of GPUs; max of any).")
    gpu_mem_percent: Pair = Field(description="DCGM: framebuffer used, % of the GPUs' total.")
    energy_j: float | None = Field(default=None, description="DCGM: energy the GPUs used in the window.")
    energy_source: str | None = Field(default=None, description="dcgm, or nvml (the node recorder).")
    tokens_per_joule: float | None = Field(
        default=None, description="Output tokens in the window per joule the GPUs used."
    )
    engine_ttft_p50_ms: float | None = Field(
        default=None,
        description="The engine's own TTFT histogram (vLLM's: replica receipt to first token), P50 "
        "interpolated within its buckets.",
    )
    engine_ttft_p99_ms: float | None = Field(default=None, description="The same, P99.")
    prefix_cache_hit_percent: float | None = Field(
        default=None, description="vLLM's prefix cache: tokens found cached over tokens looked up, %."
    )


class PrometheusUnavailable(Exception):
    pass


@dataclass
class Prometheus:
    url: str

    def value(self, expr: str, at: float) -> float | None:
        """The first sample of an instant query at `at` (None when the result is empty or not a number)."""
        try:
            response = httpx.get(
                f"{self.url.rstrip('/')}/api/v1/query", params={"query": expr, "time": at}, timeout=TIMEOUT_S
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as err:
            raise PrometheusUnavailable(f"{type(err).__name__}: {err}") from None
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"query {expr!r} failed: {body.get('error', body)}")
        data = body["data"]
        if data["resultType"] == "scalar":
            raw = data["result"][1]
        elif data["result"]:
            raw = data["result"][0]["value"][1]
        else:
            return None
        number = float(raw)
        return None if math.isnan(number) or math.isinf(number) else number

    def check(self) -> None:
        try:
            httpx.get(f"{self.url.rstrip('/')}/-/ready", timeout=TIMEOUT_S).raise_for_status()
        except httpx.HTTPError as err:
            raise PrometheusUnavailable(f"{type(err).__name__}: {err}") from None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _hosts_selector(hosts: list[str]) -> str:
    return f'host=~"{"|".join(re.escape(h) for h in hosts)}"' if hosts else ""


def _pair(prom: Prometheus, avg: str, peak: str, at: float) -> Pair:
    return Pair(avg=prom.value(avg, at), max=prom.value(peak, at))


def _over(prom: Prometheus, inner: str, window: str, at: float) -> Pair:
    """avg and max over the window of an expression summed at each step."""
    return _pair(
        prom, f"avg_over_time(({inner})[{window}:{STEP}])", f"max_over_time(({inner})[{window}:{STEP}])", at
    )


def server_figures(prom: Prometheus, s: Scenario) -> ServerFigures | None:
    """The figures of one finished scenario (None when it has no window or no scenario.json)."""
    if s.window is None or s.spec is None or s.summary is None:
        return None
    start, end = s.window
    window = f"{max(1, math.ceil(end - start))}s"
    model = f'model_name="{_label(s.spec.model)}"'
    deployment = f'deployment="{_label(deployment_name(s.spec.model))}"'
    gpus = _hosts_selector(s.serving_nodes)
    fulfil = "ray_serve_request_router_fulfillment_time_ms"
    energy = prom.value(
        f"sum(increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{gpus}}}[{window}])) / 1000", end
    )
    source = "dcgm" if energy else None
    if not energy:
        energy = nvml_energy_j(s)
        source = "nvml" if energy else None
    tokens = s.summary.metrics.output_throughput * s.summary.metrics.window_s
    return ServerFigures(
        prometheus=prom.url,
        window_s=end - start,
        serve_queue_wait_ms=_pair(
            prom,
            f"sum(increase({fulfil}_sum{{{deployment}}}[{window}]))"
            f" / sum(increase({fulfil}_count{{{deployment}}}[{window}]))",
            f"histogram_quantile(0.95, sum by (le) (increase({fulfil}_bucket{{{deployment}}}[{window}])))",
            end,
        ),
        queued_at_handles=_over(
            prom, f"sum(ray_serve_deployment_queued_queries{{{deployment}}})", window, end
        ),
        ongoing_per_replica=_pair(
            prom,
            f"avg(avg_over_time(ray_serve_replica_processing_queries{{{deployment}}}[{window}]))",
            f"max(max_over_time(ray_serve_replica_processing_queries{{{deployment}}}[{window}]))",
            end,
        ),
        engine_running=_over(prom, f"sum(ray_vllm_num_requests_running{{{model}}})", window, end),
        engine_waiting=_over(prom, f"sum(ray_vllm_num_requests_waiting{{{model}}})", window, end),
        kv_cache_percent=_over(prom, f"100 * max(ray_vllm_kv_cache_usage_perc{{{model}}})", window, end),
        gpu_util_percent=_pair(
            prom,
            f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{{gpus}}}[{window}]))",
            f"max(max_over_time(DCGM_FI_DEV_GPU_UTIL{{{gpus}}}[{window}]))",
            end,
        ),
        gpu_mem_percent=_over(
            prom,
            f"100 * sum(DCGM_FI_DEV_FB_USED{{{gpus}}})"
            f" / sum(DCGM_FI_DEV_FB_USED{{{gpus}}} + DCGM_FI_DEV_FB_FREE{{{gpus}}})",
            window,
            end,
        ),
        energy_j=energy,
        energy_source=source,
        tokens_per_joule=tokens / energy if energy else None,
        engine_ttft_p50_ms=_ms(prom.value(_quantile(0.5, TTFT_HISTOGRAM, model, window), end)),
        engine_ttft_p99_ms=_ms(prom.value(_quantile(0.99, TTFT_HISTOGRAM, model, window), end)),
        # Ray exports a counter only once it has counted something: no hits series while vLLM has
        # looked prefixes up (queries) and found none is a 0 % hit rate, not a missing figure.
        prefix_cache_hit_percent=prom.value(
            f"100 * (sum(increase(ray_vllm_prefix_cache_hits_total{{{model}}}[{window}])) or vector(0))"
            f" / sum(increase(ray_vllm_prefix_cache_queries_total{{{model}}}[{window}]))",
            end,
        ),
    )


TTFT_HISTOGRAM = "ray_vllm_time_to_first_token_seconds"


def _quantile(q: float, histogram: str, selector: str, window: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (increase({histogram}_bucket{{{selector}}}[{window}])))"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def nvml_energy_j(s: Scenario) -> float | None:
    """Energy the scenario's GPUs used in the window from the node recorder's NVML counters, in J."""
    if s.window is None:
        return None
    total = 0.0
    found = False
    for node in s.nodes.values():
        inside = [x for x in node.samples if s.window[0] <= x.time <= s.window[1]]
        if len(inside) < 2:
            continue
        first, last = inside[0], inside[-1]
        for before, after in zip(first.gpus, last.gpus, strict=False):
            if before.energy_mj is not None and after.energy_mj is not None:
                total += (after.energy_mj - before.energy_mj) / 1000.0
                found = True
    return total if found and total > 0 else None


def figures_for_run(
    url: str | None, scenarios: list[Scenario]
) -> tuple[dict[str, ServerFigures], str | None]:
    """Figures by scenario name, and a sentence when they are left out (no URL, no answer)."""
    if not url:
        return {}, (
            "Server-side figures left out: no Prometheus was named (the scenarios' meta has no `prometheus`; "
            "give `distinfer report --prometheus URL`)."
        )
    prom = Prometheus(url)
    try:
        prom.check()
        figures = {s.name: f for s in scenarios if (f := server_figures(prom, s)) is not None}
    except PrometheusUnavailable as err:
        log.warning("no Prometheus at %s: %s", url, err)
        return {}, f"Server-side figures left out: no Prometheus answered at {url} ({err})."
    return figures, None
