"""The `hf` engine: any transformers causal LM, on the CPU or any torch device, with continuous batching.

Concurrent requests are decoded together: one background loop runs one model step for every
active sequence at once (left-padded into a single batch), samples each sequence's next token with
its own settings, and hands each token to its request's stream as soon as the step ends. New
requests join at the next step; finished or aborted ones leave at once. The model call runs in a
worker thread so the replica's event loop keeps streaming while torch computes.

Each step re-encodes every sequence in full (no KV cache). That keeps batching of sequences of
different lengths simple and exact; its cost grows with sequence length, which is fine for the
small models this engine exists for (the tiny test model, SmolLM2-135M) and short benchmark
prompts. Large models on GPUs belong to the vllm engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distinfer.config import HfModel
from distinfer.engines.base import (
    ChatMessage,
    Engine,
    EngineError,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    simple_chat_prompt,
)

log = logging.getLogger(__name__)


@dataclass
class _Sequence:
    request_id: str
    token_ids: list[int]
    prompt_len: int
    sampling: SamplingParams
    out: asyncio.Queue[TokenDelta | BaseException] = field(default_factory=asyncio.Queue)
    text: str = ""
    generator: Any = None

    @property
    def generated(self) -> list[int]:
        return self.token_ids[self.prompt_len :]


class HfEngine(Engine):
    def __init__(self, spec: HfModel) -> None:
        self._spec = spec
        self._max_batch = spec.max_batch_size or spec.max_ongoing_requests
        self._pending: asyncio.Queue[_Sequence] = asyncio.Queue()
        self._active: dict[str, _Sequence] = {}
        self._aborted: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._max_model_len = spec.max_model_len or 0

    # ---- set-up ----

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._loop_task = asyncio.create_task(self._run(), name="hf-batch-loop")

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = "auto" if self._spec.dtype == "auto" else getattr(torch, self._spec.dtype)
        device = self._spec.device
        self._tokenizer = AutoTokenizer.from_pretrained(self._spec.model)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if device == "auto":
            kwargs["device_map"] = "auto"
        model = AutoModelForCausalLM.from_pretrained(self._spec.model, **kwargs)
        if device != "auto":
            model = model.to(device)  # type: ignore[arg-type]
        self._model = model.eval()
        self._device = model.device
        native = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self._max_model_len = min(self._spec.max_model_len or native, native)
        self._pad_id = self._tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self._tokenizer.eos_token_id or 0
        eos = self._tokenizer.eos_token_id
        self._eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        log.info("hf model %s on %s, max_model_len %d", self._spec.model, self._device, self._max_model_len)

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def shutdown(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def check_health(self) -> None:
        if self._failure is not None:
            raise EngineError(f"hf batch loop failed: {self._failure!r}")
        if self._loop_task is None or self._loop_task.done():
            raise EngineError("hf batch loop is not running")

    # ---- tokenizer helpers ----

    def tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if not getattr(self._tokenizer, "chat_template", None):
            return simple_chat_prompt(messages)
        return str(self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))

    # ---- requests ----

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        import torch

        if self._failure is not None:
            raise EngineError(f"hf batch loop failed: {self._failure!r}")
        ids = list(request.prompt_token_ids or self.tokenize(request.prompt))
        seq = _Sequence(request.request_id, ids, len(ids), request.sampling)
        if request.sampling.seed is not None:
            seq.generator = torch.Generator(device="cpu").manual_seed(request.sampling.seed)
        await self._pending.put(seq)
        finished = False
        try:
            while not finished:
                item = await seq.out.get()
                if isinstance(item, BaseException):
                    raise EngineError(f"generation failed: {item!r}") from item
                finished = item.finish_reason is not None
                yield item
        finally:
            if not finished:
                await self.abort(request.request_id)

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)

    # ---- the batch loop ----

    async def _run(self) -> None:
        try:
            while True:
                if not self._active:
                    seq = await self._pending.get()
                    self._active[seq.request_id] = seq
                while not self._pending.empty() and len(self._active) < self._max_batch:
                    seq = self._pending.get_nowait()
                    self._active[seq.request_id] = seq
                for request_id in list(self._aborted):
                    self._active.pop(request_id, None)
                    self._aborted.discard(request_id)
                if not self._active:
                    continue
                batch = list(self._active.values())
                next_ids = await asyncio.to_thread(self._step, batch)
                for seq, token in zip(batch, next_ids, strict=True):
                    self._advance(seq, token)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a broken model must fail its requests, not hang them
            log.exception("hf batch loop failed")
            self._failure = err
            for seq in self._active.values():
                seq.out.put_nowait(err)
            self._active.clear()

    def _step(self, batch: list[_Sequence]) -> list[int]:
        import torch

        width = max(len(s.token_ids) for s in batch)
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):  # left padding: every sequence's last token in the last column
            ids[row, width - len(seq.token_ids) :] = torch.tensor(seq.token_ids)
            mask[row, width - len(seq.token_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self._model(
                input_ids=ids.to(self._device),
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                use_cache=False,
            )
            logits = out.logits[:, -1, :].float().cpu()
            return [self._sample(logits[row], seq) for row, seq in enumerate(batch)]

    def _sample(self, logits: Any, seq: _Sequence) -> int:
        import torch

        params = seq.sampling
        if params.ignore_eos:
            for eos in self._eos_ids:
                logits[eos] = float("-inf")
        if params.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < params.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=seq.generator))

    def _advance(self, seq: _Sequence, token: int) -> None:
        if seq.request_id not in self._active:
            return
        seq.token_ids.append(token)
        generated = seq.generated
        text = self._tokenizer.decode(generated, skip_special_tokens=True)
        reason: FinishReason | None = None
        hit_eos = token in self._eos_ids and not seq.sampling.ignore_eos
        if hit_eos or any(s in text for s in seq.sampling.stop):
            reason = "stop"
        elif len(generated) >= seq.sampling.max_tokens or len(seq.token_ids) >= self._max_model_len:
            reason = "length"
        if reason is None:  # hold back a partly decoded multi-byte character until it completes
            text = text.rstrip("\ufffd")
        delta, seq.text = text[len(seq.text) :], text
        seq.out.put_nowait(TokenDelta(delta, seq.prompt_len, len(generated), reason))
        if reason is not None:
            del self._active[seq.request_id]
