"""The hf engine's KV-cache batching is exact: a request decoded in a batch that others join and
leave mid-way produces the same greedy tokens as the same request decoded alone.

Runs the engine in-process on the tiny model (real transformers, real torch, no Ray): the batching is
the engine's own, below the serving layer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from distinfer.config import HfModel
from distinfer.engines.base import GenerationRequest, SamplingParams
from distinfer.engines.hf import HfEngine

PROMPTS = ["Once upon a time", "The capital of France is", "Write a haiku about the sea", "List three fruits"]


async def _generate(engine: HfEngine, request_id: str, prompt: str, max_tokens: int) -> tuple[str, int]:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    text, count = "", 0
    async for delta in engine.generate(GenerationRequest(request_id, prompt, sampling)):
        text, count = text + delta.text, delta.completion_tokens
    return text, count


async def _alone_then_together(model_dir: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    spec = HfModel(name="tiny", engine="hf", model=str(model_dir), device="cpu", dtype="float32")
    engine = HfEngine(spec)
    await engine.start()
    # The tiny model's weights are random, so its top logits nearly tie; in float32 the padded batch's
    # different summation order can flip an argmax. float64 leaves only real differences visible.
    engine._model.to(torch.float64)
    try:
        # Different lengths, so rows finish at different steps and the cache is trimmed in between.
        lengths = [24, 8, 16, 12]
        alone = [
            await _generate(engine, f"alone-{i}", p, n)
            for i, (p, n) in enumerate(zip(PROMPTS, lengths, strict=True))
        ]

        async def staggered(i: int) -> tuple[str, int]:
            await asyncio.sleep(0.02 * i)  # joins while the others are decoding
            return await _generate(engine, f"together-{i}", PROMPTS[i], lengths[i])

        together = await asyncio.gather(*(staggered(i) for i in range(len(PROMPTS))))
        return alone, list(together), len(engine._batch.rows)
    finally:
        await engine.shutdown()


def test_batched_decoding_matches_decoding_alone(tiny_model_dir: Path) -> None:
    alone, together, _ = asyncio.run(_alone_then_together(tiny_model_dir))
    assert [count for _, count in alone] == [24, 8, 16, 12]
    assert together == alone
