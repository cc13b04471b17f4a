"""The one small interface every engine implements.

An engine turns a prepared request (prompt text, sampling settings) into an async stream of
`TokenDelta`s, each carrying the new text and the cumulative prompt / completion token counts, the
last one carrying `finish_reason`. The serving layer above it (chat templates, length checks, HTTP,
admission control) is the same for every engine; only this file's contract is shared.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass
class EngineTiming:
    """What the engine itself knows of one request's timing, filled in by the engine as it goes."""

    # Unix time the request left the engine's queue and its prefill began (vLLM: first scheduled;
    # hf: the batch loop took it in; synthetic: at once). None when the engine does not say.
    started: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt: str
    sampling: SamplingParams
    # Token ids when the caller already tokenized the prompt (saves a second tokenization).
    prompt_token_ids: tuple[int, ...] | None = None
    # Unix time the model server received the request (before tokenizing, admission and the HTTP
    # answer starting); the engine's own arrival comes later. None when an engine is driven directly.
    received_unix: float | None = None
    timing: EngineTiming = field(default_factory=EngineTiming, compare=False)


@dataclass(frozen=True)
class TokenDelta:
    """New text since the previous delta; counts are cumulative for the request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None


@dataclass
class EngineInfo:
    engine: str
    max_model_len: int
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineStats:
    """What an engine is doing now: for tests and health checks (the disconnect storm)."""

    active: int  # requests it is generating for
    queued: int  # requests waiting to join its batch
    batch_rows: int  # rows of its decoding batch (requests whose state it still holds)
    tokens_generated: int  # since start, every request together


class EngineError(RuntimeError):
    """The engine could not serve a request for a reason of its own (not the caller's input)."""


class Engine(abc.ABC):
    """What the serving layer needs from an engine. One instance per replica, shared by its requests."""

    # The models file's `engine` value (what server timings and metrics name the engine).
    kind = "engine"
    # Whether the engine exports vLLM's metrics under Ray itself (vLLM does; the others get
    # serve/engine_metrics.py's, under the same names).
    exports_own_metrics = False

    @property
    @abc.abstractmethod
    def max_model_len(self) -> int:
        """Longest prompt + completion in tokens."""

    @property
    def version(self) -> str:
        """The engine's own version as the report names it (the library's release), "" when unknown."""
        return ""

    async def start(self) -> None:  # noqa: B027 - engines with no warm-up keep the default
        """Load weights / start background loops. Called once before the first request."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        """Stream the deltas of one request; the last has finish_reason set."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a request (client gone) and free its slot; unknown ids are ignored."""

    async def check_health(self) -> None:  # noqa: B027
        """Raise if the engine can no longer serve."""

    async def shutdown(self) -> None:  # noqa: B027
        """Release devices and background tasks."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the engine will see for this prompt text."""

    def tokenize(self, text: str) -> tuple[int, ...] | None:
        """Token ids of the prompt when the engine has a tokenizer; None otherwise."""
        return None

    @abc.abstractmethod
    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a chat, with the generation prompt appended."""

    def stats(self) -> EngineStats | None:
        """Current activity, where the engine keeps count (None where it does not)."""
        return None

    def kv_cache_usage(self) -> float | None:
        """Share (0..1) of the most KV cache this replica can hold that is in use; None without one."""
        return None

    def prefix_cache_counters(self) -> tuple[int, int] | None:
        """Prompt tokens looked up in the prefix cache and tokens found there, since start (vLLM's
        prefix_cache_queries / prefix_cache_hits); None without a prefix cache."""
        return None

    def info(self) -> EngineInfo:
        return EngineInfo(engine=type(self).__name__, max_model_len=self.max_model_len)


def start_of_text(tokenizer: Any) -> tuple[int, ...]:
    """The tokens of an empty prompt: the model's beginning-of-text token (its BOS, else its EOS, as
    OpenAI's own default prompt is `<|endoftext|>`), so the model has a first position to continue
    from. An empty prompt is valid in the OpenAI API (protocol.CompletionRequest)."""
    for token_id in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(token_id, int):
            return (token_id,)
    raise EngineError("the tokenizer has neither a BOS nor an EOS token to start an empty prompt from")


def simple_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """A readable chat layout for engines without a tokenizer chat template."""
    lines = [f"{m.role}: {m.content}" for m in messages]
    lines.append("assistant:")
    return "\n".join(lines)
