"""What a run asks for (`scenario.json`) and what each worker process is told to do."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distinfer.bench.metrics import Slo

SCENARIO_FILE = "scenario.json"
SUMMARY_FILE = "summary.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    slo: Slo | None = None
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
        return self

    @property
    def ramp(self) -> float:
        """Seconds over which closed-loop users start (the warm-up unless set)."""
        return self.warmup_s if self.ramp_s is None else self.ramp_s

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


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
