"""Capacity searches in the report: the highest rate within the SLO per deployment, and every step."""

from __future__ import annotations

from typing import Any

from distinfer.report.blocks import Block, Heading, Image, Paragraph, Table
from distinfer.results.capacity import CapacityResult, CapacityStep

SEARCH_COLUMNS = (
    "Search", "Configuration", "SLO", "Capacity (req/s)", "Lowest failing (req/s)",
    "Goodput at capacity (req/s)", "Goodput at capacity (output tok/s)", "Steps", "Verdict",
)  # fmt: skip
STEP_COLUMNS = (
    "Search", "Step", "Rate (req/s)", "Outcome", "Requests", "Meeting the SLO", "TTFT at percentile (ms)",
    "TPOT at percentile (ms)", "Why",
)  # fmt: skip


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def configuration(result: CapacityResult) -> str:
    if result.replicas and result.users_per_replica:
        return f"{result.replicas} x {result.users_per_replica}"
    return f"{result.replicas} replica(s)" if result.replicas else "-"


def search_cells(result: CapacityResult) -> list[str | Image]:
    at = result.at_capacity
    verdict = result.note
    if result.limited_by_load_generator:
        verdict += "; **bounded by the load generator** (INVALID steps)"
    return [
        result.name, configuration(result), result.slo.label(), _f(result.capacity_rate),
        _f(result.lowest_failing_rate), _f(at.request_goodput if at else None),
        _f(at.output_goodput if at else None, 1), str(len(result.steps)), verdict,
    ]  # fmt: skip


def step_cells(result: CapacityResult, step: CapacityStep) -> list[str | Image]:
    share = "-" if step.share_meeting is None else f"{100 * step.share_meeting:.2f} %"
    why = step.stopped_early or "; ".join(step.invalid_reasons) or ""
    outcome = step.outcome.upper() + (f" (retry {step.retry})" if step.retry else "")
    return [
        result.name, str(step.index), _f(step.rate), outcome, str(step.requests), share,
        _f(step.at_percentile_ms.get("ttft"), 1), _f(step.at_percentile_ms.get("tpot"), 2), why,
    ]  # fmt: skip


def capacity_section(results: list[CapacityResult]) -> list[Block]:
    if not results:
        return []
    return [
        Heading("Capacity within the SLO (highest Poisson arrival rate)"),
        Paragraph(
            "MLPerf Inference's server-scenario question, per deployment: the highest rate of Poisson "
            "arrivals whose requests meet the SLO, found by bracketing then bisecting (each step measured "
            "over a steady window after its warm-up; a step the saturation guard marked INVALID is not a "
            "pass). The capacity is the highest passing rate; the true one lies below the lowest failing."
        ),
        Table(SEARCH_COLUMNS, [search_cells(r) for r in results]),
        Paragraph("Every step (records and summary in capacity/<search>/steps/):"),
        Table(STEP_COLUMNS, [step_cells(r, s) for r in results for s in r.steps]),
    ]
