"""Published traces read as published, and prompts synthesised to their exact token counts.

Formats (docs/traces.md):
- Azure LLM inference trace (2023 code/conversation, 2024 week files): CSV `TIMESTAMP,ContextTokens,
  GeneratedTokens`, the time a date and time of day (`2023-11-16 18:15:46.6805900`, the 2024 files
  with a UTC offset).
- Mooncake (FAST'25): JSONL `{"timestamp": ms, "input_length", "output_length", "hash_ids"}`, one hash
  id per 512-token block of the input.
- BurstGPT: CSV `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`, the time in
  seconds from the first day's midnight (failed requests have 0 response tokens and are kept).

Every reader gives the rows in time order as `TraceRow`s, times in seconds after the first row.

Prompt text is whole words, each one token of the counting tokenizer (`words`: the synthetic engine's
whitespace count; a Hugging Face tokenizer: words it encodes as one token with their leading space,
which BPE and SentencePiece tokenizers keep apart), so a prompt of n words is n tokens, checked. A
Mooncake hash id always gives the same block of words, so requests that share a leading run of hash
ids share that text exactly: the same prefix the trace's KV cache saw.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from distinfer.results.workload import TraceFormat, TraceReplay

REPO_ROOT = Path(__file__).resolve().parents[3]

# Plain English words; the `words` tokenizer takes all, a real tokenizer those it keeps as one token.
_WORDS = (
    "the of and to in is was for on are with as at be by this had not but from or have an they which one "
    "you were all her she there would their we him been has when who will more no if out so said what up "
    "its about into than them can only other new some could time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day same another know "
    "while last might us great old year off come since against go came right used take three water light "
    "small place house point word hand part show high city tree river stone green blue night road"
)
WORDS = tuple(_WORDS.split())


@dataclass(frozen=True)
class TraceRow:
    at_s: float  # seconds after the trace's first row
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


class TraceError(ValueError):
    """A trace file that cannot be read as its format; the message names the file, the line and the fix."""


def resolve(path: str | Path) -> Path:
    """A trace or sessions file: as given, else relative to the repository (files/traces/...)."""
    given = Path(path)
    if given.is_absolute() or given.exists():
        return given
    beside = REPO_ROOT / given
    return beside if beside.exists() else given


def detect_format(path: Path, first_line: str) -> str:
    head = first_line.lstrip("\ufeff").strip()
    if head.startswith("{"):
        return "mooncake"
    columns = [c.strip() for c in head.split(",")]
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(columns):
        return "azure"
    if {"Timestamp", "Request tokens", "Response tokens"} <= set(columns):
        return "burstgpt"
    raise TraceError(
        f"{path}: cannot tell the trace format from its first line {head[:80]!r}; expected an Azure CSV "
        "header (TIMESTAMP,ContextTokens,GeneratedTokens), a BurstGPT CSV header (Timestamp,Model,Request "
        'tokens,Response tokens,...) or Mooncake JSONL ({"timestamp": ...}); or set trace.format'
    )


_AZURE_TIME = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


def _azure_seconds(text: str) -> float:
    """Unix-like seconds of an Azure TIMESTAMP; fractions of any length (the 2023 files have 7 digits)."""
    match = _AZURE_TIME.match(text.strip())
    if match is None:
        raise ValueError(f"TIMESTAMP {text!r} is not 'YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM]'")
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    moment = datetime.fromisoformat(whole.replace(" ", "T") + zone)
    return moment.timestamp() + (float(fraction) if fraction else 0.0)


def _int(value: Any, what: str) -> int:
    number = int(float(value))
    if number < 0:
        raise ValueError(f"{what} {value!r} is negative")
    return number


def _read_csv(path: Path, lines: list[str], parse: Callable[[dict[str, str]], TraceRow]) -> list[TraceRow]:
    rows = []
    for number, record in enumerate(csv.DictReader(lines), start=2):
        try:
            rows.append(parse(record))
        except (TypeError, ValueError, KeyError) as err:
            raise TraceError(f"{path}:{number}: {err}; fix or remove that row") from None
    return rows


def _azure(record: dict[str, str]) -> TraceRow:
    return TraceRow(
        _azure_seconds(record["TIMESTAMP"]),
        _int(record["ContextTokens"], "ContextTokens"),
        _int(record["GeneratedTokens"], "GeneratedTokens"),
    )


def _burstgpt(record: dict[str, str]) -> TraceRow:
    return TraceRow(
        float(record["Timestamp"]),
        _int(record["Request tokens"], "Request tokens"),
        _int(record["Response tokens"], "Response tokens"),
    )


def _mooncake(path: Path, lines: list[str]) -> list[TraceRow]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            hashes = tuple(int(h) for h in data.get("hash_ids", ()))
            rows.append(
                TraceRow(
                    float(data["timestamp"]) / 1000.0,
                    _int(data["input_length"], "input_length"),
                    _int(data["output_length"], "output_length"),
                    hashes,
                )
            )
        except (TypeError, ValueError, KeyError) as err:
            raise TraceError(
                f'{path}:{number} is not a Mooncake row ({{"timestamp": ms, "input_length", '
                f'"output_length", "hash_ids"}}): {type(err).__name__} {err}'
            ) from None
    return rows


def read_trace(path: str | Path, fmt: TraceFormat = "auto") -> list[TraceRow]:
    """Every row of a trace file, in time order (ties keep the file's order), times from its first row."""
    source = resolve(path)
    try:
        lines = source.read_text(encoding="utf-8-sig").splitlines()
    except OSError as err:
        raise TraceError(
            f"cannot read trace file {source}: {err.strerror}; give a path that exists (files/traces/ "
            "ships slices: docs/traces.md)"
        ) from None
    if not lines:
        raise TraceError(f"trace file {source} is empty")
    kind = detect_format(source, lines[0]) if fmt == "auto" else fmt
    if kind == "mooncake":
        rows = _mooncake(source, lines)
    else:
        rows = _read_csv(source, lines, _azure if kind == "azure" else _burstgpt)
    if not rows:
        raise TraceError(f"trace file {source} holds no rows")
    rows.sort(key=lambda r: r.at_s)
    origin = rows[0].at_s
    return [TraceRow(r.at_s - origin, r.input_tokens, r.output_tokens, r.hash_ids) for r in rows]


# ---- the counting tokenizer and the words that make prompts -----------------------------------------


class Counter:
    """Counts prompt tokens as the served model will; `words` are one token each, with a leading space."""

    def __init__(self, name: str, words: list[str], count: Callable[[str], int]) -> None:
        self.name = name
        self.words = words
        self.count = count

    def text(self, rng: random.Random, tokens: int) -> str:
        return "".join(" " + rng.choice(self.words) for _ in range(tokens))


def _whitespace(text: str) -> int:
    return len(text.split())


def load_counter(name: str) -> Counter:
    """`words`, `smollm2`, or a folder with a Hugging Face tokenizer."""
    if name == "words":
        return Counter(name, list(WORDS), _whitespace)
    if name == "smollm2":
        from distinfer.bench.promptgen import load_tokenizer

        tokenizer = load_tokenizer()
    else:
        folder = Path(name)
        if not folder.is_dir():
            raise TraceError(
                f"tokenizer {name!r} is neither `words`, `smollm2` nor a folder; give the served model's "
                "local folder (with its tokenizer files), or `words` for the synthetic engine"
            )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    single = [w for w in dict.fromkeys(WORDS) if count(" " + w) == 1 and count(" " + w + " " + w) == 2]
    if len(single) < 20:
        raise TraceError(f"tokenizer {name!r} keeps too few plain words as one token ({len(single)})")
    return Counter(name, single, count)


class PromptSynth:
    """Prompts of exact token counts; Mooncake blocks by hash id, shared text for a shared id."""

    def __init__(self, counter: Counter, seed: int, block_tokens: int) -> None:
        self.counter = counter
        self.seed = seed
        self.block_tokens = block_tokens
        self._blocks: dict[int, str] = {}

    def block(self, hash_id: int) -> list[str]:
        text = self._blocks.get(hash_id)
        if text is None:
            text = self.counter.text(random.Random(f"{self.seed}/block/{hash_id}"), self.block_tokens)
            self._blocks[hash_id] = text
        return text.split(" ")[1:]

    def prompt(self, tokens: int, hash_ids: Sequence[int], key: str) -> str:
        """`tokens` words: the hash blocks in order (the last cut short), or words of its own (`key`)."""
        words: list[str] = []
        for hash_id in hash_ids:
            if len(words) >= tokens:
                break
            words += self.block(hash_id)
        if len(words) < tokens:
            rng = random.Random(f"{self.seed}/own/{key}")
            words += self.counter.text(rng, tokens - len(words)).split(" ")[1:]
        return "".join(" " + w for w in words[:tokens])

    def check(self, text: str, tokens: int) -> None:
        got = self.counter.count(text)
        if got != tokens:
            raise TraceError(
                f"a synthesised prompt of {tokens} words counts {got} tokens with {self.counter.name}; "
                "that tokenizer merges words (use `words` for the synthetic engine)"
            )


# ---- the schedule a replay sends ------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    index: int  # the row's place in the window
    due_s: float  # seconds after the load's start
    prompt: str
    input_tokens: int  # asked: after scaling and the cap
    output_tokens: int
    trace_input_tokens: int  # as the trace has them
    trace_output_tokens: int


def window(rows: list[TraceRow], replay: TraceReplay, duration_s: float) -> list[TraceRow]:
    """The rows inside [start_s, start_s + duration_s x time_scale), times from the window's start."""
    length = duration_s * replay.time_scale
    inside = [r for r in rows if replay.start_s <= r.at_s < replay.start_s + length]
    return [TraceRow(r.at_s - replay.start_s, r.input_tokens, r.output_tokens, r.hash_ids) for r in inside]


def schedule(
    replay: TraceReplay, duration_s: float, seed: int, counter: Counter | None = None
) -> list[Arrival]:
    """Every request of the window, due on the run's clock, with its prompt."""
    rows = window(read_trace(replay.file, replay.format), replay, duration_s)
    synth = PromptSynth(counter or load_counter(replay.tokenizer), seed, replay.block_tokens)
    arrivals = []
    for index, row in enumerate(rows):
        tokens = replay.scale_input(row.input_tokens)
        text = synth.prompt(tokens, row.hash_ids, str(index))
        arrivals.append(
            Arrival(
                index,
                row.at_s / replay.time_scale,
                text,
                tokens,
                replay.scale_output(row.output_tokens),
                row.input_tokens,
                row.output_tokens,
            )
        )
    if arrivals and synth.counter.name != "words":
        for arrival in arrivals[:20]:  # the words tokenizer is exact by construction
            synth.check(arrival.prompt, arrival.input_tokens)
    return arrivals
