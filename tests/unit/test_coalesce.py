"""The model replica's event batching: per-token timing kept for slow tokens, bunching only what waits."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator

import pytest

from distinfer.engines.base import TokenDelta
from distinfer.serve.coalesce import coalesce_ready, merge_deltas, whole_answer
from distinfer.serve.model_server import Accepted, Event, Rejected


class Source:
    """An event stream like ModelServer.stream: verdict, then deltas; records whether it was closed."""

    def __init__(self, tokens: int, gap_s: float, fail_at: int | None = None) -> None:
        self.tokens, self.gap_s, self.fail_at = tokens, gap_s, fail_at
        self.cleaned_up = False

    async def stream(self) -> AsyncGenerator[Event, None]:
        try:
            yield Accepted(prompt_tokens=3, max_tokens=self.tokens)
            for i in range(self.tokens):
                if self.gap_s:
                    await asyncio.sleep(self.gap_s)
                if i == self.fail_at:
                    raise RuntimeError("engine broke")
                last = i == self.tokens - 1
                yield TokenDelta(f"t{i} ", 3, i + 1, "length" if last else None)
        finally:
            self.cleaned_up = True


def deltas(batches: list[list[Event]]) -> list[TokenDelta]:
    return [e for batch in batches for e in batch if isinstance(e, TokenDelta)]


async def collect(gen: AsyncGenerator[list[Event], None]) -> tuple[list[list[Event]], list[float]]:
    batches, times = [], []
    async for batch in gen:
        batches.append(batch)
        times.append(time.monotonic())
    return batches, times


def test_slow_tokens_travel_one_by_one_as_produced() -> None:
    source = Source(tokens=5, gap_s=0.03)
    batches, times = asyncio.run(collect(coalesce_ready(source.stream())))
    assert isinstance(batches[0][0], Accepted)
    assert [len(b) for b in batches[1:]] == [1, 1, 1, 1, 1]  # nothing waits for company
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert all(gap > 0.02 for gap in gaps), gaps
    assert [d.completion_tokens for d in deltas(batches)] == [1, 2, 3, 4, 5]


def test_fast_tokens_are_bunched_in_order_without_loss() -> None:
    source = Source(tokens=500, gap_s=0)
    batches, _ = asyncio.run(collect(coalesce_ready(source.stream())))
    got = deltas(batches)
    assert [d.completion_tokens for d in got] == list(range(1, 501))
    assert got[-1].finish_reason == "length"
    assert len(batches) < 100  # far fewer transport items than tokens
    assert source.cleaned_up


def test_closing_the_consumer_closes_the_source() -> None:
    source = Source(tokens=1000, gap_s=0.01)

    async def take_three() -> None:
        gen = coalesce_ready(source.stream())
        for _ in range(3):
            await gen.__anext__()
        await gen.aclose()  # what a client disconnect does to the replica's generator

    asyncio.run(take_three())
    assert source.cleaned_up  # ModelServer.stream's cleanup is where the engine aborts


def test_engine_failure_reaches_the_consumer() -> None:
    source = Source(tokens=10, gap_s=0, fail_at=4)
    with pytest.raises(RuntimeError, match="engine broke"):
        asyncio.run(collect(coalesce_ready(source.stream())))


def test_non_streamed_answer_is_verdict_then_one_merged_delta() -> None:
    source = Source(tokens=4, gap_s=0)
    batches, _ = asyncio.run(collect(whole_answer(source.stream())))
    assert len(batches) == 2
    assert isinstance(batches[0][0], Accepted)
    (merged,) = batches[1]
    assert merged == TokenDelta("t0 t1 t2 t3 ", 3, 4, "length")


def test_rejection_passes_through_alone() -> None:
    async def rejected() -> AsyncGenerator[Event, None]:
        yield Rejected(400, "too long")

    batches, _ = asyncio.run(collect(whole_answer(rejected())))
    assert batches == [[Rejected(400, "too long")]]
    assert merge_deltas([TokenDelta("a", 1, 1), TokenDelta("b", 1, 2, "stop")]) == TokenDelta(
        "ab", 1, 2, "stop"
    )
