"""The capacity planner: from measured configurations, the capacity of one not yet measured, and the
replicas (and nodes) a target load needs within the SLO.

Model: the Universal Scalability Law (Gunther), X(N) = lam N / (1 + sigma (N - 1) + kappa N (N - 1))
for N replicas: lam is one replica's capacity, sigma the share of the work that does not spread
over replicas (contention: a shared router, proxy or network), kappa a cost that grows with every
pair of replicas (coherency). N / X(N) is a polynomial in N, fitted by least squares:

- one replica count measured: linear scaling (sigma = kappa = 0);
- two or three: sigma only (kappa = 0, Amdahl's law), so two points are fitted exactly and three
  are not over-fitted;
- four or more: sigma and kappa.

sigma and kappa are kept >= 0: a superlinear step (a faster GPU added last) is not extrapolated.

Two quantities are planned alike, each per deployment shape (model, per-replica cap, SLO):
- the **capacity within the SLO**: the highest Poisson rate a capacity search found, per replica count;
- the **output tokens/s at a concurrency**: closed-loop scenarios at users = replicas x cap (the
  guide's table).

`distinfer capacity-plan RUN_DIR...` prints the fits, predictions for the replica counts asked and
the replicas (and nodes) a target needs; the report has the same section for its own run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer
from pydantic import Field

from distinfer.config import ConfigError
from distinfer.results.base import Strict
from distinfer.results.load import Run, load_run

MAX_REPLICAS = 4096


class Point(Strict):
    """One measured configuration."""

    replicas: int = Field(ge=1)
    value: float = Field(gt=0, description="Requests/s within the SLO, or output tokens/s.")
    source: str = Field("", description="The run and scenario (or search) it was measured in.")


class Fit(Strict):
    """X(N) = lam N / (1 + sigma (N - 1) + kappa N (N - 1))."""

    law: Literal["linear", "amdahl", "usl"]
    lam: float = Field(description="One replica's capacity (the model's X(1)).")
    sigma: float = Field(ge=0, description="Contention: the share that does not scale.")
    kappa: float = Field(ge=0, description="Coherency: a cost growing with pairs of replicas.")
    points: list[Point]

    def predict(self, replicas: int) -> float:
        n = float(replicas)
        return self.lam * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))

    def ceiling(self) -> tuple[float, int | None]:
        """The most the model ever reaches, and at how many replicas (None: only in the limit)."""
        if self.kappa > 0:
            peak = max(1, round(math.sqrt((1.0 - self.sigma) / self.kappa))) if self.sigma < 1 else 1
            best = max((peak - 1, peak, peak + 1), key=lambda n: self.predict(max(n, 1)))
            return self.predict(max(best, 1)), max(best, 1)
        if self.sigma > 0:
            return self.lam / self.sigma, None
        return math.inf, None

    def replicas_for(self, target: float) -> int | None:
        """The fewest replicas the model says reach `target`; None when it never does."""
        if self.ceiling()[0] < target:
            return None
        return next((n for n in range(1, MAX_REPLICAS + 1) if self.predict(n) >= target), None)

    def describe(self) -> str:
        return (
            f"{self.law}: one replica {self.lam:,.4g}, contention sigma {self.sigma:.4f}, "
            f"coherency kappa {self.kappa:.5f}"
        )


def fit(points: Sequence[Point]) -> Fit:
    """The scalability law through measured points (several at one replica count are averaged)."""
    if not points:
        raise ValueError("the planner needs at least one measured configuration")
    by_n: dict[int, list[float]] = {}
    for point in points:
        by_n.setdefault(point.replicas, []).append(point.value)
    ns = np.array(sorted(by_n), dtype=float)
    xs = np.array([np.mean(by_n[int(n)]) for n in ns])
    kept = list(points)
    if len(ns) >= 4:
        usl = _fit_usl(ns, xs, kept)
        if usl is not None:
            return usl
    if len(ns) >= 2:
        amdahl = _fit_amdahl(ns, xs, kept)
        if amdahl is not None:
            return amdahl
    lam = float(np.sum(ns * xs) / np.sum(ns * ns))  # least squares through the origin
    return Fit(law="linear", lam=lam, sigma=0.0, kappa=0.0, points=kept)


def _fit_amdahl(ns: np.ndarray, xs: np.ndarray, points: list[Point]) -> Fit | None:
    b, a = np.polyfit(ns, ns / xs, 1)  # N / X = (1 - sigma) / lam + (sigma / lam) N
    lam = 1.0 / (a + b)
    sigma = b * lam
    if lam <= 0 or sigma < 0:
        return None
    return Fit(law="amdahl", lam=float(lam), sigma=float(min(sigma, 1.0)), kappa=0.0, points=points)


def _fit_usl(ns: np.ndarray, xs: np.ndarray, points: list[Point]) -> Fit | None:
    c2, c1, c0 = np.polyfit(ns, ns / xs, 2)  # N / X = c0 + c1 N + c2 N^2
    lam = 1.0 / (c0 + c1 + c2)
    kappa = c2 * lam
    sigma = c1 * lam + kappa
    if lam <= 0 or kappa < 0 or sigma < 0:
        return None
    return Fit(law="usl", lam=float(lam), sigma=float(min(sigma, 1.0)), kappa=float(kappa), points=points)


class Prediction(Strict):
    replicas: int
    predicted: float
    measured: float | None = None
    error: float | None = Field(None, description="(predicted - measured) / measured.")


def predictions(model: Fit, replicas: Iterable[int], measured: Sequence[Point] = ()) -> list[Prediction]:
    known: dict[int, list[float]] = {}
    for point in measured:
        known.setdefault(point.replicas, []).append(point.value)
    out = []
    for n in replicas:
        value = float(np.mean(known[n])) if n in known else None
        guess = model.predict(n)
        out.append(
            Prediction(
                replicas=n, predicted=guess, measured=value, error=None if not value else guess / value - 1
            )
        )
    return out


def holdout(points: Sequence[Point], train: set[int]) -> tuple[Fit, list[Prediction]]:
    """Fit on the replica counts in `train`, predict every other measured one."""
    model = fit([p for p in points if p.replicas in train])
    others = sorted({p.replicas for p in points} - train)
    return model, predictions(model, others, [p for p in points if p.replicas not in train])


def nodes_for(replicas: int, replicas_per_node: int) -> int:
    return math.ceil(replicas / replicas_per_node)


# ---- measurements from result folders ------------------------------------------------------------


class Series(Strict):
    """One deployment shape's measurements: the same model, per-replica cap and SLO."""

    quantity: Literal["capacity", "tokens"] = Field(
        description="capacity: req/s within the SLO (capacity searches); tokens: output tokens/s at "
        "users = replicas x cap (closed-loop scenarios)."
    )
    label: str
    unit: str
    points: list[Point]


def series_from_runs(run_dirs: Sequence[Path]) -> list[Series]:
    """Every capacity search and every valid closed-loop scenario with a replica count, grouped."""
    return series_from([load_run(run_dir) for run_dir in run_dirs])


def series_from(runs: Sequence[Run]) -> list[Series]:
    """The capacity searches with a capacity and a replica count, and the valid closed-loop scenarios
    with a replica count and an output throughput, each grouped by deployment shape."""
    groups: dict[tuple[str, str], Series] = {}
    for run in runs:
        run_dir = run.path
        for result in run.capacity:
            if result.capacity_rate is None or not result.replicas:
                continue
            label = f"{result.model}, cap {result.users_per_replica or '-'} per replica, {result.slo.label()}"
            series = groups.setdefault(
                ("capacity", label),
                Series(quantity="capacity", label=label, unit="req/s within the SLO", points=[]),
            )
            series.points.append(
                Point(
                    replicas=result.replicas,
                    value=result.capacity_rate,
                    source=f"{run_dir.name}/{result.name}",
                )
            )
        for scenario in run.scenarios:
            summary, spec, replicas = scenario.summary, scenario.spec, scenario.replicas
            if summary is None or not summary.valid or (spec is not None and spec.rate) or not replicas:
                continue
            throughput = summary.metrics.output_throughput
            if not throughput:
                continue
            model = spec.model if spec else None
            label = f"{model}, {scenario.users_per_replica or '-'} users per replica"
            series = groups.setdefault(
                ("tokens", label), Series(quantity="tokens", label=label, unit="output tokens/s", points=[])
            )
            series.points.append(
                Point(
                    replicas=replicas,
                    value=throughput,
                    source=f"{run_dir.name}/{scenario.name}",
                )
            )
    return list(groups.values())


# ---- the command ------------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table's lines: the `header` cells, the `align` line as given (`|---|---:|`), then
    one line per row, each cell as str() prints it. The planner's tables and its benchmarks' tables."""

    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(map(str, cells)) + " |"

    return [line(header), align, *map(line, rows)]


def _table(series: Series, model: Fit, replicas: list[int]) -> list[str]:
    rows = [
        (
            p.replicas,
            f"{p.predicted:,.4g}",
            "-" if p.measured is None else f"{p.measured:,.4g}",
            "-" if p.error is None else f"{p.error:+.1%}",
        )
        for p in predictions(model, replicas, series.points)
    ]
    return [
        f"## {series.quantity}: {series.label} ({series.unit})",
        f"fit ({len({p.replicas for p in series.points})} replica count(s)): {model.describe()}",
        *markdown_table(("replicas", "predicted", "measured", "error"), "|---:|---:|---:|---:|", rows),
    ]


def capacity_plan_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (results/<run-id>) to plan from.")],
    replicas: Annotated[
        list[int] | None,
        typer.Option(
            "--replicas",
            help="Predict this replica count (repeat; default: up to twice the largest measured).",
        ),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(help="A load to reach (in the series' unit): the replicas and nodes it needs."),
    ] = None,
    replicas_per_node: Annotated[
        int, typer.Option(help="Replicas one node holds (its GPUs / tensor_parallel_size).", min=1)
    ] = 1,
) -> None:
    """Predict capacity for replica counts not measured, and what a target load needs.

    From every capacity search (req/s within the SLO) and valid closed-loop scenario (output tokens/s
    at users = replicas x cap) in the runs, grouped by model, per-replica cap and SLO; a scalability
    law is fitted per group (python/distinfer/capacity_plan.py says which, and why).
    """
    try:
        all_series = series_from_runs(run_dirs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not all_series:
        raise ConfigError(
            "no capacity search and no valid closed-loop scenario with a replica count in "
            f"{', '.join(map(str, run_dirs))}; run `distinfer bench capacity` or a sweep first"
        )
    for series in all_series:
        model = fit(series.points)
        largest = max(p.replicas for p in series.points)
        asked = sorted(set(replicas or range(1, 2 * largest + 1)))
        typer.echo("\n".join(_table(series, model, asked)))
        if target is not None:
            needed = model.replicas_for(target)
            if needed is None:
                ceiling, _ = model.ceiling()
                typer.echo(
                    f"target {target:g}: never reached by more replicas (the fit tops out at {ceiling:,.4g})"
                )
            else:
                nodes = nodes_for(needed, replicas_per_node)
                typer.echo(
                    f"target {target:g}: {needed} replica(s), {nodes} node(s) at {replicas_per_node} per node"
                )
        typer.echo("")


def register(app: typer.Typer) -> None:
    app.command("capacity-plan")(capacity_plan_command)
