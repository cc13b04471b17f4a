"""The results directory's files: one typed schema, shared by the writers and the report.

    results/<run-id>/
      run.json                   Provenance       bench (provenance.py), once per run
      scenarios/<name>/
        scenario.json            ScenarioSpec     bench (bench/scenario.py, the scenario schema)
        records.jsonl            RequestRecord    bench workers (bench/records.py), one line per request,
                                                  each with the server's ServerTiming when it sent one
        summary.json             Summary          bench (bench/runner.py), written last
        nodes/<host>.jsonl       NodeStart, NodeNote, NodeSample lines: the node recorder (nodemetrics)
        nodes/<host>.error.json  NodeError        the node_metrics role, for a host with no samples

Every model rejects unknown keys and the report reads every file through these models, so a renamed
or missing field stops the report with the file and the field named instead of printing "-".
`schema_version` (run.json, summary.json, a node file's start line) says which layout a file has:
1 is the layout before this module (no version in run.json or node files, no server timings), 2 adds
the server timings, the TTFT split and GPU energy. A version this code does not know is refused.
Fields a summary gained within a version (the SLO verdict, `availability`, `stopped_early`) are
optional, so a summary written before them still reads.

The node recorder runs on cluster nodes with the system Python and no pydantic (roles/node_metrics,
runtime `bundle`): there it writes the same lines as plain JSON, and the report validates them here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from distinfer import RESULTS_SCHEMA_VERSION, __version__
from distinfer.bench.availability import Availability
from distinfer.bench.guard import ClientLoad
from distinfer.bench.metrics import Distribution, Metrics
from distinfer.bench.scenario import ScenarioSpec

SCHEMA_VERSION = RESULTS_SCHEMA_VERSION
# Layouts this code reads: 1 (before versioned files) and the current one.
READABLE_VERSIONS = (1, 2)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResultsSchemaError(ValueError):
    """A results file this code cannot read: an unknown schema version, or fields that do not fit."""


# ---- run.json -----------------------------------------------------------------------------------


class Hardware(_Strict):
    cpu_model: str | None
    logical_cpus: int | None
    physical_cpus: int | None
    memory_bytes: int | None


class Provenance(_Strict):
    """What a run was measured with: versions, the load machine, the command line (secrets redacted)."""

    schema_version: int = SCHEMA_VERSION
    created: float
    command: list[str]
    host: str
    python: str
    platform: str
    versions: dict[str, str | None]
    hardware: Hardware


# ---- records.jsonl: the server's timing of one request ------------------------------------------


class ServerTiming(_Strict):
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


# ---- summary.json -------------------------------------------------------------------------------

LegKey = Literal["send_to_ingress", "ingress_to_replica", "engine_queue", "prefill", "first_token_to_client"]


class TtftLeg(_Strict):
    key: LegKey
    label: str = Field(description="From where to where, e.g. 'client send → ingress'.")
    at_median_ms: float = Field(
        description="Median time from the send to this leg's end minus that to its start: the legs' "
        "share of the TTFT median, which they add up to exactly."
    )
    own_ms: Distribution = Field(description="The leg's own distribution over the same requests.")


class TtftSplit(_Strict):
    """Where a scenario's time to first token goes, from the requests carrying server timing."""

    requests: int = Field(description="Successful requests of the steady window with server timing.")
    without_timing: int = Field(description="Successful requests of the window that carried none.")
    ttft_ms: Distribution = Field(description="The client's TTFT over those same requests.")
    legs: list[TtftLeg]
    out_of_order: int = Field(
        description="Requests whose times are not in order (e.g. ingress before the send): the hosts' "
        "clocks disagree by more than the leg between them."
    )
    one_clock: bool = Field(
        description="The load generator, the ingress and every replica were one host: one clock, the "
        "legs need no correction (the local platform)."
    )
    clock_offset_ms: float | None = Field(
        description="Hosts apart: the ingress host's clock minus the client's, estimated NTP-style from "
        "the fastest send → ingress and first token → client legs (it assumes those two paths take "
        "alike, which the return path's extra hops break by a few ms); None on one clock."
    )


class StoppedEarly(_Strict):
    """Why and when the load stopped before its planned end (a capacity search's clearly failing step)."""

    reason: str
    at: float = Field(description="Unix seconds.")


class Summary(_Strict):
    """A finished scenario (its presence is the mark of one)."""

    schema_version: int = SCHEMA_VERSION
    scenario: ScenarioSpec
    started: float
    load_end: float
    finished: float
    valid: bool
    invalid_reasons: list[str]
    metrics: Metrics
    client: ClientLoad
    availability: Availability | None = Field(
        default=None, description="Faults during the load (bench/availability.py); None in older summaries."
    )
    stopped_early: StoppedEarly | None = Field(
        default=None, description="Set when the load stopped early; the steady window ends there."
    )
    ttft_split: TtftSplit | None = Field(
        default=None, description="None when no request carried server timing (a server that sends none)."
    )


# ---- nodes/<host>.jsonl -------------------------------------------------------------------------


class NodeStart(_Strict):
    kind: Literal["start"]
    schema_version: int = 1
    host: str
    time: float
    interval_s: float
    cpu_count: int | None
    mem_total_bytes: int
    nics: list[str]
    gpu_source: str | None


class NodeNote(_Strict):
    kind: Literal["note"]
    host: str
    time: float
    source: str
    message: str


class GpuSample(_Strict):
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


class NicRates(_Strict):
    rx_bytes_per_s: float
    tx_bytes_per_s: float


class NodeSample(_Strict):
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


class NodeError(_Strict):
    host: str
    scenario: str = ""
    error: str


def node_line_json(line: dict[str, Any]) -> str:
    """One recorder line as JSON, checked against the schema first (the recorder's writer)."""
    return _NODE_LINE.validate_python(line).model_dump_json()


# ---- reading ------------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _problems(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in err.errors()[:6])


def check_version(data: dict[str, Any], where: str) -> int:
    """The file's schema version (1 when it has none), refusing one this code does not know."""
    version = data.get("schema_version", 1)
    if version not in READABLE_VERSIONS:
        raise ResultsSchemaError(
            f"{where} has schema_version {version!r}, which this distinfer ({__version__}) cannot read: it "
            f"reads results of schema versions {', '.join(map(str, READABLE_VERSIONS))}. Report it with the "
            "distinfer that wrote it (run.json lists its version), or re-run the benchmark with this one"
        )
    return int(version)


def parse_model(data: Any, model: type[M], where: str, versioned: bool = True) -> M:
    if not isinstance(data, dict):
        raise ResultsSchemaError(f"{where} is not a JSON object: it cannot be a {model.__name__}")
    if versioned:
        data = {**data, "schema_version": check_version(data, where)}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ResultsSchemaError(
            f"{where} does not fit the results schema ({model.__name__}, version "
            f"{data.get('schema_version', SCHEMA_VERSION)}): {_problems(err)}. It was written by another "
            "distinfer or edited by hand; report it with the distinfer that wrote it, or re-run"
        ) from None


def read_model(path: Path, model: type[M], versioned: bool = True) -> M | None:
    """The file as `model`, or None when it does not exist."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ResultsSchemaError(f"cannot read {path}: {err}") from None
    return parse_model(data, model, str(path), versioned)


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
            check_version(data, where)
        try:
            parsed.append(_NODE_LINE.validate_python(data))
        except ValidationError as err:
            raise ResultsSchemaError(
                f"{where} does not fit the results schema (node line, version {SCHEMA_VERSION}): "
                f"{_problems(err)}"
            ) from None
    return parsed
