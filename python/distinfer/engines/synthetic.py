"""The synthetic engine: no model, tokens on a fixed clock.

Token i (0-based) of a request is emitted at `arrival + ttft_ms + i * itl_ms` on an absolute
schedule: a late wake-up never pushes later tokens back, so a run's timing is exactly what the
configuration says, and any extra latency a client measures belongs to the serving path or to the
client itself. That makes it the yardstick for the load generator (benchmarks/loadgen_fidelity.py)
and for the serving overhead (benchmarks/serve_overhead.py).

Ground truth: with `truth_log` set, every finished request appends one JSON line to that file:
`{"request_id", "received_unix", "arrival_unix", "first_token_unix", "last_token_unix",
"prompt_tokens", "cached_tokens", "completion_tokens", "finish_reason", "pid"}` (unix seconds, this
host's clock, taken inside
the replica: when its model server received the request, before tokenizing, admission and the start
of the HTTP answer; when the engine itself got it; and when the engine emitted the tokens). The
server's TTFT is `first_token_unix - received_unix` (vLLM also counts from the API server's
receipt); `arrival_unix` leaves the server's own accept path out. The request id is the one the
HTTP layer answers in the `X-Request-Id` header and the response `id` (`cmpl-<request_id>`); a
client may choose it by sending `X-Request-Id` itself.

Prefix cache (`prefix_cache` in the models file, engines/prefix_cache.py): each replica holds an LRU of
prompt blocks; a request's first token comes `ttft_ms + prefill_ms_per_token * uncached` after arrival,
`uncached` being its prompt tokens not found cached on this replica, and the truth log's
`cached_tokens` says how many were. The engine's vLLM counters (prefix_cache_queries/hits) follow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from distinfer.config import SyntheticModel
from distinfer.engines.base import (
    ChatMessage,
    Engine,
    EngineStats,
    FinishReason,
    GenerationRequest,
    TokenDelta,
    simple_chat_prompt,
)
from distinfer.engines.prefix_cache import PrefixCache

log = logging.getLogger(__name__)

# The context of a model file's synthetic entry without max_model_len: a common served model's
# (SmolLM2's, Llama 3's 8k), so max_tokens is bounded as on a real engine; a request once held its
# slot for 20 000 s (1e6 tokens at 20 ms) under the old default of a million.
DEFAULT_MAX_MODEL_LEN = 8192


# Overdue tokens emitted without giving the event loop a turn (see generate).
_MAX_BURST = 16


class SyntheticEngine(Engine):
    kind = "synthetic"

    def __init__(self, spec: SyntheticModel) -> None:
        self._spec = spec
        self._aborted: set[str] = set()
        self._active: set[str] = set()
        self._truth_path = Path(spec.truth_log) if spec.truth_log else None
        self._tokens_generated = 0
        cache = spec.prefix_cache
        self.prefix_cache = PrefixCache(cache.block_size, cache.capacity_blocks) if cache else None

    @property
    def max_model_len(self) -> int:
        return self._spec.max_model_len or DEFAULT_MAX_MODEL_LEN

    @property
    def active_requests(self) -> int:
        return len(self._active)

    def stats(self) -> EngineStats:
        active = len(self._active)
        return EngineStats(
            active=active, queued=0, batch_rows=active, tokens_generated=self._tokens_generated
        )

    def prefix_cache_counters(self) -> tuple[int, int] | None:
        if self.prefix_cache is None:
            return None
        return self.prefix_cache.queries, self.prefix_cache.hits

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        return simple_chat_prompt(messages)

    async def abort(self, request_id: str) -> None:
        if request_id in self._active:
            self._aborted.add(request_id)

    def _word(self, index: int) -> str:
        vocab = self._spec.vocabulary
        word = vocab[index % len(vocab)]
        return word if index == 0 else " " + word

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        loop = asyncio.get_running_loop()
        arrival_mono, arrival_unix = loop.time(), time.time()
        request.timing.started = arrival_unix  # no queue: every request starts on arrival
        tokens: list[str] | list[int] = (
            list(request.prompt_token_ids) if request.prompt_token_ids is not None else request.prompt.split()
        )
        prompt_tokens = len(tokens)
        limit = request.sampling.max_tokens
        eos_after = None if request.sampling.ignore_eos else self._spec.eos_after
        ttft, itl = self._spec.ttft_ms / 1000.0, self._spec.itl_ms / 1000.0
        cached = 0
        if self.prefix_cache is not None and self._spec.prefix_cache is not None:
            found = self.prefix_cache.lookup(tokens)
            cached = found.cached_tokens
            ttft += self._spec.prefix_cache.prefill_ms_per_token * found.uncached_tokens / 1000.0
        self._active.add(request.request_id)
        first_unix = last_unix = None
        emitted, finish = 0, "abort"  # stays "abort" unless the stream runs to its end
        text_so_far = ""
        try:
            since_yield = 0
            for i in range(limit):
                delay = arrival_mono + ttft + i * itl - loop.time()
                # Wait for the token's time. Tokens already due (ttft=itl=0, or catching up after a
                # late wake-up) go out back to back, but the loop still gets a turn every
                # _MAX_BURST tokens so one fast stream cannot starve the others.
                if delay > 0 or since_yield >= _MAX_BURST:
                    await asyncio.sleep(max(delay, 0.0))
                    since_yield = 0
                since_yield += 1
                if request.request_id in self._aborted:
                    return
                word = self._word(i)
                text_so_far += word
                emitted = i + 1
                self._tokens_generated += 1
                last_unix = time.time()
                first_unix = first_unix or last_unix
                done = emitted == limit
                reason: FinishReason | None = "length" if done else None
                if eos_after is not None and emitted >= eos_after:
                    reason, done = "stop", True
                if any(s in text_so_far for s in request.sampling.stop):
                    reason, done = "stop", True
                if done:
                    finish = reason or "length"
                yield TokenDelta(word, prompt_tokens, emitted, reason)
                if done:
                    return
        finally:
            self._active.discard(request.request_id)
            self._aborted.discard(request.request_id)
            self._record_truth(
                request, arrival_unix, first_unix, last_unix, prompt_tokens, cached, emitted, finish
            )

    def _record_truth(
        self,
        request: GenerationRequest,
        arrival_unix: float,
        first_unix: float | None,
        last_unix: float | None,
        prompt_tokens: int,
        cached_tokens: int,
        completion_tokens: int,
        finish: str,
    ) -> None:
        if self._truth_path is None:
            return
        line = json.dumps(
            {
                "request_id": request.request_id,
                "received_unix": request.received_unix or arrival_unix,
                "arrival_unix": arrival_unix,
                "first_token_unix": first_unix,
                "last_token_unix": last_unix,
                "prompt_tokens": prompt_tokens,
                "cached_tokens": cached_tokens,
                "completion_tokens": completion_tokens,
                "finish_reason": finish,
                "pid": os.getpid(),
            }
        )
        try:  # one short O_APPEND write per request: replicas sharing the file never interleave lines
            with self._truth_path.open("a") as fh:
                fh.write(line + "\n")
        except OSError as err:
            log.warning("cannot append to truth log %s: %s", self._truth_path, err)
