"""The router A/B's vLLM side without vLLM: each block's hit rate and requests per replica are the
differences of vLLM's counters as Ray's metrics port exports them (the text below is the shape a real
export of vLLM 0.32's Ray stat logger had), and the shared-prefix workload in a real model's words."""

from __future__ import annotations

from typing import Any

import pytest

from distinfer.bench.ab import SharedPrefixWorkload, VllmCounters, parse_vllm_counters

_LABELS = (
    'Component="core_worker",NodeAddress="192.0.2.2",ReplicaId="{replica}",SessionName="s",'
    'Version="2.60.0",WorkerId="w{replica}",engine="0",{extra}model_name="{model}",'
    'otel_scope_name="ray._private.telemetry.open_telemetry_metric_recorder",otel_scope_schema_url=""'
)


def export(counts: dict[str, tuple[float, float, float]], model: str = "smollm2") -> str:
    """Ray's metrics text: per replica (queries, hits, successes), plus another model and a histogram."""
    lines = ["# HELP ray_vllm_prefix_cache_queries_total Prefix cache queries.", "# TYPE x counter"]
    for replica, (queries, hits, ok) in counts.items():
        labels = _LABELS.format(replica=replica, model=model, extra="")
        lines.append(f"ray_vllm_prefix_cache_queries_total{{{labels}}} {queries}")
        lines.append(f"ray_vllm_prefix_cache_hits_total{{{labels}}} {hits}")
        ok_labels = _LABELS.format(replica=replica, model=model, extra='finished_reason="length",')
        lines.append(f"ray_vllm_request_success_total{{{ok_labels}}} {ok}")
        lines.append(f"ray_vllm_request_success_total{{{ok_labels.replace('length', 'stop')}}} 1.0")
        lines.append(f"ray_vllm_prefix_cache_hits_total{{{labels.replace(model, 'other')}}} 999.0")
        lines.append(f'ray_vllm_e2e_request_latency_seconds_bucket{{{labels},le="1.0"}} 5.0')
    return "\n".join(lines) + "\n"


def test_the_counters_are_read_per_replica_for_the_model_only() -> None:
    got = parse_vllm_counters(export({"r1": (6400, 2560, 7), "r2": (800, 0, 2)}), "smollm2")
    assert got == {
        "r1": {"vllm_prefix_cache_queries": 6400, "vllm_prefix_cache_hits": 2560, "vllm_request_success": 8},
        "r2": {"vllm_prefix_cache_queries": 800, "vllm_prefix_cache_hits": 0, "vllm_request_success": 3},
    }


def test_a_block_is_the_difference_and_waits_for_the_export(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before the block: r1 holds counts of an earlier block; r0 is a replica of the other arm, gone.
    reads: list[dict[str, tuple[float, float, float]]] = [
        {"r0": (900, 100, 4), "r1": (1000, 200, 5)},
        {"r0": (900, 100, 4), "r1": (1800, 500, 7)},  # the export not yet up to date: 2 of 4 requests
        {"r0": (900, 100, 4), "r1": (2600, 800, 9), "r2": (800, 0, 1)},
        {"r0": (900, 100, 4), "r1": (2600, 800, 9), "r2": (800, 0, 1)},
    ]
    source = VllmCounters("http://127.0.0.1:1/metrics", "smollm2", timeout_s=5, poll_s=0)
    texts = iter(export(r) for r in reads)

    def get(url: str, timeout: float) -> Any:
        class Resp:
            text = next(texts)

            def raise_for_status(self) -> None:
                pass

        return Resp()

    monkeypatch.setattr("distinfer.bench.ab.httpx.get", get)
    source.start(0)
    cache = source.finish(0, requests=6)
    assert (cache.queried, cache.hits) == (2400, 600)
    assert cache.hit_rate == 0.25
    assert cache.per_replica == {"r1": 4, "r2": 2}  # r0 took nothing in this block


def test_the_workload_in_a_real_models_words_shares_each_system_prompt() -> None:
    vocabulary = ("apple", "river", "stone", "cloud", "green")
    workload = SharedPrefixWorkload(
        prompts=2, requests_per_prompt=3, prefix_tokens=10, suffix_tokens=4, vocabulary=vocabulary
    )
    sent = workload.requests(1)
    assert len(sent) == 6
    for p in (0, 1):
        texts = [text.split() for q, text in sent if q == p]
        assert len({tuple(t[:10]) for t in texts}) == 1 and all(len(t) == 14 for t in texts)
        assert all(w in vocabulary for t in texts for w in t)
    assert workload.requests(1) == sent and workload.requests(2) != sent
    # Without a vocabulary the synthetic engine's numbered words, as before.
    assert SharedPrefixWorkload(prompts=1, requests_per_prompt=1, prefix_tokens=2, suffix_tokens=1).requests(
        0
    ) == [(0, "b0p0w0 b0p0w1 q0x0y0")]
