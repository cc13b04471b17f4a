"""`summary.json`: a finished scenario, written last by the runner (bench/runner.py).

`schema_version` says which layout a file has (results/base.py): 1 is the layout before versions
were written (no server timings), 2 adds the server timings, the TTFT split and GPU energy. Fields a
summary gained within a version (the SLO verdict, `availability`, `stopped_early`) are optional, so a
summary written before them still reads.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from distinfer.results.autoscaling import AutoscalingFigures
from distinfer.results.availability import Availability
from distinfer.results.base import READABLE_VERSIONS, SCHEMA_VERSION, ResultsFile, Strict
from distinfer.results.guard import ClientLoad
from distinfer.results.loadgen import LoadHostResult
from distinfer.results.metrics import Distribution, Metrics
from distinfer.results.replay import ReplayFigures
from distinfer.results.scenario import ScenarioSpec

SUMMARY_FILE = "summary.json"

LegKey = Literal["send_to_ingress", "ingress_to_replica", "engine_queue", "prefill", "first_token_to_client"]


class TtftLeg(Strict):
    key: LegKey
    label: str = Field(description="From where to where, e.g. 'client send → ingress'.")
    at_median_ms: float = Field(
        description="Median time from the send to this leg's end minus that to its start: the legs' "
        "share of the TTFT median, which they add up to exactly."
    )
    own_ms: Distribution = Field(description="The leg's own distribution over the same requests.")


class TtftSplit(Strict):
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


class StoppedEarly(Strict):
    """Why and when the load stopped before its planned end (a capacity search's clearly failing step)."""

    reason: str
    at: float = Field(description="Unix seconds.")


class Summary(ResultsFile):
    """A finished scenario (its presence is the mark of one)."""

    DEFAULT_FILE: ClassVar[str] = SUMMARY_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = READABLE_VERSIONS

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
        default=None, description="Faults during the load (results/availability.py); None in older summaries."
    )
    stopped_early: StoppedEarly | None = Field(
        default=None, description="Set when the load stopped early; the steady window ends there."
    )
    ttft_split: TtftSplit | None = Field(
        default=None, description="None when no request carried server timing (a server that sends none)."
    )
    replay: ReplayFigures | None = Field(
        default=None, description="A trace replay or sessions: what was sent against what was asked."
    )
    load_hosts: list[LoadHostResult] | None = Field(
        default=None,
        description="Load from load hosts (results/loadgen.py): each host's share, guard and losses; None: "
        "the control machine generated the load.",
    )
    autoscaling: AutoscalingFigures | None = Field(
        default=None,
        description="An autoscaling scenario: its replicas against its load (results/autoscaling.py).",
    )
