"""vLLM's engine metrics, for the engines that do not export them themselves (hf, synthetic).

vLLM running under Ray reports its `vllm:*` metrics through Ray's metrics agent (its Ray stat logger,
engines/vllm.py), where they appear on every node's metrics export port as `ray_vllm_*` (Ray prefixes
`ray_` and Prometheus names take `_` for `:`). A model replica of another engine exports the same
names here, with vLLM's labels (`model_name`, `engine`), so one dashboard and one report query serve
every engine:

| exported as (Prometheus)                              | kind      | what                                  |
| ----------------------------------------------------- | --------- | ------------------------------------- |
| ray_vllm_num_requests_running                         | gauge     | requests the engine is generating for |
| ray_vllm_num_requests_waiting                         | gauge     | requests waiting to join its batch    |
| ray_vllm_kv_cache_usage_perc                          | gauge     | share (0..1) of KV cache in use (hf) |
| ray_vllm_prompt_tokens_total                          | counter   | prompt tokens of finished requests    |
| ray_vllm_generation_tokens_total                      | counter   | generated tokens of finished requests |
| ray_vllm_request_success_total                        | counter   | finished requests                     |
| ray_vllm_prefix_cache_queries_total                   | counter   | prompt tokens looked up (synthetic)   |
| ray_vllm_prefix_cache_hits_total                      | counter   | of those, tokens found cached         |
| ray_vllm_time_to_first_token_seconds                  | histogram | replica receipt -> first token        |
| ray_vllm_request_time_per_output_token_seconds        | histogram | a request's mean TPOT                 |
| ray_vllm_e2e_request_latency_seconds                  | histogram | replica receipt -> last token         |
| ray_vllm_request_queue_time_seconds                   | histogram | replica receipt -> engine start       |
| ray_vllm_request_prefill_time_seconds                 | histogram | engine start -> first token           |

Gauges and the prefix-cache counters are read from the engine once a second (never per token); the
rest are recorded once per finished request. Ray exports them every few seconds, which is what any
scrape can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from distinfer.engines.base import Engine
from distinfer.serve.model_server import ReplicaTiming

log = logging.getLogger(__name__)

# Ray metric names take no ':' (vLLM's Ray stat logger replaces it the same way).
RUNNING = "vllm_num_requests_running"
WAITING = "vllm_num_requests_waiting"
KV_CACHE = "vllm_kv_cache_usage_perc"
PROMPT_TOKENS = "vllm_prompt_tokens"
GENERATION_TOKENS = "vllm_generation_tokens"
REQUEST_SUCCESS = "vllm_request_success"
PREFIX_QUERIES = "vllm_prefix_cache_queries"
PREFIX_HITS = "vllm_prefix_cache_hits"
TTFT = "vllm_time_to_first_token_seconds"
TPOT = "vllm_request_time_per_output_token_seconds"
E2E = "vllm_e2e_request_latency_seconds"
QUEUE = "vllm_request_queue_time_seconds"
PREFILL = "vllm_request_prefill_time_seconds"

TAG_KEYS = ("model_name", "engine")
# vLLM's own bucket boundaries (seconds), so the histograms of every engine compare bucket for bucket.
TTFT_BUCKETS = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0, 160.0, 640.0, 2560.0,
]  # fmt: skip
TPOT_BUCKETS = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0,
]  # fmt: skip
REQUEST_BUCKETS = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
]  # fmt: skip
GAUGE_INTERVAL_S = 1.0


class EngineMetrics:
    """One model replica's engine metrics (created inside a Ray Serve replica)."""

    def __init__(self, model_name: str, engine: Engine) -> None:
        from ray.util import metrics

        self._engine = engine
        self._tags = {"model_name": model_name, "engine": "0"}

        def gauge(name: str, text: str) -> Any:
            return metrics.Gauge(name, description=text, tag_keys=TAG_KEYS)

        def counter(name: str, text: str) -> Any:
            return metrics.Counter(name, description=text, tag_keys=TAG_KEYS)

        def histogram(name: str, text: str, buckets: list[float]) -> Any:
            return metrics.Histogram(name, description=text, boundaries=buckets, tag_keys=TAG_KEYS)

        self.running = gauge(RUNNING, "Number of requests the engine is generating for.")
        self.waiting = gauge(WAITING, "Number of requests waiting to join the engine's batch.")
        self.kv_cache = gauge(KV_CACHE, "KV-cache usage: 1 means 100 percent usage.")
        self.prompt_tokens = counter(PROMPT_TOKENS, "Number of prefill tokens processed.")
        self.generation_tokens = counter(GENERATION_TOKENS, "Number of generation tokens processed.")
        self.success = counter(REQUEST_SUCCESS, "Count of successfully processed requests.")
        self.prefix_queries = counter(
            PREFIX_QUERIES, "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_hits = counter(PREFIX_HITS, "Prefix cache hits, in terms of number of cached tokens.")
        self._prefix_seen = (0, 0)
        self.ttft = histogram(TTFT, "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.tpot = histogram(TPOT, "Histogram of time per output token in seconds.", TPOT_BUCKETS)
        self.e2e = histogram(E2E, "Histogram of end to end request latency in seconds.", REQUEST_BUCKETS)
        self.queue = histogram(QUEUE, "Histogram of time spent in the waiting queue.", REQUEST_BUCKETS)
        self.prefill = histogram(PREFILL, "Histogram of time spent in the prefill phase.", REQUEST_BUCKETS)
        self._task: asyncio.Task[None] | None = None

    def finished(self, timing: ReplicaTiming, end: float) -> None:
        """Record one finished request (ModelServer's `on_finished`)."""
        tags = self._tags
        if timing.prompt_tokens:  # Ray's Counter refuses inc(0): the synthetic engine's empty prompt
            self.prompt_tokens.inc(timing.prompt_tokens, tags=tags)
        if timing.completion_tokens:
            self.generation_tokens.inc(timing.completion_tokens, tags=tags)
        self.success.inc(1, tags=tags)
        self.e2e.observe(max(0.0, end - timing.replica), tags=tags)
        self.queue.observe(max(0.0, timing.engine_start - timing.replica), tags=tags)
        if timing.first_token is not None:
            self.ttft.observe(max(0.0, timing.first_token - timing.replica), tags=tags)
            self.prefill.observe(max(0.0, timing.first_token - timing.engine_start), tags=tags)
            if timing.completion_tokens > 1:
                tpot = (end - timing.first_token) / (timing.completion_tokens - 1)
                self.tpot.observe(max(0.0, tpot), tags=tags)

    def sample_gauges(self) -> None:
        stats = self._engine.stats()
        if stats is not None:
            self.running.set(stats.active, tags=self._tags)
            self.waiting.set(stats.queued, tags=self._tags)
        counters = self._engine.prefix_cache_counters()
        if counters is not None:
            queries, hits = counters
            if queries > self._prefix_seen[0]:  # Ray's Counter refuses inc(0)
                self.prefix_queries.inc(queries - self._prefix_seen[0], tags=self._tags)
            if hits > self._prefix_seen[1]:
                self.prefix_hits.inc(hits - self._prefix_seen[1], tags=self._tags)
            self._prefix_seen = counters
        usage = self._engine.kv_cache_usage()
        if usage is not None:
            self.kv_cache.set(usage, tags=self._tags)

    def start(self) -> None:
        """Sample the gauges every GAUGE_INTERVAL_S on the running event loop."""
        self.sample_gauges()
        self._task = asyncio.get_running_loop().create_task(self._sample_forever(), name="engine-metrics")

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(GAUGE_INTERVAL_S)
            try:
                self.sample_gauges()
            except Exception as err:  # a metric must never take the replica down
                log.warning("engine metrics: %r", err)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
