"""Multi-turn conversations (`sessions:`): when each starts, and each turn's new prompt, answer length
and think time, from a JSONL file or drawn (seeded) from the scenario's distribution.

A file line: {"start_s": 0.0, "turns": [{"input_tokens": 40, "output_tokens": 20, "think_s": 1.5}]};
`start_s` is optional (the distribution's Poisson starts are used where it is missing). The worker
(bench/worker.py) sends each turn with the whole history before it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import Field, ValidationError

from distinfer.bench.traces import PromptSynth, TraceError, load_counter, resolve
from distinfer.results.base import Strict
from distinfer.results.workload import Sessions, Span


class TurnLine(Strict):
    input_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=1)
    think_s: float = Field(0.0, ge=0)


class ConversationLine(Strict):
    start_s: float | None = Field(None, ge=0)
    turns: list[TurnLine] = Field(min_length=1)


@dataclass(frozen=True)
class Turn:
    prompt: str  # the turn's new user message, input_tokens words
    input_tokens: int
    output_tokens: int
    think_s: float


@dataclass(frozen=True)
class Conversation:
    index: int
    start_s: float
    turns: tuple[Turn, ...]


def _whole(rng: random.Random, span: Span) -> int:
    return rng.randint(round(span.low), round(span.high))


def _read_file(path: str) -> list[ConversationLine]:
    source = resolve(path)
    try:
        lines = source.read_text().splitlines()
    except OSError as err:
        raise TraceError(f"cannot read sessions file {source}: {err.strerror}") from None
    conversations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            conversations.append(ConversationLine.model_validate_json(line))
        except ValidationError as err:
            raise TraceError(
                f'{source}:{number} is not a conversation line ({{"start_s": 0, "turns": [{{"input_tokens": '
                f'40, "output_tokens": 20, "think_s": 1.5}}]}}): {err.errors()[0]["msg"]}'
            ) from None
    if not conversations:
        raise TraceError(f"sessions file {source} holds no conversations")
    return conversations


def plan_sessions(sessions: Sessions, seed: int) -> list[Conversation]:
    """Every conversation of the workload, in start order, with its turns' prompts made."""
    rng = random.Random(f"{seed}/sessions")
    synth = PromptSynth(load_counter(sessions.tokenizer), seed, 1)
    if sessions.file is not None:
        lines = _read_file(sessions.file)
    else:
        lines = [
            ConversationLine(
                start_s=None,
                turns=[
                    TurnLine(
                        input_tokens=_whole(rng, sessions.input_tokens),
                        output_tokens=_whole(rng, sessions.output_tokens),
                        think_s=rng.uniform(sessions.think_s.low, sessions.think_s.high),
                    )
                    for _ in range(_whole(rng, sessions.turns))
                ],
            )
            for _ in range(sessions.count)
        ]
    start = 0.0
    conversations = []
    for index, line in enumerate(lines):
        if line.start_s is None:
            start += rng.expovariate(sessions.rate) if index else 0.0
        else:
            start = line.start_s
        turns = tuple(
            Turn(
                synth.prompt(t.input_tokens, (), f"s{index}t{k}").lstrip(),
                t.input_tokens,
                t.output_tokens,
                t.think_s,
            )
            for k, t in enumerate(line.turns, start=1)
        )
        conversations.append(Conversation(index, start, turns))
    return sorted(conversations, key=lambda c: c.start_s)
