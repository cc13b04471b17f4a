"""The prompt set: one JSON object per line, `{"text": ..., "tokens": N}`, read and validated once."""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import ConfigDict, Field, ValidationError

from distinfer.results.base import Strict

# The repository's own set, made by `distinfer.bench.promptgen` (see files/prompts/README.md).
DEFAULT_PROMPTS = Path(__file__).resolve().parents[3] / "files" / "prompts" / "prompts.jsonl"


class Prompt(Strict):
    model_config = ConfigDict(frozen=True)

    text: str = Field(min_length=1)
    tokens: int | None = Field(None, ge=1, description="Input tokens by the tokenizer named in the README.")


def load_prompts(path: str | Path | None = None) -> list[Prompt]:
    source = Path(path) if path else DEFAULT_PROMPTS
    try:
        lines = source.read_text().splitlines()
    except OSError as err:
        raise ValueError(
            f"cannot read prompts file {source}: {err.strerror}; pass --prompts with a JSONL file of "
            '{"text": ...} lines, or omit it to use files/prompts/prompts.jsonl'
        ) from None
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            prompts.append(Prompt.model_validate_json(line))
        except ValidationError as err:
            raise ValueError(f'{source}:{number} is not a prompt line ({{"text": ...}}): {err}') from None
    if not prompts:
        raise ValueError(f"prompts file {source} holds no prompts")
    return prompts


class PromptSampler:
    """Prompts drawn uniformly at random, with replacement, from a seeded generator.

    Each load-generator process gets its own stream (`seed`, `stream`), so a run with the same seed and
    the same number of workers draws the same prompt sequence in every process.
    """

    def __init__(self, texts: list[str], seed: int, stream: int = 0) -> None:
        if not texts:
            raise ValueError("PromptSampler needs at least one prompt")
        self._texts = texts
        self._rng = random.Random(seed * 1_000_003 + stream)

    def next(self) -> str:
        return self._rng.choice(self._texts)
