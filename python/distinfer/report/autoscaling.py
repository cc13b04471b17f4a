"""The report's section on autoscaling scenarios (summary.json's `autoscaling`, results/autoscaling.py):
how fast the replicas followed each load increase, the seconds the SLO was violated meanwhile, and the
replica-seconds used against a static deployment of the smallest size that met the SLO at the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from distinfer.report.blocks import Block, Bullets, Column, Heading, Paragraph, table
from distinfer.report.blocks import cell as _f
from distinfer.report.tables import ordered
from distinfer.results.autoscaling import AutoscalingFigures, ScaleUp, cost_saved
from distinfer.results.load import Run, Scenario


def static_size(run: Run, s: Scenario) -> tuple[int | None, str]:
    """The smallest static replica count that met the SLO at the peak, and where it comes from: the
    scenario's `peak_static_replicas`, its `peak_static_scenario`'s replicas, else the fewest replicas of
    a finished static scenario of the run, same model, that met its SLO."""
    spec = s.spec
    if spec is None:
        return None, ""
    if spec.peak_static_replicas is not None:
        return spec.peak_static_replicas, "given"
    if spec.peak_static_scenario is not None:
        named = next((o for o in run.scenarios if o.name == spec.peak_static_scenario), None)
        if named is None or named.replicas is None:
            return None, f"{spec.peak_static_scenario} (not in this run)"
        return named.replicas, named.name
    passed = [
        o
        for o in run.scenarios
        if o.spec is not None
        and o.spec.autoscaling is None
        and o.spec.model == spec.model
        and o.replicas is not None
        and o.summary is not None
        and o.summary.metrics.slo_result is not None
        and o.summary.metrics.slo_result.passed
    ]
    if not passed:
        return None, "no static scenario of the run met its SLO"
    best = min(passed, key=lambda o: (o.replicas or 0, o.name))
    return best.replicas, best.name


@dataclass(frozen=True)
class ScalingRow:
    scenario: str
    a: AutoscalingFigures
    static: int | None
    static_from: str
    attainment: float | None
    passed: bool | None

    @property
    def static_replica_seconds(self) -> float | None:
        return None if self.static is None else self.static * self.a.load_s

    @property
    def saved(self) -> float | None:
        if self.static is None or self.a.replica_seconds is None:
            return None
        return cost_saved(self.a.replica_seconds, self.static, self.a.load_s)


def _bounds(a: AutoscalingFigures) -> str:
    return f"{_f(a.min_replicas)}-{_f(a.max_replicas)}"


def _seen(a: AutoscalingFigures) -> str:
    inside = "" if a.within_bounds is not False else " (outside the bounds)"
    return f"{_f(a.lowest_running)}-{_f(a.highest_running)}{inside}"


def _serving(a: AutoscalingFigures) -> str:
    times = [u.serving_s for u in a.scale_ups]
    return ", ".join("never" if t is None else _f(t, 1) for t in times) or "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


SCALING_COLUMNS: list[Column[ScalingRow]] = [
    Column("Scenario", lambda r: r.scenario),
    Column("Replicas min-max", lambda r: _bounds(r.a)),
    Column("Running, lowest-highest", lambda r: _seen(r.a)),
    Column("Scale-up to serving (s)", lambda r: _serving(r.a)),
    Column("SLO violated while scaling (s)", lambda r: _f(r.a.slo_violated_scaling_s)),
    Column("SLO violated, whole load (s)", lambda r: _f(r.a.slo_violated_s)),
    Column("Replica-seconds", lambda r: _f(r.a.replica_seconds, 1)),
    Column("Static peak size", lambda r: _f(r.static)),
    Column("Its replica-seconds", lambda r: _f(r.static_replica_seconds, 1)),
    Column("Cost saved", lambda r: _pct(r.saved)),
    Column(
        "SLO attainment",
        lambda r: _pct(r.attainment) + ("" if r.passed is None else (" met" if r.passed else " missed")),
    ),
]


def _step_line(u: ScaleUp) -> str:
    need = f", {u.need} asked" if u.need is not None else ""
    decided = "no target recorded" if u.decided_s is None else f"target rose after {_f(u.decided_s, 1)} s"
    serving = "not serving by the end" if u.serving_s is None else f"serving after {_f(u.serving_s, 1)} s"
    violated = "" if u.slo_violated_s is None else f"; SLO violated in {u.slo_violated_s} s meanwhile"
    return (
        f"at {_f(u.at_s, 1)} s, {_f(u.from_level, 1)} -> {_f(u.to_level, 1)}: {u.replicas_before} replica(s) "
        f"running{need}; {decided}, {serving}{violated}"
    )


def scaling_rows(run: Run) -> list[ScalingRow]:
    rows = []
    for s in ordered(run):
        a = s.summary.autoscaling if s.summary else None
        if a is None or s.summary is None:
            continue
        size, source = static_size(run, s)
        verdict = s.summary.metrics.slo_result
        rows.append(
            ScalingRow(
                scenario=s.name,
                a=a,
                static=size,
                static_from=source,
                attainment=None if verdict is None else verdict.share_meeting,
                passed=None if verdict is None else verdict.passed,
            )
        )
    return rows


def autoscaling_section(run: Run) -> list[Block]:
    """Per autoscaling scenario: its scale-ups, SLO violations and cost against the static peak size."""
    rows = scaling_rows(run)
    if not rows:
        return []
    bullets = []
    for r in rows:
        source = f"static size from {r.static_from}" if r.static_from else "no static size"
        lines = "; ".join(_step_line(u) for u in r.a.scale_ups) or "no load increase"
        bullets.append(f"**{r.scenario}** ({r.a.samples} samples from {r.a.source}, {source}): {lines}")
    return [
        Heading("Autoscaling (seconds after each change of the load)"),
        Paragraph(
            "Replicas sampled each second while the load ran (docs/autoscaling.md). *Scale-up to serving*: "
            "from a load increase to the first sample with the replicas it asks for RUNNING; *SLO violated*: "
            "whole seconds in which a request failed or missed the SLO; *cost saved*: one minus the "
            "replica-seconds used over those of the static peak size for the same time."
        ),
        table(SCALING_COLUMNS, rows),
        Bullets(bullets),
    ]
