"""Capacity searches in the report: the highest rate within the SLO per deployment, and every step."""

from __future__ import annotations

from distinfer.report.blocks import Block, Column, Heading, Named, Paragraph, digits, table
from distinfer.results.capacity import CapacityResult, CapacityStep


def configuration(result: CapacityResult) -> str:
    if result.replicas and result.users_per_replica:
        return f"{result.replicas} x {result.users_per_replica}"
    return f"{result.replicas} replica(s)" if result.replicas else "-"


def _verdict(result: CapacityResult) -> str:
    if result.limited_by_load_generator:
        return result.note + "; **bounded by the load generator** (INVALID steps)"
    return result.note


SEARCH_COLUMNS: list[Column[CapacityResult]] = [
    Column("Search", lambda r: r.name),
    Column("Configuration", configuration),
    Column("SLO", lambda r: r.slo.label()),
    Column("Capacity (req/s)", lambda r: r.capacity_rate, digits(2)),
    Column("Lowest failing (req/s)", lambda r: r.lowest_failing_rate, digits(2)),
    Column(
        "Goodput at capacity (req/s)", lambda r: r.at_capacity and r.at_capacity.request_goodput, digits(2)
    ),
    Column("Goodput at capacity (output tok/s)", lambda r: r.at_capacity and r.at_capacity.output_goodput),
    Column("Steps", lambda r: len(r.steps)),
    Column("Verdict", _verdict),
]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


STEP_COLUMNS: list[Column[Named[CapacityStep]]] = [
    Column("Search", lambda x: x.name),
    Column("Step", lambda x: x.of.index),
    Column("Rate (req/s)", lambda x: x.of.rate, digits(2)),
    Column("Outcome", lambda x: x.of.outcome.upper() + (f" (retry {x.of.retry})" if x.of.retry else "")),
    Column("Requests", lambda x: x.of.requests),
    Column("Meeting the SLO", lambda x: x.of.share_meeting, _share),
    Column("TTFT at percentile (ms)", lambda x: x.of.at_percentile_ms.get("ttft")),
    Column("TPOT at percentile (ms)", lambda x: x.of.at_percentile_ms.get("tpot"), digits(2)),
    Column("Why", lambda x: x.of.stopped_early or "; ".join(x.of.invalid_reasons)),
]


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
        table(SEARCH_COLUMNS, results),
        Paragraph("Every step (records and summary in capacity/<search>/steps/):"),
        table(STEP_COLUMNS, [Named(r.name, s) for r in results for s in r.steps]),
    ]
