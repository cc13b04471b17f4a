"""The hf engine batches concurrent requests: 32 at once give >= 3x the output tokens/s of 1 at a time.

Against the real Ray Serve app of the session (tests/serve/conftest.py's `main_app`, model `tiny`,
max_ongoing_requests 32), over HTTP. One request at a time pays a full model step per token; 32
concurrent requests share each step, so throughput must grow with concurrency (issue 2).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = pytest.mark.ray

MAX_TOKENS = 48
CONCURRENT = 32


async def _one(client: httpx.AsyncClient, url: str, index: int) -> int:
    body = {
        "model": "tiny",
        "prompt": f"Tell me a story about a robot number {index}",
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "temperature": 1.0,
        "seed": index,
    }
    response = await client.post(f"{url}/v1/completions", json=body)
    assert response.status_code == 200, response.text
    tokens = int(response.json()["usage"]["completion_tokens"])
    assert tokens == MAX_TOKENS
    return tokens


async def _tokens_per_s(url: str, concurrency: int, rounds: int) -> float:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await _one(client, url, -1)  # warm: connection, replica, torch kernels
        started = time.perf_counter()
        total = 0
        for r in range(rounds):
            counts = await asyncio.gather(
                *(_one(client, url, r * concurrency + i) for i in range(concurrency))
            )
            total += sum(counts)
        return total / (time.perf_counter() - started)


def test_32_concurrent_requests_give_3x_the_tokens_per_second_of_one(main_app: str) -> None:
    single = asyncio.run(_tokens_per_s(main_app, 1, rounds=4))
    batched = asyncio.run(_tokens_per_s(main_app, CONCURRENT, rounds=2))
    ratio = batched / single
    print(f"hf tiny: 1 request {single:.0f} tok/s, {CONCURRENT} concurrent {batched:.0f} tok/s, x{ratio:.1f}")
    assert ratio >= 3.0, f"batching gave only x{ratio:.2f} ({single:.0f} -> {batched:.0f} output tokens/s)"
