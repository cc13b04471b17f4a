"""OpenAI-compatible HTTP bodies: requests validated strictly, responses and SSE chunks as OpenAI sends them.

Unknown request fields are refused (a typo such as `max_token` must not silently fall back to a
default and skew a benchmark). Types are JSON Schema's, exactly as the OpenAPI document states them
(serve/openapi.py): a boolean is `true` or `false` only (not 0, 1 or "true"), a string only a string,
and an integer any integral JSON number (`35` and `35.0` alike; `true`, `"35"` and `35.5` are not).
OpenAI fields this server does not implement (`n` > 1, `logprobs`, `tools`, penalties, ...) are
listed in `UNSUPPORTED_FIELDS`: their neutral value is accepted, any other is refused as
unsupported (HTTP 422) rather than ignored, since it would change the answer.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, model_validator

from distinfer.engines.base import ChatMessage, SamplingParams

MAX_TOKENS_CEILING = 1_000_000
# What the OpenAPI document says of max_tokens (serve/openapi.py sets each model's `maximum`), and
# serve/model_server.py enforces, as vLLM 0.32's OpenAI server does.
MAX_TOKENS_DOC = (
    "At most the model's context (max_model_len; each model's maximum is in this document and GET "
    "/v1/models); more is refused with 400 naming the limit. The prompt and the completion share the "
    "context: past its end the answer stops with finish_reason `length`."
)
# Largest request body the HTTP layer reads (413 beyond it, before any engine sees the request).
MAX_BODY_BYTES = 4 * 1024 * 1024

_NO_PENALTY = "penalties are not implemented; leave it out or send 0"
# OpenAI request fields not implemented here: (values that change nothing, what to do instead).
UNSUPPORTED_FIELDS: dict[str, tuple[tuple[object, ...], str]] = {
    "n": ((1,), "one choice per request is returned; send n=1 or leave it out"),
    "best_of": ((None, 1), "one candidate per request is generated; leave it out"),
    "logprobs": ((None, False), "log-probabilities are not returned; leave it out"),
    "top_logprobs": ((None,), "log-probabilities are not returned; leave it out"),
    "echo": ((None, False), "the prompt is not echoed; leave it out"),
    "suffix": ((None,), "insertion (suffix) is not implemented; leave it out"),
    "presence_penalty": ((None, 0), _NO_PENALTY),
    "frequency_penalty": ((None, 0), _NO_PENALTY),
    "logit_bias": ((None, {}), "logit_bias is not implemented; leave it out"),
    "tools": ((None, []), "tool calling is not implemented; leave tools out"),
    "tool_choice": ((None, "none"), "tool calling is not implemented; leave tool_choice out"),
    "parallel_tool_calls": ((None,), "tool calling is not implemented; leave it out"),
    "functions": ((None, []), "function calling is not implemented; leave functions out"),
    "function_call": ((None, "none"), "function calling is not implemented; leave function_call out"),
    "response_format": (
        (None, {"type": "text"}),
        'structured output is not implemented; send {"type": "text"}',
    ),
    "audio": ((None,), "audio output is not implemented; leave it out"),
    "modalities": ((None, ["text"]), 'only text is generated; send ["text"] or leave it out'),
    "prediction": ((None,), "predicted outputs are not implemented; leave it out"),
    "reasoning_effort": ((None,), "reasoning_effort is not implemented; leave it out"),
    "web_search_options": ((None,), "web search is not implemented; leave it out"),
}


def _neutral(value: object, neutral: tuple[object, ...]) -> bool:
    # `False == 0` in Python: a bool matches only a listed bool, a number only a listed number.
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral)


def find_unsupported(data: dict[str, object]) -> tuple[str, str] | None:
    """The first unsupported field with a value that would change the answer: (field, message)."""
    for name, (neutral, fix) in UNSUPPORTED_FIELDS.items():
        if name in data and not _neutral(data[name], neutral):
            shown = repr(data[name])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return name, f"{name}={shown} is not supported by this server: {fix}"
    return None


def drop_neutral_unsupported(data: dict[str, object], keep: set[str]) -> dict[str, object]:
    """Remove unsupported fields sent with a neutral value, unless the request model has them."""
    return {k: v for k, v in data.items() if k in keep or k not in UNSUPPORTED_FIELDS}


def _integral(value: object) -> object:
    """JSON Schema's integer is any number with a zero fractional part: 35.0 is the integer 35."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _only_bool(value: object) -> object:
    """A Literal[False] matches 0 in Python; JSON Schema's `const: false` does not."""
    if not isinstance(value, bool):
        raise ValueError("Input should be a valid boolean")
    return value


# An integer as JSON Schema counts them: 35 and 35.0; not true (strict), "35" or 35.5. (Bounds go
# inside the Annotated, before the validator: on a `| None` field's Field they leave the schema.)
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
_Tokens = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_CEILING), BeforeValidator(_integral)]
_Seed = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1), BeforeValidator(_integral)]
_False = Annotated[Literal[False], BeforeValidator(_only_bool)]


class _Strict(BaseModel):
    # strict: JSON true/false is not a number, 1 is not a boolean, 1 is not a string.
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


_StopWord = Annotated[str, Field(min_length=1)]


class _GenerationFields(_Strict):
    model: str = Field(min_length=1)
    max_tokens: _Tokens | None = Field(None, description=MAX_TOKENS_DOC)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: _StopWord | Annotated[list[_StopWord], Field(max_length=4)] | None = Field(
        None, description="Up to 4 non-empty strings; generation ends before the first one."
    )
    seed: _Seed | None = Field(None, description="A 64-bit integer.")
    ignore_eos: bool = Field(False, description="Generate exactly max_tokens tokens (benchmarks).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Accepted for client compatibility; only their neutral values (see UNSUPPORTED_FIELDS).
    n: JsonInt = Field(1, ge=1, le=1, description="Only 1: one choice per request.")
    user: str | None = Field(None, description="Accepted and ignored (it does not change the answer).")
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0, description="Only 0: penalties are not implemented.")
    frequency_penalty: float = Field(
        0.0, ge=0.0, le=0.0, description="Only 0: penalties are not implemented."
    )

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop_list(),
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_GenerationFields):
    """A text completion. The empty prompt is accepted, as OpenAI accepts it (its own default prompt
    is the document boundary `<|endoftext|>`): an engine with a tokenizer starts the answer from the
    model's beginning-of-text token (its BOS, else its EOS), the synthetic engine from nothing. Refusing
    it would refuse a request the OpenAI API and its clients take as valid."""

    prompt: str = Field(
        description="One prompt (may be empty); lists (batched prompts) are not supported. Its tokens "
        "must leave room for one more in the model's context (max_model_len, GET /v1/models); a longer "
        "one is refused with 400 `context_length_exceeded` (a token count JSON Schema cannot state)."
    )
    max_tokens: _Tokens | None = Field(16, description=MAX_TOKENS_DOC)
    echo: _False = Field(False, description="Only false: the prompt is not echoed.")
    logprobs: None = Field(None, description="Only null: log-probabilities are not returned.")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart]
    name: str | None = None

    def plain(self) -> ChatMessage:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return ChatMessage(role="system" if self.role == "developer" else self.role, content=text)


class ChatCompletionRequest(_GenerationFields):
    messages: list[ChatMessageIn] = Field(
        min_length=1,
        description="The conversation; with the chat template applied, its tokens must leave room for one "
        "more in the model's context, else 400 `context_length_exceeded`.",
    )
    max_completion_tokens: _Tokens | None = Field(
        None, description=MAX_TOKENS_DOC + " Sent with max_tokens, it is the one used (as in vLLM)."
    )
    logprobs: _False = Field(False, description="Only false: log-probabilities are not returned.")

    @model_validator(mode="after")
    def _one_limit(self) -> ChatCompletionRequest:
        # OpenAI's newer name wins when both are sent, as in vLLM (ChatCompletionRequest.
        # build_tok_params): the document allows both, so refusing a pair that differs would refuse
        # a valid body.
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


# ---- responses ----


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "distinfer"
    engine: str
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def overloaded_body(model: str) -> ErrorBody:
    """The 503 past a model's cap and queue, the same from a replica's gate and from the edge."""
    return ErrorBody(
        error=ErrorDetail(
            message=f"model {model!r} is at capacity (every replica busy, queue full); retry later",
            type="overloaded",
            code="overloaded",
        )
    )


class HealthStatus(BaseModel):
    status: Literal["ok"] = "ok"
    models: list[str]


class ModelStatus(BaseModel):
    """One model's deployment as its orchestrator sees it (Ray Serve's status; the bare server's own)."""

    name: str
    status: str = Field(description="HEALTHY once every target replica runs; else UPDATING, UNHEALTHY ...")
    running_replicas: int = Field(ge=0)
    replica_states: dict[str, int] = Field(default_factory=dict, description="Replicas per state.")
    message: str = Field(default="", description="Why it is not HEALTHY, in the orchestrator's words.")


class DeploymentStatus(BaseModel):
    """GET /status: every model's replicas now (what a benchmark samples to see a replica lost and back)."""

    time: float
    models: list[ModelStatus]
