"""Router A/B on the session's Ray Serve: four synthetic replicas with the prefix-cache model, Serve's
default router and PrefixCacheAffinityRouter alternated ABBA on the same replicas, a shared-prefix
workload sent over real HTTP. Each request's cache hit (the engine's truth log) equals what the model
gives when that replica's requests are replayed through it; each router's hit rate is the one the model
predicts for it; the prefix-aware router's is markedly higher."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

from distinfer.bench.ab import (
    SharedPrefixWorkload,
    abba,
    arm_summary,
    predicted_hit_rate,
    read_truth,
    replay,
    run_ab,
)
from distinfer.config import parse_models

REPLICAS = 4
BLOCK_SIZE = 16
CAPACITY = 4096


def _models(policy: str, truth: Path) -> Any:
    router: dict[str, Any] = {"policy": policy}
    if policy == "prefix_aware":
        router["imbalanced_threshold"] = 4
    return parse_models(
        {
            "ingress": {"layout": "router"},
            "models": [
                {
                    "name": "syn-ab",
                    "engine": "synthetic",
                    "replicas": REPLICAS,
                    "ttft_ms": 2,
                    "itl_ms": 1,
                    "truth_log": str(truth),
                    "request_router": router,
                    "prefix_cache": {
                        "block_size": BLOCK_SIZE,
                        "capacity_blocks": CAPACITY,
                        "prefill_ms_per_token": 0.05,
                    },
                }
            ],
        }
    )


def test_each_router_gets_the_hit_rate_the_prefix_cache_model_predicts(
    ray_serve: Any, tmp_path: Path
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    truth = tmp_path / "truth.jsonl"
    workload = SharedPrefixWorkload(prompts=8, requests_per_prompt=6, prefix_tokens=256, suffix_tokens=16)
    blocks = 8

    def deploy(policy: str) -> str:
        from ray import serve

        from distinfer.serve.app import build_app

        # The whole file as args (ray_serve.deploy passes app_args, which leave the replica count to a
        # Serve config's `deployments`; serve.run has none, so the model would get one replica).
        models = _models(policy, truth).model_dump(mode="json", exclude_none=True)
        serve.run(build_app(models), name="router-ab", route_prefix="/router-ab")
        return f"{ray_serve.url}/router-ab"

    try:
        figures = run_ab(deploy, "syn-ab", workload, truth, blocks=blocks)
    finally:
        ray_serve.delete("router-ab")

    assert [f.arm for f in figures] == abba(blocks) == list("ABBAABBA")
    # Two blocks of one arm in a row run on the same replicas (a switch of router restarts them).
    for f in figures:
        assert len(f.per_replica) == REPLICAS, (f.block, f.per_replica)  # every replica took requests
    for first, second in itertools.pairwise(figures):
        if first.arm == second.arm:
            assert len(set(first.per_replica) | set(second.per_replica)) <= REPLICAS

    # The engine's own count of each request's cached tokens is the model's, replica by replica.
    for f in figures:
        lines = read_truth(truth, f.block)
        prompts = {f"ab-{f.block}-{n}": text for n, (_, text) in enumerate(workload.requests(f.block))}
        assert {x["request_id"]: x["cached_tokens"] for x in lines} == replay(
            lines, BLOCK_SIZE, CAPACITY, prompts
        )

    summary = arm_summary(figures)
    print(json.dumps({arm: {k: str(v) for k, v in figs.items()} for arm, figs in summary.items()}, indent=1))
    aware = predicted_hit_rate("prefix_aware", REPLICAS, workload, BLOCK_SIZE)
    default = predicted_hit_rate("default", REPLICAS, workload, BLOCK_SIZE)
    # Prefix-aware, one request at a time: exactly the model's figure in every block.
    for f in figures:
        if f.arm == "B":
            assert abs(f.hit_rate - aware) < 1e-9, (f.block, f.hit_rate, aware)
    # Default: each block a random draw; the mean over its blocks within its interval of the prediction
    # (with a floor: four blocks are few), and far below the prefix-aware figure.
    measured = summary["default"]["hit_rate"]
    assert abs(measured.mean - default) <= max(measured.half_width, 0.08), (measured, default)
    assert summary["prefix_aware"]["hit_rate"].mean - measured.mean > 0.2


def test_bench_ab_command_writes_each_arm_with_intervals(ray_serve: Any, tmp_path: Path) -> None:
    """`distinfer bench ab` in its own process, onto the session's Ray: 4 blocks ABBA, the JSON file
    holds every block and each arm's estimates; prefix-aware's hit rate is the model's."""
    import subprocess
    import sys

    import yaml

    truth = tmp_path / "truth.jsonl"
    models = _models("default", truth).model_dump(mode="json", exclude_none=True)
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump(models))
    out = tmp_path / "ab.json"
    env = {**ray_serve.env, "PYTHONPATH": str(Path(__file__).parents[2] / "python")}
    args = [
        str(Path(sys.executable).parent / "distinfer"),
        "bench",
        "ab",
        "--models",
        str(models_file),
        "--model",
        "syn-ab",
    ]
    args += ["--ray-address", ray_serve.local.address, "--url", ray_serve.url, "--out", str(out)]
    args += ["--blocks", "4", "--app-name", "router-ab-cli", "--prompts", "4", "--requests-per-prompt", "4"]
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    finally:
        ray_serve.delete("router-ab-cli")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [b["arm"] for b in report["blocks"]] == list("ABBA")
    assert set(report["arms"]) == {"default", "prefix_aware"}
    workload = SharedPrefixWorkload(prompts=4, requests_per_prompt=4, prefix_tokens=256, suffix_tokens=16)
    aware = report["arms"]["prefix_aware"]["hit_rate"]
    assert abs(aware["mean"] - predicted_hit_rate("prefix_aware", REPLICAS, workload, BLOCK_SIZE)) < 1e-9
    assert "prefix_aware: ttft_p50_ms" in done.stdout
