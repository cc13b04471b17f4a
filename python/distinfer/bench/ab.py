"""Router A/B: the same replicas served by Ray Serve's default router (arm A) and by
PrefixCacheAffinityRouter (arm B), in blocks alternated A B B A (so a drift over the run weighs on both
arms alike), on a shared-prefix workload; per-arm figures with confidence intervals from the blocks.

Switching arms redeploys the application with the model's `request_router` changed. Deployed with
`serve.run` (the session's Ray Serve, `distinfer serve`), that replaces the model's replicas: Serve no
longer takes a deployment `version`, and a changed application restarts them. Two blocks of the same
arm in a row (the B B and A A of ABBA) run on the same replicas. Each block sends its own fresh system
prompts, so no block finds another block's prefixes cached: the blocks are independent samples either
way, and the arms differ only in the router.

The synthetic engine's truth log (engines/synthetic.py: `cached_tokens`, `pid`) gives each request's
prefix-cache hit and its replica; `predicted_hit_rate` is what the prefix-cache model predicts for
each router on this workload (docs/router-ab.md). On vLLM there is no truth log: each block's hit rate
and requests per replica are the differences, over the block, of vLLM's own counters
(`vllm:prefix_cache_queries`, `vllm:prefix_cache_hits`, `vllm:request_success`, per `ReplicaId`) as
its Ray stat logger exports them on Ray's metrics port (`VllmCounters`).
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from distinfer.engines.prefix_cache import PrefixCache

ARMS = {"A": "default", "B": "prefix_aware"}

# Two-sided 95 % quantiles of Student's t by degrees of freedom (blocks - 1).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def abba(blocks: int) -> list[str]:
    """The arm of each block: A B B A A B B A ..."""
    return [("A", "B", "B", "A")[i % 4] for i in range(blocks)]


@dataclass(frozen=True)
class SharedPrefixWorkload:
    """`prompts` system prompts of `prefix_tokens` words each, every one sent `requests_per_prompt`
    times with its own `suffix_tokens` words, in a shuffled order (one token is one word on the
    synthetic engine)."""

    prompts: int = 8
    requests_per_prompt: int = 6
    prefix_tokens: int = 256
    suffix_tokens: int = 16
    max_tokens: int = 8
    seed: int = 0
    # A real model's tokens: words its tokenizer encodes as one token each with a leading space
    # (bench/traces.py `load_counter`), drawn at random. None: the synthetic engine's words.
    vocabulary: tuple[str, ...] | None = None

    def _words(self, prefix: str, count: int) -> str:
        """`count` words: `prefix` numbered (synthetic), or drawn from the vocabulary seeded by it."""
        if self.vocabulary is None:
            return " ".join(f"{prefix}{i}" for i in range(count))
        rng = random.Random(f"{self.seed}/{prefix}")
        return " ".join(rng.choice(self.vocabulary) for _ in range(count))

    def requests(self, block: int) -> list[tuple[int, str]]:
        """(system prompt index, prompt text) of one block's requests, in sending order."""
        rng = random.Random(f"{self.seed}-{block}")
        systems = [self._words(f"b{block}p{p}w", self.prefix_tokens) for p in range(self.prompts)]
        order = [p for p in range(self.prompts) for _ in range(self.requests_per_prompt)]
        rng.shuffle(order)
        out = []
        for n, p in enumerate(order):
            suffix = self._words(f"q{block}x{n}y", self.suffix_tokens)
            out.append((p, f"{systems[p]} {suffix}"))
        return out

    def cacheable_prefix(self, block_size: int) -> int:
        """Prefix tokens in full blocks: what a later request of the same system prompt can find cached."""
        return (self.prefix_tokens // block_size) * block_size

    @property
    def prompt_tokens(self) -> int:
        return self.prefix_tokens + self.suffix_tokens


def predicted_hit_rate(policy: str, replicas: int, workload: SharedPrefixWorkload, block_size: int) -> float:
    """Prefix-cache hit rate (cached / prompt tokens) the model predicts, one request at a time, cache
    large enough to hold the block's prompts.

    prefix_aware: a system prompt's first request finds nothing, every later one goes where it went
    (balanced load) and finds its prefix. default: each request goes to a replica picked at random
    (power of two choices between idle replicas), so the j-th request (from 0) of a system prompt finds
    its prefix with probability 1 - (1 - 1/replicas)^j: the chance one of the j before went there.
    """
    k = workload.requests_per_prompt
    found: float
    if policy == "prefix_aware":
        found = k - 1.0
    elif policy == "default":
        found = sum(1 - (1 - 1 / replicas) ** j for j in range(k))
    else:
        raise ValueError(f"unknown policy {policy!r}")
    return found * workload.cacheable_prefix(block_size) / (k * workload.prompt_tokens)


@dataclass
class Sent:
    request_id: str
    ttft_s: float | None
    completion_tokens: int
    ok: bool


def _send(client: httpx.Client, url: str, model: str, request_id: str, prompt: str, max_tokens: int) -> Sent:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    start = time.perf_counter()
    ttft, tokens = None, 0
    with client.stream(
        "POST", f"{url}/v1/completions", json=body, headers={"X-Request-Id": request_id}
    ) as resp:
        if resp.status_code != 200:
            resp.read()
            return Sent(request_id, None, 0, False)
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if any(c.get("text") for c in chunk.get("choices", [])):
                ttft = ttft if ttft is not None else time.perf_counter() - start
                tokens += 1
    return Sent(request_id, ttft, tokens, True)


def run_block(
    url: str, model: str, workload: SharedPrefixWorkload, block: int, concurrency: int = 1
) -> tuple[list[Sent], float]:
    """Send one block's requests (`concurrency` at a time, in order); the answers and the wall time."""
    requests = workload.requests(block)
    start = time.perf_counter()
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(concurrency) as pool:
        sent = list(
            pool.map(
                lambda item: _send(
                    client, url, model, f"ab-{block}-{item[0]}", item[1][1], workload.max_tokens
                ),
                enumerate(requests),
            )
        )
    return sent, time.perf_counter() - start


@dataclass
class BlockFigures:
    block: int
    arm: str
    ttft_p50_ms: float
    ttft_p99_ms: float
    output_tokens_per_s: float
    hit_rate: float
    per_replica: dict[str, int] = field(default_factory=dict)

    @property
    def imbalance(self) -> float:
        """Most requests on one replica over the mean per replica (1 = even)."""
        counts = list(self.per_replica.values())
        return max(counts) / statistics.fmean(counts) if counts else math.nan


def read_truth(path: Path, block: int) -> list[dict[str, Any]]:
    """The truth-log lines of one block's requests."""
    prefix = f"ab-{block}-"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [x for x in lines if str(x["request_id"]).startswith(prefix)]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class BlockCache:
    """What the engines say of one block: prompt tokens looked up, of those found cached, and requests
    per replica."""

    queried: int
    hits: int
    per_replica: dict[str, int]

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queried if self.queried else math.nan


def truth_cache(truth: list[dict[str, Any]]) -> BlockCache:
    """A block's figures from the synthetic engine's truth-log lines."""
    return BlockCache(
        queried=sum(x["prompt_tokens"] for x in truth),
        hits=sum(x["cached_tokens"] for x in truth),
        per_replica=dict(Counter(str(x["pid"]) for x in truth)),
    )


def block_figures(
    block: int, arm: str, sent: list[Sent], wall_s: float, cache: BlockCache | list[dict[str, Any]]
) -> BlockFigures:
    """One block's figures; `cache` is what the engines counted (or the block's truth-log lines)."""
    if isinstance(cache, list):
        cache = truth_cache(cache)
    ttfts = [s.ttft_s * 1000 for s in sent if s.ttft_s is not None]
    return BlockFigures(
        block=block,
        arm=arm,
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p99_ms=_quantile(ttfts, 0.99),
        output_tokens_per_s=sum(s.completion_tokens for s in sent) / wall_s,
        hit_rate=cache.hit_rate,
        per_replica=cache.per_replica,
    )


class TruthLog:
    """Hit source of the synthetic engine: its truth log's lines of the block's requests."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self, block: int) -> None:
        del block

    def finish(self, block: int, requests: int) -> BlockCache:
        deadline = time.monotonic() + 10  # the truth log's lines are written as requests finish
        while len(read_truth(self.path, block)) < requests and time.monotonic() < deadline:
            time.sleep(0.1)
        return truth_cache(read_truth(self.path, block))


# Ray's export names of vLLM's counters (`vllm:x` -> `ray_vllm_x`, `_total` added by the exporter).
_QUERIES, _HITS, _SUCCESS = "vllm_prefix_cache_queries", "vllm_prefix_cache_hits", "vllm_request_success"
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_vllm_counters(text: str, model: str) -> dict[str, dict[str, float]]:
    """Per ReplicaId, vLLM's prefix-cache and request counters for `model` (its `model_name` label)
    from a Prometheus text export (Ray's metrics port)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is None or line.startswith("#"):
            continue
        name = found["name"].removeprefix("ray_").removesuffix("_total")
        if name not in (_QUERIES, _HITS, _SUCCESS):
            continue
        labels = dict(_LABEL.findall(found["labels"] or ""))
        if labels.get("model_name") != model:
            continue
        replica = labels.get("ReplicaId") or labels.get("WorkerId") or "?"
        counts = out.setdefault(replica, {_QUERIES: 0.0, _HITS: 0.0, _SUCCESS: 0.0})
        counts[name] += float(found["value"])
    return out


class VllmCounters:
    """Hit source of real vLLM: its counters on Ray's metrics export, read before and after each block.

    Ray's metrics agent takes them from the replicas every few seconds, so after a block the export is
    read until vLLM's `request_success` has grown by the block's requests (and once more, so the
    prefix-cache counters of the same step are in), at most `timeout_s`."""

    def __init__(self, metrics_url: str, model: str, timeout_s: float = 60, poll_s: float = 1.0) -> None:
        self.metrics_url = metrics_url
        self.model = model
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._before: dict[str, dict[str, float]] = {}

    def read(self) -> dict[str, dict[str, float]]:
        resp = httpx.get(self.metrics_url, timeout=10)
        resp.raise_for_status()
        return parse_vllm_counters(resp.text, self.model)

    def start(self, block: int) -> None:
        del block
        self._before = self.read()

    def _diff(self, after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        zero = {_QUERIES: 0.0, _HITS: 0.0, _SUCCESS: 0.0}
        return {
            replica: {k: v - self._before.get(replica, zero)[k] for k, v in counts.items()}
            for replica, counts in after.items()
        }

    def finish(self, block: int, requests: int) -> BlockCache:
        deadline = time.monotonic() + self.timeout_s
        diff = self._diff(self.read())
        while sum(c[_SUCCESS] for c in diff.values()) < requests and time.monotonic() < deadline:
            time.sleep(self.poll_s)
            diff = self._diff(self.read())
        time.sleep(self.poll_s)
        diff = self._diff(self.read())
        done = sum(c[_SUCCESS] for c in diff.values())
        if done != requests:
            raise RuntimeError(
                f"block {block}: vLLM's request_success grew by {done:g} on {self.metrics_url}, "
                f"not by the block's {requests} requests, within {self.timeout_s:g} s"
            )
        return BlockCache(
            queried=round(sum(c[_QUERIES] for c in diff.values())),
            hits=round(sum(c[_HITS] for c in diff.values())),
            per_replica={r: round(c[_SUCCESS]) for r, c in diff.items() if c[_SUCCESS]},
        )


class HitSource(Protocol):
    def start(self, block: int) -> None: ...

    def finish(self, block: int, requests: int) -> BlockCache: ...


def replay(
    truth: list[dict[str, Any]], block_size: int, capacity_blocks: int, prompts: dict[str, str]
) -> dict[str, int]:
    """The cached tokens the model gives each request when its replica's requests, in arrival order,
    go through a fresh PrefixCache per replica (the truth the engine's own counts must equal)."""
    caches: dict[str, PrefixCache] = {}
    out = {}
    for x in sorted(truth, key=lambda x: x["arrival_unix"]):
        cache = caches.setdefault(str(x["pid"]), PrefixCache(block_size, capacity_blocks))
        out[x["request_id"]] = cache.lookup(prompts[x["request_id"]].split()).cached_tokens
    return out


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float  # of the 95 % confidence interval, from the spread between blocks

    def __str__(self) -> str:
        return f"{self.mean:.3g} ± {self.half_width:.2g}"


def estimate(values: Sequence[float]) -> Estimate:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Estimate(mean, math.nan)
    t = _T95.get(len(values) - 1, 1.96)
    return Estimate(mean, t * statistics.stdev(values) / math.sqrt(len(values)))


def arm_summary(figures: Sequence[BlockFigures]) -> dict[str, dict[str, Estimate]]:
    """Per arm: TTFT P50/P99, output tokens/s, hit rate and imbalance, each a mean over its blocks with
    a 95 % confidence interval."""
    out: dict[str, dict[str, Estimate]] = {}
    for arm in sorted({f.arm for f in figures}):
        mine = [f for f in figures if f.arm == arm]
        out[ARMS.get(arm, arm)] = {
            "ttft_p50_ms": estimate([f.ttft_p50_ms for f in mine]),
            "ttft_p99_ms": estimate([f.ttft_p99_ms for f in mine]),
            "output_tokens_per_s": estimate([f.output_tokens_per_s for f in mine]),
            "hit_rate": estimate([f.hit_rate for f in mine]),
            "imbalance": estimate([f.imbalance for f in mine]),
        }
    return out


def run_ab(
    deploy: Callable[[str], str],
    model: str,
    workload: SharedPrefixWorkload,
    truth_log: Path | HitSource,
    blocks: int = 4,
    concurrency: int = 1,
) -> list[BlockFigures]:
    """Run `blocks` blocks ABBA: `deploy(policy)` puts that router in front of the replicas and returns
    the base URL. `truth_log`: the synthetic engine's truth log, or another HitSource (VllmCounters)."""
    source = TruthLog(truth_log) if isinstance(truth_log, Path) else truth_log
    figures = []
    url, deployed = "", None
    for block, arm in enumerate(abba(blocks)):
        if arm != deployed:
            url, deployed = deploy(ARMS[arm]), arm
        source.start(block)
        sent, wall = run_block(url, model, workload, block, concurrency)
        if not all(s.ok for s in sent):
            raise RuntimeError(f"block {block}: {sum(not s.ok for s in sent)} requests failed")
        figures.append(block_figures(block, arm, sent, wall, source.finish(block, len(sent))))
    return figures


def arm_models(
    models: dict[str, Any], model: str, policy: str, imbalanced_threshold: float
) -> dict[str, Any]:
    """The models file (as a dict) with `model`'s router set to `policy`, in the router layout."""
    out = json.loads(json.dumps(models))
    out["ingress"] = {**out.get("ingress", {}), "layout": "router"}
    router: dict[str, Any] = {"policy": policy}
    if policy == "prefix_aware":
        router["imbalanced_threshold"] = imbalanced_threshold
    for entry in out["models"]:
        if entry["name"] == model:
            entry["request_router"] = router
    return out


def serve_run_deployer(
    models: dict[str, Any], model: str, http_base: str, app_name: str, imbalanced_threshold: float
) -> Callable[[str], str]:
    """deploy(policy) for run_ab: `serve.run` of the app under /app_name on the connected Ray (the whole
    file as args, so each model keeps its replica count)."""

    def deploy(policy: str) -> str:
        from ray import serve

        from distinfer.serve.app import build_app

        args = arm_models(models, model, policy, imbalanced_threshold)
        serve.run(build_app(args), name=app_name, route_prefix=f"/{app_name}")
        return f"{http_base.rstrip('/')}/{app_name}"

    return deploy


def ab_report(figures: Sequence[BlockFigures]) -> dict[str, Any]:
    """What `distinfer bench ab` writes: every block's figures and each arm's estimates."""
    return {
        "blocks": [{**{k: v for k, v in vars(f).items()}, "imbalance": f.imbalance} for f in figures],
        "arms": {
            arm: {k: {"mean": e.mean, "ci95_half_width": e.half_width} for k, e in figs.items()}
            for arm, figs in arm_summary(figures).items()
        },
    }
