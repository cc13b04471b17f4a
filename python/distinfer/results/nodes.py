"""`nodes/<host>.jsonl`: what the node recorder (nodemetrics) sampled on each host during a scenario,
and `nodes/<host>.error.json`, written by the node_metrics role for a host with no samples.

The recorder runs on cluster nodes with the system Python and no pydantic (roles/node_metrics,
runtime `bundle`): there it writes the same lines as plain JSON, and the report validates them here.
A file's start line carries the results `schema_version` (results/base.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from distinfer.results.base import (
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    ResultsSchemaError,
    Strict,
    check_version,
    problems,
)


class NodeStart(Strict):
    kind: Literal["start"]
    schema_version: int = 1
    host: str
    time: float
    interval_s: float
    cpu_count: int | None
    mem_total_bytes: int
    nics: list[str]
    gpu_source: str | None


class NodeNote(Strict):
    kind: Literal["note"]
    host: str
    time: float
    source: str
    message: str


class GpuSample(Strict):
    index: int
    name: str
    vendor: str
    util_percent: float | None
    mem_used_percent: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    energy_mj: float | None = Field(
        default=None, description="Energy used since the driver loaded (NVML), mJ."
    )


class NicRates(Strict):
    rx_bytes_per_s: float
    tx_bytes_per_s: float


class NodeSample(Strict):
    kind: Literal["sample"]
    host: str
    time: float
    cpu_percent: float | None
    cpu_percent_per_core: list[float]
    mem_percent: float
    net: dict[str, NicRates]
    gpus: list[GpuSample]
    serve_cpu_s: dict[Literal["proxy", "ingress", "replicas"], float] | None = Field(
        default=None,
        description="CPU seconds the serving path's processes used since the previous sample, by "
        "part (nodemetrics/serving.py); None from a recorder older than it.",
    )


NodeLine = Annotated[NodeStart | NodeNote | NodeSample, Field(discriminator="kind")]
_NODE_LINE: TypeAdapter[NodeStart | NodeNote | NodeSample] = TypeAdapter(NodeLine)


class NodeError(Strict):
    host: str
    scenario: str = ""
    error: str


def node_line_json(line: dict[str, Any]) -> str:
    """One recorder line as JSON, checked against the schema first (the recorder's writer)."""
    return _NODE_LINE.validate_python(line).model_dump_json()


def read_node_lines(path: Path) -> list[NodeStart | NodeNote | NodeSample]:
    """A recorder's file, line by line; only a torn last line (a recorder killed mid-write) is skipped."""
    lines = path.read_text().splitlines()
    parsed: list[NodeStart | NodeNote | NodeSample] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError:
            if number == len(lines):
                break
            raise ResultsSchemaError(f"{path}:{number} is not JSON: {text[:80]!r}") from None
        where = f"{path}:{number}"
        if isinstance(data, dict) and data.get("kind") == "start":
            check_version(data, where, READABLE_VERSIONS)
        try:
            parsed.append(_NODE_LINE.validate_python(data))
        except ValidationError as err:
            raise ResultsSchemaError(
                f"{where} does not fit the results schema (node line, version {SCHEMA_VERSION}): "
                f"{problems(err)}"
            ) from None
    return parsed
