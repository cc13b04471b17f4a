"""What a fault did to a scenario: when errors began and ended, the seconds the SLO was violated, and
when a lost replica was back, from the records and from the deployment's own status sampled during
the run (`status.jsonl`, written by bench/watcher.py: one line per poll of the server's
`GET /status`).

A poll that got no answer is a line of its own: a server gone for good (the Ray head lost) shows as
an endpoint that stopped answering and never came back, which the summary says in words.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from distinfer.results.base import Strict, parse_model
from distinfer.results.metrics import tpot_ms, ttft_ms
from distinfer.results.records import RequestRecord
from distinfer.results.slo import Slo

STATUS_FILE = "status.jsonl"


class StatusLine(Strict):
    """One poll of the server's `GET /status`: a line of `status.jsonl` (unset fields left out)."""

    time: float = Field(description="When it was asked, Unix seconds.")
    ok: bool = Field(description="The server answered with its status.")
    models: list[dict[str, Any]] | None = Field(
        default=None,
        description="When ok: every model's replicas as the server reports them (name, status, "
        "running_replicas, replica_states, message).",
    )
    absent: bool | None = Field(
        default=None, description="The server has no /status (404): nothing more is asked."
    )
    error: str | None = Field(default=None, description="Why the poll got no status.")


def read_status(path: Path) -> list[dict[str, Any]]:
    """The polls in `status.jsonl`, each checked against `StatusLine` and given as written (the
    assessment reads them as plain JSON); a line cut by a kill is passed over, the others stand."""
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        try:
            data = json.loads(text)
        except ValueError:
            continue
        parse_model(data, StatusLine, f"{path}:{number}")
        lines.append(data)
    return lines


class ReplicaCourse(Strict):
    """One model's running replicas over the run."""

    model: str
    at_start: int = Field(description="Running when the load began.")
    lowest: int
    dropped_at_s: float | None = Field(description="Seconds after the load began it first fell short.")
    back_at_s: float | None = Field(description="When it was back to at_start (None: never, in this run).")
    message: str = Field(description="The orchestrator's words while it was short (empty when never).")


class Availability(Strict):
    """A scenario's faults, in seconds after its load began."""

    failed: int
    first_error_s: float | None
    last_error_s: float | None
    error_seconds: int = Field(description="Whole seconds in which at least one request failed.")
    slo_violated_seconds: int | None = Field(
        description="Seconds in which a request failed or missed the SLO (None: the scenario has no SLO)."
    )
    replicas: list[ReplicaCourse]
    status_samples: int
    endpoint_lost_at_s: float | None = Field(
        description="The server stopped answering /status then and never did again in this run."
    )
    summary: str = Field(description="What happened, in one sentence.")


def assess(
    records: Sequence[RequestRecord], status: Sequence[dict[str, Any]], start: float, slo: Slo | None
) -> Availability:
    failed = sorted(r.end - start for r in records if not r.ok and r.error_kind != "cancelled")
    error_buckets = {int(t) for t in failed if t >= 0}
    slo_buckets = None if slo is None else slo_missed_seconds(records, start, slo)
    polled = [s for s in status if not s.get("absent")]
    courses = _replica_courses(polled, start)
    lost_at = _endpoint_lost_at(polled, start)
    result = Availability(
        failed=len(failed),
        first_error_s=round(failed[0], 2) if failed else None,
        last_error_s=round(failed[-1], 2) if failed else None,
        error_seconds=len(error_buckets),
        slo_violated_seconds=None if slo_buckets is None else len(slo_buckets),
        replicas=courses,
        status_samples=len(polled),
        endpoint_lost_at_s=lost_at,
        summary="",
    )
    result.summary = describe(result)
    return result


def slo_missed_seconds(records: Sequence[RequestRecord], start: float, slo: Slo) -> set[int]:
    """The whole seconds after `start` in which a request ended failed or outside the SLO (a request
    cancelled at the run's end is not counted)."""
    missed = (
        r.end - start
        for r in records
        if r.error_kind != "cancelled"
        and (
            not r.ok
            or slo.missed(r.ok, {"ttft": ttft_ms(r), "tpot": tpot_ms(r), "e2el": (r.end - r.sent) * 1000.0})
        )
    )
    return {int(t) for t in missed if t >= 0}


def _replica_courses(status: Sequence[dict[str, Any]], start: float) -> list[ReplicaCourse]:
    answered = [s for s in status if s.get("ok")]
    if not answered:
        return []
    names = [m["name"] for m in answered[0]["models"]]
    courses = []
    for name in names:
        timeline = [(s["time"] - start, m) for s in answered for m in s["models"] if m["name"] == name]
        before = [m for t, m in timeline if t <= 0] or [timeline[0][1]]
        at_start = int(before[-1]["running_replicas"])
        dropped = next(((t, m) for t, m in timeline if m["running_replicas"] < at_start), None)
        back = None
        if dropped is not None:
            back = next(
                (t for t, m in timeline if t > dropped[0] and m["running_replicas"] >= at_start), None
            )
        short = [m for t, m in timeline if m["running_replicas"] < at_start and m.get("message")]
        courses.append(
            ReplicaCourse(
                model=name,
                at_start=at_start,
                lowest=min(int(m["running_replicas"]) for _, m in timeline),
                dropped_at_s=None if dropped is None else round(dropped[0], 2),
                back_at_s=None if back is None else round(back, 2),
                message=short[-1]["message"] if short else "",
            )
        )
    return courses


def _endpoint_lost_at(status: Sequence[dict[str, Any]], start: float) -> float | None:
    """When the unbroken run of unanswered polls that ends the run began (None: it answered last)."""
    if not status or status[-1].get("ok"):
        return None
    lost = None
    for sample in reversed(status):
        if sample.get("ok"):
            break
        lost = sample["time"] - start
    if lost is None or not any(s.get("ok") for s in status):
        return None  # never answered at all: not a loss during the run (the probe saw it answer, though)
    return round(lost, 2)


def describe(a: Availability) -> str:
    parts = []
    if a.failed:
        parts.append(
            f"{a.failed} request(s) failed between {a.first_error_s:.1f} s and {a.last_error_s:.1f} s "
            f"({a.error_seconds} s with errors)"
        )
    if a.slo_violated_seconds:
        parts.append(f"the SLO was violated in {a.slo_violated_seconds} s")
    for course in a.replicas:
        if course.dropped_at_s is None:
            continue
        text = (
            f"{course.model} fell from {course.at_start} to {course.lowest} replica(s) "
            f"at {course.dropped_at_s:.1f} s"
        )
        if course.back_at_s is not None:
            text += f" and was back at {course.back_at_s:.1f} s"
        else:
            text += " and was not back by the end" + (f" ({course.message})" if course.message else "")
        parts.append(text)
    if a.endpoint_lost_at_s is not None:
        parts.append(
            f"the server stopped answering at {a.endpoint_lost_at_s:.1f} s and did not come back "
            "(its Ray head, or the machine it ran on, is gone)"
        )
    return "; ".join(parts) + "." if parts else "no errors, and every replica stayed up."
