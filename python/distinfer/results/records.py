"""One raw record per request, appended to `records.jsonl` the moment the request ends.

Every metric is computed later from these records, so they hold times, not conclusions. Times are
Unix seconds (float) so that records from several worker processes, and node samples from other
hosts, share one clock; within a request they are taken from one monotonic clock anchored at the
send, so durations never jump with a wall-clock step. A record carries the server's own times for
its request (`ServerTiming`) when the server sent them.

Several worker processes append to the same file: each record is one `write(2)` of one line to a
descriptor opened with O_APPEND, which Linux keeps whole and in order per call. Nothing is buffered
in the process, so SIGKILL loses at most the request in flight.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from distinfer.results.base import Strict

RECORDS_FILE = "records.jsonl"
# Exit status of a load worker that could not write a record: its scenario must get no summary.
WRITE_FAILED = 3

ErrorKind = Literal[
    "http",  # a non-2xx status (the status field says which)
    "connect",  # could not connect or the connection was refused/reset before a response
    "timeout",  # no byte for longer than the network timeout
    "read",  # the stream broke after the response started
    "incomplete",  # the stream ended without `[DONE]` or without `usage`
    "server_error",  # the server sent an error object inside the stream
    "client_overflow",  # open loop: more requests in flight than the cap; never sent
    "cancelled",  # still in flight when the run was stopped (drain timeout, Ctrl-C)
]


class ServerTiming(Strict):
    """When the server handled one request, in Unix seconds of each server host's clock.

    Sent on the final SSE chunk (`server_timing`, ignored by OpenAI clients) and in a whole answer's
    body. In order: the ingress (the HTTP app: Ray Serve's ingress replica, or the bare server) got the
    request; a model replica admitted it (Serve routed it to a replica with a free slot); the engine
    started it (it left the engine's queue: vLLM's scheduled time, the hf batch loop taking it in, the
    synthetic engine at once); the first token carrying text left the engine (the model server saw it).
    """

    ingress: float
    replica: float
    engine_start: float
    first_token: float | None = Field(default=None, description="None when no token carried text.")
    engine: str = Field(description="synthetic, hf or vllm.")
    engine_version: str | None = Field(
        default=None,
        description="The engine library's release, e.g. '0.32.0 (cpu)' for vLLM on CPUs (optional: "
        "records written before it read without it).",
    )
    engine_start_source: str = Field(
        description="Where engine_start came from: 'engine' (the engine's own record) or 'replica' "
        "(the moment the replica handed the request over, when the engine reported none)."
    )
    ingress_host: str = Field(description="Hostname of the ingress (whose clock `ingress` is).")
    replica_host: str = Field(description="Hostname of the model replica (the other three times).")

    @property
    def engine_label(self) -> str:
        """The engine with its release where the record has it: 'vllm 0.32.0 (cpu)'."""
        return f"{self.engine} {self.engine_version}" if self.engine_version else self.engine


class RequestRecord(Strict):
    """What happened to one request. `None` times mean the moment never came."""

    request_id: str = Field(description="Sent as X-Request-Id, so server-side logs can be joined.")
    worker: int = Field(description="Worker process index.")
    seq: int = Field(description="Sequence number within the worker.")
    user: int = Field(description="Closed loop: the user's index in its worker; open loop: -1.")
    scheduled: float = Field(description="When the request was due (open loop: its Poisson arrival).")
    sent: float = Field(description="When the request's first byte was handed to the socket.")
    first_byte: float | None = Field(default=None, description="When the response body began arriving.")
    first_token: float | None = Field(default=None, description="When the first chunk carrying text arrived.")
    last_token: float | None = Field(default=None, description="When the last chunk carrying text arrived.")
    end: float = Field(description="When the request finished (stream closed, error or cancel).")
    status: int = Field(default=0, description="HTTP status; 0 when no response came.")
    ok: bool
    error_kind: ErrorKind | None = None
    error: str | None = Field(default=None, description="The error, shortened to 300 characters.")
    prompt_tokens: int | None = Field(default=None, description="From the server's `usage`.")
    completion_tokens: int | None = Field(default=None, description="From the server's `usage`.")
    max_tokens: int
    chunks: int = Field(default=0, description="SSE data events carrying text.")
    gaps_ms: list[float] = Field(
        default_factory=list, description="Arrival gaps between consecutive text chunks, in milliseconds."
    )
    server: ServerTiming | None = Field(
        default=None, description="The server's own times for this request (its final SSE chunk)."
    )
    trace_index: int | None = Field(
        default=None, description="A trace replay: the row's place in its window."
    )
    input_tokens_asked: int | None = Field(
        default=None,
        description="A trace or session turn: the prompt tokens it was made to (by its tokenizer).",
    )
    session: int | None = Field(default=None, description="Multi-turn sessions: the conversation.")
    turn: int | None = Field(default=None, description="Multi-turn sessions: the turn, from 1.")
    load_host: str | None = Field(
        default=None,
        description="Load hosts (results/loadgen.py): the host that sent it; its times were taken on that "
        "host's clock and shifted onto the controller's by the merge. None: the control machine.",
    )


class RecordWriter:
    """Appends records to one JSONL file shared by many processes; each record durable once written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: RequestRecord) -> None:
        """One line in one write(2); a short write (disk full) raises instead of leaving a torn line."""
        line = record.model_dump_json().encode() + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            reason = f"{os.strerror(errno.ENOSPC)} (a short write: {written} of {len(line)} bytes)"
            raise OSError(errno.ENOSPC, reason)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(path: str | Path) -> Iterator[RequestRecord]:
    """Records of a file, skipping only a torn last line (a process killed mid-write)."""
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield RequestRecord.model_validate_json(line)
        except ValidationError as err:
            if number == len(lines):
                return  # torn tail: the writer died mid-line
            raise ValueError(f"{path}:{number} is not a request record: {err}") from None


def load_records(path: str | Path) -> list[RequestRecord]:
    return list(iter_records(path))
