"""SLOs in the report: goodput per scenario, and the throughput/interactivity Pareto front.

The front follows MLPerf Endpoints: each scenario is a point of system output tokens/s against
tokens/s per user, 1000 / P90 TPOT (how fast one user sees text arrive). A point is on the front
when no other point is at least as good on both axes and better on one; the front is drawn as a
step (for each interactivity, the most throughput any configuration reached at it or faster).
"""

from __future__ import annotations

from distinfer.report.blocks import Block, Column, Heading, Paragraph, digits, table
from distinfer.report.blocks import cell as _f
from distinfer.report.tables import ScenarioRow
from distinfer.results.load import Run
from distinfer.results.metrics import judge_slo, steady_population
from distinfer.results.records import RECORDS_FILE, load_records
from distinfer.results.slo import Slo


def rejudge(run: Run, slo: Slo) -> None:
    """Judge every finished scenario against `slo` from its records (`distinfer report --slo`)."""
    for s in run.scenarios:
        if s.folder is None or s.window is None:
            continue
        population = steady_population(load_records(s.folder / RECORDS_FILE), *s.window)
        verdict = judge_slo(slo, population, s.window[1] - s.window[0])
        s.slo_override = (slo, verdict)


def configuration(row: ScenarioRow) -> str:
    """`2 x 8`: replicas x per-replica cap, the guide's deployment knobs."""
    if row.replicas and row.users_per_replica:
        return f"{row.replicas} x {row.users_per_replica}"
    return f"{row.max_concurrency} users"


def tokens_per_user(row: ScenarioRow) -> float | None:
    """MLPerf Endpoints' interactivity: 1000 / P90 TPOT."""
    p90 = row.tpot.p90
    return 1000.0 / p90 if p90 else None


def pareto_front(rows: list[ScenarioRow]) -> list[ScenarioRow]:
    """The rows no other row beats on both tokens/s per user and output tokens/s, by interactivity."""
    points = [
        (x, float(r.output_throughput), r)
        for r in rows
        if (x := tokens_per_user(r)) is not None and r.output_throughput is not None
    ]
    front = [
        (x, row)
        for x, y, row in points
        if not any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy, _ in points)
    ]
    return [row for _, row in sorted(front, key=lambda item: item[0])]


def best_within_slo(rows: list[ScenarioRow]) -> ScenarioRow | None:
    meeting = [r for r in rows if r.slo_met and r.output_throughput is not None]
    return max(meeting, key=lambda r: r.output_throughput or 0.0) if meeting else None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _at_percentile(key: str, n: int) -> Column[ScenarioRow]:
    """The latency at the SLO's percentile, where the SLO limits it."""
    return Column(
        f"{key.upper()} at the SLO's percentile (ms)",
        lambda r: _f(r.slo_at_percentile_ms.get(key), n) if r.slo_limit_ms.get(key) else "-",
    )


SLO_COLUMNS: list[Column[ScenarioRow]] = [
    Column("Scenario", lambda r: r.scenario),
    Column("Configuration", configuration),
    Column("SLO", lambda r: r.slo or "none set"),
    _at_percentile("ttft", 1),
    _at_percentile("tpot", 2),
    Column("Meeting the SLO", lambda r: r.slo_share_meeting, _share),
    Column("Goodput (req/s)", lambda r: r.request_goodput, digits(2)),
    Column("Goodput (output tok/s)", lambda r: r.output_goodput),
    Column("Output tok/s", lambda r: r.output_throughput),
    Column("SLO met", lambda r: {True: "yes", False: "NO", None: "-"}[r.slo_met]),
]


def slo_section(rows: list[ScenarioRow]) -> list[Block]:
    """Goodput per scenario, then the Pareto front's verdict: which configuration serves most."""
    finished = [r for r in rows if r.finished]
    blocks: list[Block] = [
        Heading("SLO and goodput"),
        Paragraph(
            "Each scenario's requests due in the steady window judged against its SLO: the latency at the "
            "SLO's percentile counts a failed or cut-off request as beyond every limit (*-*: the "
            "percentile falls on one); *Meeting the SLO* is the share of requests within every limit at "
            "once, and goodput their requests/s and output tokens/s (DistServe's goodput)."
        ),
        table(SLO_COLUMNS, finished, empty="No finished scenario."),
    ]
    if not any(r.slo for r in finished):
        blocks.append(
            Paragraph(
                "No SLO was set: add `slo:` to the scenarios file (a preset such as `mlperf-llama2-70b`, or "
                "`{ttft_ms: ..., tpot_ms: ...}`) or judge this run with `distinfer report DIR --slo NAME`."
            )
        )
    return [*blocks, *pareto_section(finished)]


def pareto_section(rows: list[ScenarioRow]) -> list[Block]:
    front = pareto_front(rows)
    if not front:
        return []
    names = ", ".join(f"{r.scenario} ({configuration(r)})" for r in front)
    best = best_within_slo(rows)
    if best is not None:
        verdict = (
            f"**Most output tokens/s within the SLO: {configuration(best)}** (replicas x per-replica cap; "
            f"scenario {best.scenario}): {_f(best.output_throughput)} tokens/s at "
            f"{_f(tokens_per_user(best))} tokens/s per user."
        )
    elif any(r.slo for r in rows):
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
