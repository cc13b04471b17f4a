"""An autoscaling scenario's figures: its deployment's replicas over time (`replicas.jsonl`, sampled
each second while the load runs by bench/replicas.py) against the load's steps and the records.

- **Scale-up time**, per load increase: seconds from the change to the first sample where Serve's
  target rose (the decision) and to the first where enough replicas were RUNNING (serving): as many
  as the new level asks for (closed loop: users / target_ongoing_requests, within min and max), or,
  where that is not known (open loop), one more than at the change.
- **SLO violated while scaling**: whole seconds, from the change until the replicas served (or the
  next change, or the end), in which a request ended failed or outside the SLO (the per-second
  windows of results/availability.py).
- **Replica-seconds**: the integral of RUNNING replicas over the load (each sample holds until the
  next), against a static deployment of the smallest size that met the SLO at the peak for the same
  time: the cost saved is one minus their ratio.

Pure functions of the samples and records; docs/autoscaling.md says how to read them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from distinfer.results.availability import STATUS_FILE, read_status, slo_missed_seconds
from distinfer.results.base import Strict, parse_model
from distinfer.results.records import RequestRecord
from distinfer.results.scenario import ScenarioSpec
from distinfer.results.workload import LoadStep

REPLICAS_FILE = "replicas.jsonl"


class ReplicaSample(Strict):
    """One poll of the deployment's replicas: a line of `replicas.jsonl`."""

    t: float = Field(description="When it was asked, Unix seconds.")
    running: int = Field(ge=0, description="Replicas RUNNING (serving).")
    starting: int = Field(ge=0, description="Replicas STARTING (added, not serving yet).")
    target: int | None = Field(
        default=None, ge=0, description="Serve's target replica count (None where the source has none)."
    )


def read_replicas(folder: Path, model: str) -> tuple[list[ReplicaSample], str]:
    """A scenario's replica samples and the file they came from: its `replicas.jsonl`, else the replica
    states of `model` in its `status.jsonl` (the server's /status, which has no target). A line cut by
    a kill is passed over."""
    path = folder / REPLICAS_FILE
    if path.exists():
        samples = []
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            try:
                data = json.loads(text)
            except ValueError:
                continue
            samples.append(parse_model(data, ReplicaSample, f"{path}:{number}"))
        return samples, REPLICAS_FILE
    samples = []
    for line in read_status(folder / STATUS_FILE):
        for entry in line.get("models") or []:
            if line.get("ok") and entry.get("name") == model:
                states = entry.get("replica_states") or {}
                samples.append(
                    ReplicaSample(
                        t=line["time"],
                        running=int(entry.get("running_replicas", 0)),
                        starting=int(states.get("STARTING", 0)),
                    )
                )
    return samples, STATUS_FILE


class ScaleUp(Strict):
    """One load increase and how the replicas followed it (seconds after the change)."""

    at_s: float = Field(description="When the load rose, seconds after it started.")
    from_level: float = Field(description="Users (or req/s) before.")
    to_level: float = Field(description="Users (or req/s) after.")
    replicas_before: int = Field(description="RUNNING at the change.")
    need: int | None = Field(
        description="Replicas the new level asks for (closed loop: users / target_ongoing_requests within "
        "min and max); None: unknown (open loop), one more than before counts."
    )
    decided_s: float | None = Field(
        description="Until Serve's target first rose (None: never, or no target)."
    )
    serving_s: float | None = Field(description="Until the replicas asked for were RUNNING (None: never).")
    slo_violated_s: int | None = Field(
        description="Whole seconds with a failed or out-of-SLO request from the change until serving (or "
        "the next change, or the end); None without an SLO."
    )


class AutoscalingFigures(Strict):
    """A scenario's autoscaling, in `summary.json` (`autoscaling`)."""

    samples: int = Field(description="Replica samples taken during the load.")
    source: str = Field(description="replicas.jsonl (Serve's REST API) or status.jsonl (the app's /status).")
    min_replicas: int | None
    max_replicas: int | None
    lowest_running: int | None
    highest_running: int | None
    within_bounds: bool | None = Field(
        description="Every sample's running and target replicas within [min_replicas, max_replicas]."
    )
    scale_ups: list[ScaleUp]
    slo_violated_s: int | None = Field(
        description="Whole seconds of the load with a violation (all of them)."
    )
    slo_violated_scaling_s: int | None = Field(description="Of those, the seconds while scaling up.")
    load_s: float = Field(description="Seconds of load the replica-seconds cover.")
    replica_seconds: float | None = Field(description="RUNNING replicas integrated over the load.")
    mean_replicas: float | None = Field(description="replica_seconds / load_s.")


def replica_seconds(samples: Sequence[ReplicaSample], t0: float, t1: float) -> float | None:
    """RUNNING replicas integrated over [t0, t1]: each sample holds until the next one, the first from
    t0 and the last until t1. None without samples."""
    if not samples or t1 <= t0:
        return None
    ordered = sorted(samples, key=lambda s: s.t)
    total = 0.0
    for index, sample in enumerate(ordered):
        begin = t0 if index == 0 else max(t0, sample.t)
        end = t1 if index + 1 == len(ordered) else min(t1, ordered[index + 1].t)
        total += sample.running * max(0.0, end - begin)
    return total


def replicas_needed(level: float, target_ongoing: float, low: int, high: int) -> int:
    """Replicas `level` concurrent requests ask for at `target_ongoing` each, within [low, high]."""
    return max(low, min(high, math.ceil(level / target_ongoing - 1e-9)))


def cost_saved(used_replica_seconds: float, static_replicas: int, load_s: float) -> float:
    """One minus the replica-seconds used over those of `static_replicas` for the same time."""
    return 1.0 - used_replica_seconds / (static_replicas * load_s)


def _running_at(ordered: Sequence[ReplicaSample], t: float) -> int:
    before = [s for s in ordered if s.t <= t]
    return (before[-1] if before else ordered[0]).running


def _count(buckets: set[int] | None, t0: float, t1: float) -> int | None:
    """The whole seconds of `buckets` overlapping [t0, t1)."""
    if buckets is None:
        return None
    return sum(1 for k in buckets if k + 1 > t0 and k < t1)


def scale_ups(
    spec: ScenarioSpec,
    steps: list[LoadStep],
    samples: Sequence[ReplicaSample],
    start: float,
    missed: set[int] | None,
) -> list[ScaleUp]:
    """Each increase of the steps' level and the replicas' answer to it."""
    ordered = sorted(samples, key=lambda s: s.t)
    scaling = spec.autoscaling
    out = []
    for index in range(1, len(steps)):
        before, step = steps[index - 1].level, steps[index]
        if step.level <= before or not ordered:
            continue
        change = start + step.at_s
        ends = start + (steps[index + 1].at_s if index + 1 < len(steps) else spec.duration_s)
        had = _running_at(ordered, change)
        need = None
        if scaling is not None and step.users is not None:
            need = replicas_needed(
                step.level, scaling.target_ongoing_requests, scaling.min_replicas, scaling.max_replicas
            )
        wanted = need if need is not None and need > had else had + 1
        after = [s for s in ordered if s.t >= change]
        decided = next((s.t - change for s in after if s.target is not None and s.target > had), None)
        serving = next((s.t - change for s in after if s.running >= wanted), None)
        if need is not None and need <= had:
            serving = 0.0  # already enough replicas: nothing to wait for
        until = change + serving if serving is not None else ends
        out.append(
            ScaleUp(
                at_s=step.at_s,
                from_level=before,
                to_level=step.level,
                replicas_before=had,
                need=need,
                decided_s=None if decided is None else round(decided, 3),
                serving_s=None if serving is None else round(serving, 3),
                slo_violated_s=_count(missed, step.at_s, until - start),
            )
        )
    return out


def autoscaling_figures(
    spec: ScenarioSpec,
    records: Sequence[RequestRecord],
    samples: Sequence[ReplicaSample],
    start: float,
    source: str = REPLICAS_FILE,
) -> AutoscalingFigures:
    """The figures of one scenario whose load started at `start` (Unix seconds)."""
    end = start + spec.duration_s
    during = [s for s in samples if start <= s.t <= end]
    missed = None if spec.slo is None else slo_missed_seconds(records, start, spec.slo)
    ups = scale_ups(spec, spec.steps or [], samples, start, missed)
    scaling = spec.autoscaling
    within = None
    if scaling is not None and during:
        within = all(
            scaling.min_replicas <= s.running <= scaling.max_replicas
            and (s.target is None or scaling.min_replicas <= s.target <= scaling.max_replicas)
            for s in during
        )
    used = replica_seconds(samples, start, end)
    scaling_s = None
    if missed is not None:
        scaling_s = sum(u.slo_violated_s or 0 for u in ups)
    return AutoscalingFigures(
        samples=len(during),
        source=source,
        min_replicas=None if scaling is None else scaling.min_replicas,
        max_replicas=None if scaling is None else scaling.max_replicas,
        lowest_running=min((s.running for s in during), default=None),
        highest_running=max((s.running for s in during), default=None),
        within_bounds=within,
        scale_ups=ups,
        slo_violated_s=None if missed is None else _count(missed, 0.0, spec.duration_s),
        slo_violated_scaling_s=scaling_s,
        load_s=spec.duration_s,
        replica_seconds=None if used is None else round(used, 3),
        mean_replicas=None if used is None else round(used / spec.duration_s, 3),
    )
