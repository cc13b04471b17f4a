"""What a run asks for (`scenario.json`) and what each worker process is told to do."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distinfer.bench.slo import Slo

SCENARIO_FILE = "scenario.json"
SUMMARY_FILE = "summary.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CapacitySearch(_Strict):
    """A scenario's `capacity:`: search the highest Poisson arrival rate that meets its SLO
    (`distinfer bench capacity`, bench/capacity.py) instead of loading it at one size."""

    start_rate: float = Field(1.0, gt=0, description="First rate tried (requests/s).")
    min_rate: float = Field(0.01, gt=0, description="The search gives up below this rate.")
    max_rate: float = Field(10_000.0, gt=0, description="The search stops above this rate.")
    tolerance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Stop when the lowest failing rate is within this fraction above the highest passing.",
    )
    growth: float = Field(2.0, gt=1, description="Bracketing: the rate is multiplied (or divided) by this.")
    max_steps: int = Field(16, ge=1, le=100, description="Rates tried at most (retries not counted).")
    invalid_retries: int = Field(
        1, ge=0, le=10, description="Times a step the saturation guard marked INVALID is run again."
    )
    stop_early: bool = Field(True, description="Stop a step as soon as it has clearly missed the SLO.")
    min_tail_requests: int = Field(
        10,
        ge=0,
        le=10_000,
        description="Each step's steady window lasts long enough for this many requests beyond the SLO's "
        "percentile (at P99 and 10: 1000 requests), however short duration_s is; fewer make the verdict "
        "noise. 0: duration_s only.",
    )
    in_flight_cap: int | None = Field(
        None, ge=1, le=100_000, description="Each step's in-flight cap; default max(4 x users, 256)."
    )

    @model_validator(mode="after")
    def _check(self) -> CapacitySearch:
        if not self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(
                f"start_rate {self.start_rate:g} must lie between min_rate {self.min_rate:g} and max_rate "
                f"{self.max_rate:g}"
            )
        return self


class Repetition(_Strict):
    """Set on each of the runs a scenario's `repeat: N` makes."""

    of: str = Field(description="The scenario repeated (its name without -rep<k>).")
    index: int = Field(ge=1, description="Which run this is, 1..count.")
    count: int = Field(ge=2, description="How many runs the repeat makes.")


class ScenarioSpec(_Strict):
    """One load scenario. `users` is the closed loop's concurrency and the open loop's in-flight cap."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    model: str
    url: str = Field(pattern=r"^https?://")
    users: int = Field(ge=1, le=100_000)
    replicas: int | None = Field(None, ge=1, description="Serving replicas behind the URL (report metadata).")
    users_per_replica: int | None = Field(None, ge=1, description="The guide's 'batch size per replica'.")
    duration_s: float = Field(gt=0, description="How long new requests are sent, warm-up included.")
    warmup_s: float = Field(0.0, ge=0)
    ramp_s: float | None = Field(
        None,
        ge=0,
        description="Closed loop: users start evenly spread over this many seconds (default: the "
        "warm-up); 0 starts them all at once, and with a fixed-length answer they stay in lockstep.",
    )
    drain_timeout_s: float = Field(300.0, ge=0, description="How long in-flight requests may finish after.")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0)
    api: Literal["chat", "completions"] = "chat"
    rate: float | None = Field(None, gt=0, description="Open loop: Poisson arrivals per second.")
    prompts: str | None = Field(None, description="Prompts file; the packaged set when unset.")
    seed: int = 0
    ignore_eos: bool = True
    watch_status: bool = Field(
        True,
        description="Sample the server's GET /status (every model's replicas) each second while the "
        "load runs, so a fault's course is in the summary; a server without it is asked once.",
    )
    timeout_s: float = Field(600.0, gt=0, description="Longest wait for any byte of a response.")
    workers: int | None = Field(
        None, ge=1, le=64, description="Load processes; sized from the load when unset."
    )
    slo: Slo | None = Field(
        None, description="The SLO goodput counts against: a preset's name or limits (bench/slo.py)."
    )
    capacity: CapacitySearch | None = Field(
        None, description="Search the highest rate within the SLO instead (`distinfer bench capacity`)."
    )
    repeat: int = Field(
        1,
        ge=1,
        le=100,
        description="Run it this many times (as <name>-rep1..N); the report gives each headline figure "
        "with a 95 % confidence interval, and --compare says which differences exceed that noise.",
    )
    repetition: Repetition | None = Field(None, description="Which run of a repeat this is (set by it).")
    meta: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ScenarioSpec:
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warm-up ({self.warmup_s}s) must be shorter than duration ({self.duration_s}s): "
                "the steady window is what is left"
            )
        if self.ramp_s is not None and self.ramp_s >= self.duration_s:
            raise ValueError(
                f"ramp ({self.ramp_s}s) must be shorter than duration ({self.duration_s}s); "
                "ramp over the warm-up (the default) so the steady window sees every user"
            )
        if self.capacity is not None and self.slo is None:
            raise ValueError(
                "a capacity search needs an SLO to search against: add slo: (a preset such as "
                "mlperf-llama2-70b, or {ttft_ms: ..., tpot_ms: ...})"
            )
        if self.capacity is not None and self.repeat > 1:
            raise ValueError(
                f"repeat {self.repeat} with capacity: is not supported; a capacity search already measures "
                "each rate on enough requests for its percentile (min_tail_requests)"
            )
        if self.capacity is not None and self.rate is not None:
            raise ValueError(
                f"rate {self.rate:g} and capacity: both set; the capacity search chooses each step's rate "
                "(remove rate:, or remove capacity: to load at that one rate)"
            )
        return self

    @property
    def ramp(self) -> float:
        """Seconds over which closed-loop users start (the warm-up unless set)."""
        return self.warmup_s if self.ramp_s is None else self.ramp_s

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


def expand_repeats(spec: ScenarioSpec) -> list[ScenarioSpec]:
    """A scenario with `repeat: N` as its N runs, `<name>-rep1` .. `<name>-repN`, each marked."""
    if spec.repeat == 1 or spec.repetition is not None:
        return [spec]
    return [
        ScenarioSpec.model_validate(
            {
                **spec.model_dump(mode="json"),
                "name": f"{spec.name}-rep{index}",
                "repetition": {"of": spec.name, "index": index, "count": spec.repeat},
            }
        )
        for index in range(1, spec.repeat + 1)
    ]


class WorkerPlan(_Strict):
    """A worker's share of a scenario. The API key is passed in the environment, never in a file."""

    index: int
    scenario: ScenarioSpec
    users: int = Field(description="Closed loop: users here; open loop: in-flight cap here.")
    workers: int = Field(1, ge=1, description="How many workers share the scenario.")
    rate: float | None = None
    records: str
    stats: str

    def start_offset(self, local_user: int) -> float:
        """Seconds after the load start at which this worker's user `local_user` sends first.

        Users of all workers interleave (worker w's k-th user is user k * workers + w of the
        scenario, which `split` keeps below the total), evenly spread over the ramp.
        """
        position = local_user * self.workers + self.index
        return self.scenario.ramp * position / self.scenario.users


def parse_meta(items: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--meta {item!r} must be KEY=VALUE, e.g. --meta replicas=2")
        meta[key.strip()] = value.strip()
    return meta


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file beside `path`, then rename: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
