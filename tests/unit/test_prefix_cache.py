"""The synthetic engine's prefix-cache model: LRU of chained blocks, vLLM's counters, prefill cost, and
the router choice mapped to the `request_router_config` Ray Serve's own schema accepts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from distinfer.config import ConfigError, SyntheticModel, model_deployment_options, parse_models
from distinfer.engines.base import GenerationRequest, SamplingParams
from distinfer.engines.prefix_cache import PrefixCache, block_hashes
from distinfer.engines.synthetic import SyntheticEngine


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_blocks_are_chained_and_the_partial_block_is_not_cached() -> None:
    a = block_hashes(words("a", 10), 4)
    assert len(a) == 2  # 10 tokens: two full blocks of 4, the last 2 tokens are no block
    # The same second block after a different first block is a different block (vLLM's chained hash).
    b = block_hashes(words("z", 4) + words("a", 10)[4:8], 4)
    assert a[0] != b[0] and a[1] != b[1]
    assert block_hashes(words("a", 8), 4) == a


def test_hits_count_the_leading_cached_blocks_in_tokens() -> None:
    cache = PrefixCache(block_size=4, capacity_blocks=100)
    system = words("s", 12)  # three blocks
    first = cache.lookup(system + words("u", 6))
    assert (first.prompt_tokens, first.cached_tokens) == (18, 0)
    second = cache.lookup(system + words("v", 6))
    assert (second.cached_tokens, second.uncached_tokens) == (12, 6)
    # A prompt differing in its first token shares nothing, even with the same later text.
    third = cache.lookup(["x", *system[1:], *words("v", 6)])
    assert third.cached_tokens == 0
    # A hit stops at the first missing block: the second block changed, so only the first is found.
    fourth = cache.lookup([*system[:4], "y", *system[5:]])
    assert fourth.cached_tokens == 4
    assert (cache.queries, cache.hits) == (18 + 18 + 18 + 12, 12 + 4)


def test_least_recently_used_blocks_go_first() -> None:
    cache = PrefixCache(block_size=2, capacity_blocks=4)
    a, b, c = words("a", 4), words("b", 4), words("c", 4)  # two blocks each
    cache.lookup(a)
    cache.lookup(b)
    assert cache.lookup(a).cached_tokens == 4  # a is now the most recently used
    cache.lookup(c)  # 6 blocks held for a moment: b's two, the least recently used, go
    assert len(cache) == 4
    assert cache.lookup(a).cached_tokens == 4
    assert cache.lookup(c).cached_tokens == 4
    assert cache.lookup(b).cached_tokens == 0  # evicted; looking it up holds it again, evicting a
    assert cache.lookup(a).cached_tokens == 0


def _engine(tmp_path: Path, **cache: object) -> tuple[SyntheticEngine, Path]:
    truth = tmp_path / "truth.jsonl"
    models = parse_models(
        {
            "models": [
                {
                    "name": "syn",
                    "engine": "synthetic",
                    "ttft_ms": 5,
                    "truth_log": str(truth),
                    "prefix_cache": {"block_size": 4, "capacity_blocks": 64, **cache},
                }
            ]
        }
    )
    spec = models.models[0]
    assert isinstance(spec, SyntheticModel)
    return SyntheticEngine(spec), truth


async def _first_token_s(engine: SyntheticEngine, prompt: str, request_id: str) -> float:
    request = GenerationRequest(
        request_id=request_id, prompt=prompt, sampling=SamplingParams(max_tokens=2, ignore_eos=True)
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    async for _ in engine.generate(request):
        return loop.time() - start
    raise AssertionError("no token")


def test_prefill_costs_time_per_uncached_token_and_the_truth_log_says_how_many(tmp_path: Path) -> None:
    engine, truth = _engine(tmp_path, prefill_ms_per_token=2.0)
    system = " ".join(words("s", 200))  # 200 tokens: 50 blocks of 4

    async def run() -> tuple[float, float]:
        cold = await _first_token_s(engine, system + " q1 q2", "r1")
        warm = await _first_token_s(engine, system + " q3 q4", "r2")
        return cold, warm

    cold, warm = asyncio.run(run())
    # cold: 5 ms + 202 uncached x 2 ms = 409 ms; warm: 5 ms + 2 uncached x 2 ms = 9 ms.
    assert 0.40 <= cold < 0.40 + 0.15
    assert warm < 0.1
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert [(x["prompt_tokens"], x["cached_tokens"]) for x in lines] == [(202, 0), (202, 200)]
    assert engine.prefix_cache_counters() == (404, 200)


def test_router_choice_maps_to_serve_request_router_config() -> None:
    from ray.serve.schema import DeploymentSchema

    base = {"name": "syn", "engine": "synthetic"}
    prefix = parse_models(
        {"models": [{**base, "request_router": {"policy": "prefix_aware", "imbalanced_threshold": 4}}]}
    )
    options = model_deployment_options(prefix.models[0])
    assert options["request_router_config"] == {
        "request_router_class": "distinfer.serve.routing:PrefixCacheAffinityRouter",
        "request_router_kwargs": {"imbalanced_threshold": 4.0, "match_rate_threshold": 0.1},
    }
    default = parse_models({"models": [{**base, "request_router": {"policy": "default"}}]})
    default_options = model_deployment_options(default.models[0])
    for opts in (options, default_options):
        schema = DeploymentSchema.model_validate(opts)  # Serve's own schema of a config's deployment
        assert schema.request_router_config is not None
    assert "request_router_config" not in model_deployment_options(parse_models({"models": [base]}).models[0])


@pytest.mark.parametrize(
    ("router", "says"),
    [
        ({"policy": "prefix_aware"}, "imbalanced_threshold set explicitly"),
        ({"policy": "default", "imbalanced_threshold": 3}, "prefix_aware only"),
        ({"policy": "random"}, "policy"),
    ],
)
def test_router_choice_refused(router: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_models({"models": [{"name": "syn", "engine": "synthetic", "request_router": router}]})
