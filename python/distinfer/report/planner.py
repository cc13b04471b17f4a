"""The capacity planner in the report (python/distinfer/capacity_plan.py): per deployment shape, the
scalability law fitted to this run's measurements, predictions for the next replica counts, and the
check of leaving the largest measured count out and predicting it from the others."""

from __future__ import annotations

from dataclasses import dataclass

from distinfer.capacity_plan import Fit, Prediction, Series, fit, holdout, predictions, series_from
from distinfer.report.blocks import Block, Column, Heading, Paragraph, digits, table
from distinfer.results.load import Run


@dataclass(frozen=True)
class PlanLine:
    """One replica count of a series: predicted by `model`, beside what was measured."""

    label: str
    replicas: str
    p: Prediction
    model: Fit


COLUMNS: list[Column[PlanLine]] = [
    Column("Quantity", lambda x: x.label),
    Column("Replicas", lambda x: x.replicas),
    Column("Predicted", lambda x: x.p.predicted, digits(2)),
    Column("Measured", lambda x: x.p.measured, digits(2)),
    Column("Error", lambda x: "-" if x.p.error is None else f"{x.p.error:+.1%}"),
    Column("Fit", lambda x: x.model.describe()),
]


def series_rows(series: Series) -> list[PlanLine]:
    model = fit(series.points)
    counts = sorted({p.replicas for p in series.points})
    asked = [*counts, counts[-1] + 1, counts[-1] + 2]
    label = f"{series.quantity}: {series.label} ({series.unit})"
    lines = [PlanLine(label, str(p.replicas), p, model) for p in predictions(model, asked, series.points)]
    if len(counts) >= 3:  # the check: leave the largest out, predict it from the rest
        held, (check,) = holdout(series.points, set(counts[:-1]))
        lines.append(PlanLine(label, f"{check.replicas} (left out)", check, held))
    return lines


def planner_section(run: Run) -> list[Block]:
    scaling = [s for s in series_from([run]) if len({p.replicas for p in s.points}) >= 2]
    if not scaling:
        return []
    return [
        Heading("Capacity planner"),
        Paragraph(
            "The Universal Scalability Law fitted per deployment shape to this run's replica counts "
            "(`capacity`: the highest rate within the SLO; `tokens`: output tokens/s at users = replicas "
            "x cap); the next replica counts predicted, and with three counts or more, the largest left "
            "out and predicted from the others. `distinfer capacity-plan RUN...` plans across runs and "
            "for a target load (`--target`, `--replicas-per-node`)."
        ),
        table(COLUMNS, [line for s in scaling for line in series_rows(s)]),
    ]
