"""The `hf` engine: any transformers causal LM, on the CPU or any torch device, with continuous batching.

Concurrent requests are decoded together: one background loop runs one model step for every
active sequence at once (left-padded into a single batch), samples each sequence's next token with
its own settings, and hands each token to its request's stream as soon as the step ends. New
requests join at the next step; finished or aborted ones leave at once. The model call runs in a
worker thread so the replica's event loop keeps streaming while torch computes.

A KV cache keeps each step to one new token per sequence: a joining request is prefilled alone,
and its cache is merged into the batch's (left-padded to the longest, with an attention mask that
hides the padding); a leaving one's row is dropped, and padding no row needs any more is trimmed.
Models whose cache is not a plain per-layer key/value cache (sliding-window layers, state-space
models) fall back to re-encoding every sequence in full each step: exact, but its cost grows with
the sequence length. Large models on GPUs belong to the vllm engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distinfer.config import HfModel
from distinfer.engines.base import (
    ChatMessage,
    Engine,
    EngineError,
    EngineStats,
    EngineTiming,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    simple_chat_prompt,
    start_of_text,
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
    timing: EngineTiming = field(default_factory=EngineTiming)

    @property
    def generated(self) -> list[int]:
        return self.token_ids[self.prompt_len :]


def _plain_kv_cache(cache: Any) -> bool:
    """A cache whose every layer holds keys/values as [batch, heads, seq, dim] tensors we may edit."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(
        type(layer) is DynamicLayer and not isinstance(layer, DynamicSlidingWindowLayer) for layer in layers
    )


class _KvBatch:
    """The decoding batch's KV cache: row i belongs to rows[i]; mask marks real (1) vs padding (0)."""

    def __init__(self) -> None:
        self.rows: list[_Sequence] = []
        self.cache: Any = None
        self.mask: Any = None

    def add(self, seq: _Sequence, cache: Any) -> None:
        """Append a prefilled sequence's cache as a new row, left-padding the shorter side."""
        import torch

        length = cache.layers[0].keys.shape[-2]
        mask = torch.ones(1, length, dtype=torch.long)
        if not self.rows:
            self.rows, self.cache, self.mask = [seq], cache, mask
            return
        width = max(self.mask.shape[1], length)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)])
            mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)])
        self.mask = torch.cat([_pad_left_mask(self.mask, width), _pad_left_mask(mask, width)])
        self.rows.append(seq)

    def keep(self, request_ids: set[str]) -> None:
        """Drop rows whose request ended, then the padding columns no remaining row needs."""
        import torch

        keep = [i for i, seq in enumerate(self.rows) if seq.request_id in request_ids]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long)
        self.rows = [self.rows[i] for i in keep]
        self.mask = self.mask.index_select(0, index)
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))[:, :, first:]
            layer.values = layer.values.index_select(0, index.to(layer.values.device))[:, :, first:]


def _pad_left(t: Any, width: int) -> Any:
    import torch

    missing = width - t.shape[-2]
    if missing == 0:
        return t
    return torch.cat([t.new_zeros(*t.shape[:-2], missing, t.shape[-1]), t], dim=-2)


def _pad_left_mask(mask: Any, width: int) -> Any:
    import torch

    missing = width - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)


@functools.cache
def _transformers_release() -> str:
    return f"transformers {importlib.metadata.version('transformers')}"


class HfEngine(Engine):
    kind = "hf"

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
        self._batch = _KvBatch()
        self._use_cache = True
        self._tokens_generated = 0

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

    @property
    def version(self) -> str:
        return _transformers_release()

    async def shutdown(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    def stats(self) -> EngineStats:
        rows = len(self._batch.rows) if self._use_cache else len(self._active)
        return EngineStats(
            active=len(self._active),
            queued=self._pending.qsize(),
            batch_rows=rows,
            tokens_generated=self._tokens_generated,
        )

    def kv_cache_usage(self) -> float | None:
        """Tokens held in the KV cache over the most it can hold (max batch x max_model_len)."""
        capacity = self._max_batch * self._max_model_len
        if not capacity:
            return None
        if self._use_cache:
            mask = self._batch.mask  # replaced whole by the batch loop, never changed in place
            held = int(mask.sum()) if mask is not None else 0
        else:
            held = sum(len(seq.token_ids) for seq in list(self._active.values()))
        return min(1.0, held / capacity)

    async def check_health(self) -> None:
        if self._failure is not None:
            raise EngineError(f"hf batch loop failed: {self._failure!r}")
        if self._loop_task is None or self._loop_task.done():
            raise EngineError("hf batch loop is not running")

    # ---- tokenizer helpers ----

    def tokenize(self, text: str) -> tuple[int, ...]:
        ids = tuple(self._tokenizer(text, add_special_tokens=True)["input_ids"])
        return ids or start_of_text(self._tokenizer)

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
        seq = _Sequence(request.request_id, ids, len(ids), request.sampling, timing=request.timing)
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
                    self._batch.keep(set())  # nothing left: free the finished rows' KV cache while idle
                    await self._join(await self._pending.get())
                while not self._pending.empty() and len(self._active) < self._max_batch:
                    await self._join(self._pending.get_nowait())
                for request_id in list(self._aborted):
                    self._active.pop(request_id, None)
                    self._aborted.discard(request_id)
                if self._batch.rows:
                    await asyncio.to_thread(self._batch.keep, set(self._active))
                if self._active:
                    await self._step()
                # No request may stay referenced from here while the loop waits for the next one:
                # `_step` holds the batch in its own frame, gone when it returns.
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a broken model must fail its requests, not hang them
            log.exception("hf batch loop failed")
            self._failure = err
            for seq in self._active.values():
                seq.out.put_nowait(err)
            self._active.clear()
            self._batch = _KvBatch()

    async def _step(self) -> None:
        """One decode step for every active request."""
        if self._use_cache:
            batch = list(self._batch.rows)
            next_ids = await asyncio.to_thread(self._decode_step, batch)
        else:
            batch = list(self._active.values())
            next_ids = await asyncio.to_thread(self._full_step, batch)
        for seq, token in zip(batch, next_ids, strict=True):
            self._advance(seq, token)

    async def _join(self, seq: _Sequence) -> None:
        """Admit a request: with the KV cache, prefill it and emit its first token at once."""
        if seq.request_id in self._aborted:
            self._aborted.discard(seq.request_id)
            return
        seq.timing.started = time.time()  # out of the queue: its prefill starts now
        self._active[seq.request_id] = seq
        if self._use_cache:
            token = await asyncio.to_thread(self._prefill, seq)
            self._advance(seq, token)

    def _prefill(self, seq: _Sequence) -> int:
        import torch

        with torch.inference_mode():
            out = self._model(input_ids=torch.tensor([seq.token_ids], device=self._device), use_cache=True)
            cache = out.past_key_values
            if not _plain_kv_cache(cache):  # found on the first request: this model re-encodes instead
                self._use_cache = False
                log.info(
                    "hf model %s: cache %s is not a plain KV cache; re-encoding each step",
                    self._spec.model,
                    type(cache).__name__,
                )
                return self._sample(out.logits[0, -1, :].float().cpu(), seq)
            self._batch.add(seq, cache)
            return self._sample(out.logits[0, -1, :].float().cpu(), seq)

    def _decode_step(self, batch: list[_Sequence]) -> list[int]:
        import torch

        b = self._batch
        ids = torch.tensor([[seq.token_ids[-1]] for seq in batch], device=self._device)
        positions = b.mask.sum(-1, keepdim=True)
        mask = torch.cat([b.mask, b.mask.new_ones(len(batch), 1)], dim=1)
        with torch.inference_mode():
            out = self._model(
                input_ids=ids,
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                past_key_values=b.cache,
                use_cache=True,
            )
            b.cache, b.mask = out.past_key_values, mask
            logits = out.logits[:, -1, :].float().cpu()
            return [self._sample(logits[row], seq) for row, seq in enumerate(batch)]

    def _full_step(self, batch: list[_Sequence]) -> list[int]:
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
        if not bool(torch.isfinite(probs).all()):  # a temperature so small it overflows: greedy
            return int(torch.argmax(logits))
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < params.top_p
            # The likeliest token always stays: a top_p under float32's least value (5e-324 is a
            # valid top_p) kept none, and the empty distribution failed the whole batch loop.
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=seq.generator))

    def _advance(self, seq: _Sequence, token: int) -> None:
        if seq.request_id not in self._active:
            return
        seq.token_ids.append(token)
        self._tokens_generated += 1
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
