"""One model behind the HTTP layer: prompt preparation, length checks and the engine stream.

The same `ModelServer` runs inside a Ray Serve replica (serve/app.py) and in-process under bare
uvicorn (serve/bare.py), so both paths answer identically. Its stream starts with exactly one
`Accepted` or `Rejected` event, so the HTTP layer can still answer a 4xx before it commits to a
200 streaming response; token deltas follow an `Accepted`. Just before the last delta (the one with
`finish_reason`) comes a `ReplicaTiming`: when this replica admitted the request, when the engine
started it and when the first token carrying text left the engine; the HTTP layer adds its own time
and puts them on the final chunk (results/records.py, ServerTiming).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from distinfer.engines.base import Engine, GenerationRequest, TokenDelta
from distinfer.serve.protocol import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    prompt_tokens: int
    max_tokens: int


@dataclass(frozen=True)
class Rejected:
    status: int
    message: str
    param: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class ReplicaTiming:
    """The model replica's part of a request's server timing (Unix seconds, this host's clock)."""

    replica: float
    engine_start: float
    engine_start_source: str  # "engine": the engine said; "replica": when it was handed over
    first_token: float | None
    engine: str
    engine_version: str
    replica_host: str
    prompt_tokens: int
    completion_tokens: int


Event = Accepted | Rejected | TokenDelta | ReplicaTiming
OpenAIRequest = CompletionRequest | ChatCompletionRequest
HOSTNAME = socket.gethostname()


class ModelServer:
    """`server_timing` False leaves the ReplicaTiming out (benchmarks/observability_cost.py measures
    what it costs); `on_finished` is called with every finished request's timing (engine metrics)."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        server_timing: bool = True,
        on_finished: Callable[[ReplicaTiming, float], None] | None = None,
    ) -> None:
        self.name = name
        self.engine = engine
        self.server_timing = server_timing
        self.on_finished = on_finished

    def _prompt(self, request: OpenAIRequest) -> str | Rejected:
        if isinstance(request, CompletionRequest):
            return request.prompt
        try:
            return self.engine.apply_chat_template([m.plain() for m in request.messages])
        except Exception as err:  # a model's template may refuse a conversation (roles, order)
            return Rejected(
                400,
                f"messages: the chat template of model {self.name!r} refused them: {err}; "
                "send the roles and order the model expects",
                param="messages",
                code="invalid_messages",
            )

    def _admit(self, prompt_tokens: int, request: OpenAIRequest) -> Accepted | Rejected:
        """vLLM's rule (0.32, vllm/renderers/params.py and get_max_tokens in its OpenAI server): a
        max_tokens past the context is refused, whatever the prompt; a prompt that leaves no room for
        one token is refused; otherwise the completion gets at most the room the prompt leaves, and an
        answer that fills the context stops with finish_reason "length". So any max_tokens up to
        max_model_len is valid on its own, which the OpenAPI document states as each model's maximum."""
        limit = self.engine.max_model_len
        field = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
        if prompt_tokens >= limit:
            return Rejected(
                400,
                f"{field}: the prompt is {prompt_tokens} tokens but model {self.name!r} takes at most "
                f"{limit} tokens of prompt + completion; shorten the prompt",
                param=field,
                code="context_length_exceeded",
            )
        asked = request.max_tokens
        if asked is not None and asked > limit:
            chat_limit = isinstance(request, ChatCompletionRequest) and request.max_completion_tokens
            sent = "max_completion_tokens" if chat_limit else "max_tokens"
            return Rejected(
                400,
                f"{sent}={asked} is past the {limit}-token limit of model {self.name!r} (max_model_len: its "
                f"context, which prompt and completion share); ask for at most {limit}",
                param=sent,
                code="context_length_exceeded",
            )
        room = limit - prompt_tokens
        return Accepted(prompt_tokens=prompt_tokens, max_tokens=min(asked or room, room))

    async def stream(self, request_id: str, request: OpenAIRequest) -> AsyncGenerator[Event, None]:
        received_unix = time.time()
        prompt = self._prompt(request)
        if isinstance(prompt, Rejected):
            yield prompt
            return
        token_ids = self.engine.tokenize(prompt)
        prompt_tokens = len(token_ids) if token_ids is not None else self.engine.count_tokens(prompt)
        verdict = self._admit(prompt_tokens, request)
        yield verdict
        if isinstance(verdict, Rejected):
            return
        gen_request = GenerationRequest(
            request_id=request_id,
            prompt=prompt,
            sampling=request.sampling(verdict.max_tokens),
            prompt_token_ids=token_ids,
            received_unix=received_unix,
        )
        finished = False
        handed = time.time()
        first_token: float | None = None
        stream = self.engine.generate(gen_request)
        try:
            async for delta in stream:
                if first_token is None and delta.text:
                    first_token = time.time()
                finished = delta.finish_reason is not None
                if finished and (self.server_timing or self.on_finished is not None):
                    timing = self._timing(gen_request, received_unix, handed, first_token, delta)
                    if self.on_finished is not None:
                        self.on_finished(timing, time.time())
                    if self.server_timing:
                        yield timing
                yield delta
        finally:
            # Client gone (generator closed or cancelled): free the engine's slot at once.
            if not finished:
                log.info("request %s ended early; aborting it in the engine", request_id)
                await self.engine.abort(request_id)
            await stream.aclose()

    def _timing(
        self,
        request: GenerationRequest,
        received: float,
        handed: float,
        first_token: float | None,
        last: TokenDelta,
    ) -> ReplicaTiming:
        started = request.timing.started
        return ReplicaTiming(
            replica=received,
            engine_start=started if started is not None else handed,
            engine_start_source="engine" if started is not None else "replica",
            first_token=first_token,
            engine=self.engine.kind,
            engine_version=self.engine.version,
            replica_host=HOSTNAME,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
        )
