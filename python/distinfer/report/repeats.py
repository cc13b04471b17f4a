"""Repeated scenarios in the report: each headline figure with its 95 % confidence interval, and in a
comparison, which differences are larger than the run-to-run noise (report/stats.py says how)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distinfer.report.blocks import Block, Column, Heading, Paragraph, table
from distinfer.report.stats import Difference, Estimate, difference, estimate
from distinfer.report.tables import ScenarioRow

# (the figure's name in results.json, label, digits, the figure)
HEADLINE: tuple[tuple[str, str, int, Callable[[ScenarioRow], float | None]], ...] = (
    ("request_throughput", "RPS", 2, lambda r: r.request_throughput),
    ("output_throughput", "Output tok/s", 1, lambda r: r.output_throughput),
    ("median_ttft_ms", "TTFT P50 (ms)", 1, lambda r: r.ttft.median),
    ("median_tpot_ms", "TPOT P50 (ms)", 2, lambda r: r.tpot.median),
    ("p95_e2el_ms", "P95 latency (ms)", 0, lambda r: r.e2el.p95),
    ("output_goodput", "Goodput (output tok/s)", 1, lambda r: r.output_goodput),
)


def group_of(row: ScenarioRow) -> str:
    """The scenario a row belongs to: the one it repeats, or itself."""
    return row.repeat_of or row.scenario


def grouped(rows: list[ScenarioRow]) -> dict[str, list[ScenarioRow]]:
    groups: dict[str, list[ScenarioRow]] = {}
    for row in rows:
        if row.finished:
            groups.setdefault(group_of(row), []).append(row)
    return groups


def estimates(rows: list[ScenarioRow]) -> dict[str, Estimate]:
    out = {}
    for key, _, _, figure in HEADLINE:
        value = estimate([x for x in map(figure, rows) if x is not None])
        if value is not None:
            out[key] = value
    return out


def repeats_document(rows: list[ScenarioRow]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """For results.json: each repeated scenario's figures as mean, std, n and the CI's half width."""
    return {
        name: {
            key: {"mean": e.mean, "std": e.std, "n": e.n, "ci95_half_width": e.half_width}
            for key, e in estimates(group).items()
        }
        for name, group in grouped(rows).items()
        if len(group) >= 2
    }


@dataclass(frozen=True)
class Repeated:
    """A scenario run several times: how many, and its headline figures' estimates by name."""

    scenario: str
    runs: int
    found: dict[str, Estimate]


def _estimate(key: str, digits: int) -> Callable[[Repeated], str]:
    """The figure's mean ± half its confidence interval, - where no run has it."""
    return lambda x: x.found[key].text(digits) if key in x.found else "-"


REPEATED_COLUMNS: list[Column[Repeated]] = [
    Column("Scenario", lambda x: x.scenario),
    Column("Runs", lambda x: x.runs),
    *(Column(label, _estimate(key, digits)) for key, label, digits, _ in HEADLINE),
]


def repeats_section(rows: list[ScenarioRow]) -> list[Block]:
    repeated = [Repeated(name, len(group), estimates(group)) for name, group in grouped(rows).items()]
    repeated = [r for r in repeated if r.runs >= 2]
    if not repeated:
        return []
    return [
        Heading("Repeated scenarios (mean ± 95 % confidence interval)"),
        Paragraph(
            "Each scenario run several times (`repeat:`): the mean of its runs ± half the 95 % confidence "
            "interval (Student's t on the runs' spread). Each run's own row is in the tables above."
        ),
        table(REPEATED_COLUMNS, repeated),
    ]


@dataclass(frozen=True)
class NoiseRow:
    """One scenario's headline figure in two runs, and whether they differ beyond the noise."""

    scenario: str
    figure: str
    label: str
    digits: int
    this: Estimate
    other: Estimate
    diff: Difference

    def document(self) -> dict[str, Any]:
        def side(e: Estimate) -> dict[str, Any]:
            return {"mean": e.mean, "ci95_half_width": e.half_width, "n": e.n}

        return {
            "scenario": self.scenario,
            "figure": self.figure,
            "this": side(self.this),
            "other": side(self.other),
            "delta_percent": self.diff.delta_percent,
            "welch_t": self.diff.t,
            "df": self.diff.df,
            "beyond_noise": self.diff.beyond_noise,
        }


def noise_comparison(rows: list[ScenarioRow], other_rows: list[ScenarioRow]) -> list[NoiseRow]:
    """Per scenario (repeats grouped) and headline figure: the change, and whether it beats the noise."""
    mine, theirs = grouped(rows), grouped(other_rows)
    out = []
    for name, group in mine.items():
        if name not in theirs:
            continue
        a, b = estimates(group), estimates(theirs[name])
        for key, label, digits, _ in HEADLINE:
            if key in a and key in b:
                out.append(NoiseRow(name, key, label, digits, a[key], b[key], difference(a[key], b[key])))
    return out


VERDICT_TEXT = {"yes": "**yes**", "no": "no (within the noise)", "unknown": "unknown (no repeats)"}


NOISE_COLUMNS: list[Column[NoiseRow]] = [
    Column("Scenario", lambda c: c.scenario),
    Column("Figure", lambda c: c.label),
    Column("This run", lambda c: c.this.text(c.digits)),
    Column("Other run", lambda c: c.other.text(c.digits)),
    Column("Change", lambda c: c.diff.delta_percent, lambda d: "-" if d is None else f"{d:+.1f} %"),
    Column("Beyond the noise", lambda c: VERDICT_TEXT[c.diff.beyond_noise]),
]


def noise_section(comparisons: list[NoiseRow]) -> list[Block]:
    if not comparisons:
        return []
    return [
        Heading("Differences beyond run-to-run noise", 3),
        Paragraph(
            "Welch's t-test at 5 % on the two runs' repeats (mean ± 95 % confidence interval; one side "
            "without repeats borrows the other's spread; neither: unknown)."
        ),
        table(NOISE_COLUMNS, comparisons),
    ]
