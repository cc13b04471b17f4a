"""Live progress of `distinfer bench run|sweep`: scenario i of n, elapsed and remaining seconds of
the load, requests done, current tokens/s and errors.

The counts come from `records.jsonl`, which the load workers append to as each request ends: the
runner, a separate process that only supervises, reads the whole lines added since its last look
once a second (`RecordTail`), so the load generator does no extra work for it. On a terminal, rich
draws a live bar on stderr (`LiveBar`); anywhere else (CI, Ansible, a pipe, a file) a plain line is
written every `interval_s` seconds and once at the end (`PlainLines`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from distinfer.results.records import RequestRecord

log = logging.getLogger(__name__)

# Current tokens/s: completion tokens of the requests that ended in the last this-many seconds.
RATE_WINDOW_S = 10.0
DEFAULT_INTERVAL_S = 10.0


class RecordTail:
    """The records appended to a records.jsonl since the last call (whole lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_records(self) -> list[RequestRecord]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # empty, or a line still being written
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                records.append(RequestRecord.model_validate_json(line))
            except ValidationError as err:
                log.debug("progress skipped a line of %s: %s", self.path, err)
        return records


@dataclass(frozen=True)
class Snapshot:
    """Where one scenario stands."""

    scenario: str
    index: int
    total: int
    elapsed_s: float
    duration_s: float
    warmup_s: float
    done: int = 0
    errors: int = 0
    tokens_per_s: float = 0.0

    @property
    def phase(self) -> str:
        if self.elapsed_s < self.warmup_s:
            return "warm-up"
        return "measuring" if self.elapsed_s < self.duration_s else "draining"

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.duration_s - self.elapsed_s)

    @property
    def title(self) -> str:
        return f"[{self.index}/{self.total}] {self.scenario}"

    @property
    def times(self) -> str:
        shown = min(self.elapsed_s, self.duration_s)
        return f"{self.phase}, {shown:.0f}/{self.duration_s:.0f} s, {self.remaining_s:.0f} s left"

    @property
    def counts(self) -> str:
        return f"{self.done} requests done, {self.tokens_per_s:,.1f} tok/s, {self.errors} errors"

    def line(self) -> str:
        return f"{self.title}: {self.times}; {self.counts}"


@dataclass
class Counts:
    done: int = 0
    errors: int = 0
    ended: deque[tuple[float, int]] = field(default_factory=deque)  # (end, completion tokens)

    def add(self, records: list[RequestRecord]) -> None:
        for record in records:
            self.done += 1
            self.errors += 0 if record.ok else 1
            if record.ok:
                self.ended.append((record.end, record.completion_tokens or 0))

    def tokens_per_s(self, now: float, elapsed_s: float) -> float:
        while self.ended and self.ended[0][0] <= now - RATE_WINDOW_S:
            self.ended.popleft()
        span = min(RATE_WINDOW_S, max(elapsed_s, 1.0))
        return sum(tokens for end, tokens in self.ended if end <= now) / span


class View(Protocol):
    def begin(self, snapshot: Snapshot) -> None: ...

    def show(self, snapshot: Snapshot) -> None: ...

    def end(self, snapshot: Snapshot) -> None: ...


class PlainLines:
    """One line every `interval_s` seconds, and the last one when the scenario ends."""

    def __init__(self, stream: TextIO, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.last = float("-inf")

    def _write(self, snapshot: Snapshot) -> None:
        self.stream.write(snapshot.line() + "\n")
        self.stream.flush()
        self.last = time.monotonic()

    def begin(self, snapshot: Snapshot) -> None:
        self._write(snapshot)

    def show(self, snapshot: Snapshot) -> None:
        if time.monotonic() - self.last >= self.interval_s:
            self._write(snapshot)

    def end(self, snapshot: Snapshot) -> None:
        self._write(snapshot)


class LiveBar:
    """rich's live bar for one scenario at a time; a finished scenario's bar stays on screen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def begin(self, snapshot: Snapshot) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[times]}"),
            TextColumn("[cyan]{task.fields[counts]}"),
            console=self.console,
            refresh_per_second=4,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            snapshot.title, total=snapshot.duration_s, times=snapshot.times, counts=snapshot.counts
        )

    def show(self, snapshot: Snapshot) -> None:
        if self.progress is not None and self.task is not None:
            completed = min(snapshot.elapsed_s, snapshot.duration_s)
            self.progress.update(self.task, completed=completed, times=snapshot.times, counts=snapshot.counts)

    def end(self, snapshot: Snapshot) -> None:
        self.show(snapshot)
        if self.progress is not None:
            self.progress.stop()
        self.progress = self.task = None


def make_view(interval_s: float = DEFAULT_INTERVAL_S) -> View:
    """The live bar when stderr is a terminal that can draw it, else plain lines on stderr."""
    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveBar(console)
    return PlainLines(sys.stderr, interval_s)


class ScenarioProgress:
    """One scenario's progress: reads its records as they are written and shows where it stands."""

    def __init__(self, view: View, records: Path, name: str, position: tuple[int, int]) -> None:
        self.view = view
        self.tail = RecordTail(records)
        self.counts = Counts()
        self.name = name
        self.position = position
        self.start = 0.0
        self.duration_s = 0.0
        self.warmup_s = 0.0

    @property
    def started(self) -> bool:
        return self.start > 0

    def begin(self, start: float, duration_s: float, warmup_s: float) -> None:
        self.start, self.duration_s, self.warmup_s = start, duration_s, warmup_s
        self.view.begin(self.snapshot())

    def snapshot(self) -> Snapshot:
        now = time.time()
        self.counts.add(self.tail.new_records())
        elapsed = max(0.0, now - self.start)
        return Snapshot(
            scenario=self.name,
            index=self.position[0],
            total=self.position[1],
            elapsed_s=elapsed,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
            done=self.counts.done,
            errors=self.counts.errors,
            tokens_per_s=self.counts.tokens_per_s(now, elapsed),
        )

    def tick(self) -> None:
        self.view.show(self.snapshot())

    def end(self) -> None:
        self.view.end(self.snapshot())
