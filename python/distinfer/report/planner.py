"""The capacity planner in the report (python/distinfer/capacity_plan.py): per deployment shape, the
scalability law fitted to this run's measurements, predictions for the next replica counts, and the
check of leaving the largest measured count out and predicting it from the others."""

from __future__ import annotations

from distinfer.capacity_plan import Series, fit, holdout, predictions, series_from
from distinfer.report.blocks import Block, Heading, Image, Paragraph, Table
from distinfer.results.load import Run

COLUMNS = ("Quantity", "Replicas", "Predicted", "Measured", "Error", "Fit")


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def series_rows(series: Series) -> list[list[str | Image]]:
    model = fit(series.points)
    counts = sorted({p.replicas for p in series.points})
    asked = [*counts, counts[-1] + 1, counts[-1] + 2]
    label = f"{series.quantity}: {series.label} ({series.unit})"
    rows: list[list[str | Image]] = []
    for p in predictions(model, asked, series.points):
        error = "-" if p.error is None else f"{p.error:+.1%}"
        rows.append([label, str(p.replicas), _f(p.predicted), _f(p.measured), error, model.describe()])
    if len(counts) >= 3:  # the check: leave the largest out, predict it from the rest
        held, (check,) = holdout(series.points, set(counts[:-1]))
        error = "-" if check.error is None else f"{check.error:+.1%}"
        rows.append(
            [
                label,
                f"{check.replicas} (left out)",
                _f(check.predicted),
                _f(check.measured),
                error,
                held.describe(),
            ]
        )
    return rows


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
        Table(COLUMNS, [row for s in scaling for row in series_rows(s)]),
    ]
