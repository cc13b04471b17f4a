"""SLOs in the report: goodput per scenario, and the throughput/interactivity Pareto front.

The front follows MLPerf Endpoints: each scenario is a point of system output tokens/s against
tokens/s per user, 1000 / P90 TPOT (how fast one user sees text arrive). A point is on the front
when no other point is at least as good on both axes and better on one; the front is drawn as a
step (for each interactivity, the most throughput any configuration reached at it or faster).
"""

from __future__ import annotations

from typing import Any

from distinfer.report.blocks import Block, Heading, Image, Paragraph, Table
from distinfer.results.load import Run
from distinfer.results.metrics import judge_slo, steady_population
from distinfer.results.records import RECORDS_FILE, load_records
from distinfer.results.slo import Slo

SLO_COLUMNS = (
    "Scenario", "Configuration", "SLO", "TTFT at the SLO's percentile (ms)",
    "TPOT at the SLO's percentile (ms)", "Meeting the SLO", "Goodput (req/s)", "Goodput (output tok/s)",
    "Output tok/s", "SLO met",
)  # fmt: skip


def rejudge(run: Run, slo: Slo) -> None:
    """Judge every finished scenario against `slo` from its records (`distinfer report --slo`)."""
    for s in run.scenarios:
        if s.folder is None or s.window is None:
            continue
        population = steady_population(load_records(s.folder / RECORDS_FILE), *s.window)
        verdict = judge_slo(slo, population, s.window[1] - s.window[0])
        s.slo_override = (slo, verdict)


def configuration(row: dict[str, Any]) -> str:
    """`2 x 8`: replicas x per-replica cap, the guide's deployment knobs."""
    if row.get("replicas") and row.get("users_per_replica"):
        return f"{row['replicas']} x {row['users_per_replica']}"
    return f"{row.get('max_concurrency')} users"


def tokens_per_user(row: dict[str, Any]) -> float | None:
    """MLPerf Endpoints' interactivity: 1000 / P90 TPOT."""
    p90 = row.get("p90_tpot_ms")
    return 1000.0 / p90 if p90 else None


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both tokens/s per user and output tokens/s, by interactivity."""
    points = [
        (x, float(r["output_throughput"]), r)
        for r in rows
        if (x := tokens_per_user(r)) is not None and r.get("output_throughput") is not None
    ]
    front = [
        (x, row)
        for x, y, row in points
        if not any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy, _ in points)
    ]
    return [row for _, row in sorted(front, key=lambda item: item[0])]


def best_within_slo(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    meeting = [r for r in rows if r.get("slo_met") and r.get("output_throughput") is not None]
    return max(meeting, key=lambda r: r["output_throughput"]) if meeting else None


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def slo_cells(row: dict[str, Any]) -> list[str | Image]:
    met = {True: "yes", False: "NO", None: "-"}[row.get("slo_met")]
    return [
        row["scenario"], configuration(row), row.get("slo") or "none set",
        _f(row.get("slo_ttft_at_percentile_ms")) if row.get("slo_ttft_limit_ms") else "-",
        _f(row.get("slo_tpot_at_percentile_ms"), 2) if row.get("slo_tpot_limit_ms") else "-",
        _share(row.get("slo_share_meeting")), _f(row.get("request_goodput"), 2),
        _f(row.get("output_goodput")), _f(row.get("output_throughput")), met,
    ]  # fmt: skip


def slo_section(rows: list[dict[str, Any]]) -> list[Block]:
    """Goodput per scenario, then the Pareto front's verdict: which configuration serves most."""
    finished = [r for r in rows if r.get("finished")]
    blocks: list[Block] = [
        Heading("SLO and goodput"),
        Paragraph(
            "Each scenario's requests due in the steady window judged against its SLO: the latency at the "
            "SLO's percentile counts a failed or cut-off request as beyond every limit (*-*: the "
            "percentile falls on one); *Meeting the SLO* is the share of requests within every limit at "
            "once, and goodput their requests/s and output tokens/s (DistServe's goodput)."
        ),
        Table(SLO_COLUMNS, [slo_cells(r) for r in finished], empty="No finished scenario."),
    ]
    if not any(r.get("slo") for r in finished):
        blocks.append(
            Paragraph(
                "No SLO was set: add `slo:` to the scenarios file (a preset such as `mlperf-llama2-70b`, or "
                "`{ttft_ms: ..., tpot_ms: ...}`) or judge this run with `distinfer report DIR --slo NAME`."
            )
        )
    return [*blocks, *pareto_section(finished)]


def pareto_section(rows: list[dict[str, Any]]) -> list[Block]:
    front = pareto_front(rows)
    if not front:
        return []
    names = ", ".join(f"{r['scenario']} ({configuration(r)})" for r in front)
    best = best_within_slo(rows)
    if best is not None:
        verdict = (
            f"**Most output tokens/s within the SLO: {configuration(best)}** (replicas x per-replica cap; "
            f"scenario {best['scenario']}): {_f(best['output_throughput'])} tokens/s at "
            f"{_f(tokens_per_user(best))} tokens/s per user."
        )
    elif any(r.get("slo") for r in rows):
        verdict = "**No configuration met its SLO.**"
    else:
        verdict = "No SLO set, so no configuration is named as best within it."
    return [
        Heading("Throughput against interactivity (Pareto front)", 3),
        Paragraph(
            "MLPerf Endpoints' view: system output tokens/s against tokens/s per user (1000 / P90 TPOT). "
            f"On the front (nothing beats them on both): {names}. {verdict}"
        ),
    ]
