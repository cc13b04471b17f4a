"""`capacity.json`: what a capacity search found (the search itself: bench/capacity.py).

One `CapacityStep` per measurement (the base scenario at one rate, in `steps/<NN>-<rate>rps/`) and
the result: the highest rate that passed, the lowest that did not, and whether the load generator
rather than the server bounded the search. `schema_version` 1 is the only layout so far (files
without it are version 1).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from distinfer.results.base import ResultsFile, Strict
from distinfer.results.scenario import CapacitySearch
from distinfer.results.slo import Slo

RESULT_FILE = "capacity.json"
SCHEMA_VERSION = 1

Outcome = Literal["pass", "fail", "invalid"]


class CapacityStep(Strict):
    """One measurement: the base scenario at one rate."""

    index: int = Field(description="Measurements in order, retries included (1-based).")
    rate: float = Field(description="Poisson arrivals asked for, requests/s.")
    name: str = Field(description="Its folder under steps/.")
    retry: int = Field(0, description="0 for the first try at this rate, then 1, 2, ...")
    outcome: Outcome
    requests: int = Field(description="Requests due in the steady window (failed ones included).")
    share_meeting: float | None = Field(description="Of those, the share within every limit at once.")
    at_percentile_ms: dict[str, float | None] = Field(description="Each limit's latency at the percentile.")
    request_goodput: float | None
    output_goodput: float | None
    request_throughput: float | None
    output_throughput: float | None
    achieved_send_rate: float | None
    valid: bool
    invalid_reasons: list[str] = Field(default_factory=list)
    stopped_early: str | None = None


class CapacityResult(ResultsFile):
    """DIR/capacity.json."""

    DEFAULT_FILE: ClassVar[str] = RESULT_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (SCHEMA_VERSION,)

    schema_version: int = SCHEMA_VERSION
    name: str
    model: str
    url: str
    replicas: int | None
    users_per_replica: int | None
    slo: Slo
    search: CapacitySearch
    converged: bool = Field(description="Bracketed to within the tolerance.")
    capacity_rate: float | None = Field(
        description="The highest passing rate (requests/s); None if none passed."
    )
    lowest_failing_rate: float | None = Field(description="The lowest rate that failed or stayed invalid.")
    limited_by_load_generator: bool = Field(
        description="The lowest failing rate was a step the guard left invalid: the load generator, not "
        "the server, bounded the search."
    )
    at_capacity: CapacityStep | None = Field(description="The passing step at the capacity rate.")
    note: str
    steps: list[CapacityStep]
