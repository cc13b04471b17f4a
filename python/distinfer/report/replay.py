"""The report's section on trace replays and multi-turn sessions (summary.json's `replay`): was the
schedule kept (offered against achieved arrivals over time, the load generator's lag per request), were
the lengths sent the trace's, the goodput under the scenario's SLO, vLLM's prefix-cache hit rate where
Prometheus has it, and TTFT by turn for sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

from distinfer.report.blocks import Block, Column, Heading, Paragraph, table
from distinfer.report.blocks import cell as _f
from distinfer.report.prometheus import ServerFigures
from distinfer.report.tables import ordered
from distinfer.results.load import Run, Scenario
from distinfer.results.metrics import Distribution
from distinfer.results.replay import LATE_MS, RateBin, ReplayFigures, TurnTtft


@dataclass(frozen=True)
class LengthRow:
    what: str
    tokens: Distribution


def _dist_columns(first: str) -> list[Column[LengthRow]]:
    return [
        Column(first, lambda r: r.what),
        Column("Requests", lambda r: r.tokens.count),
        Column("Mean", lambda r: _f(r.tokens.mean, 0)),
        Column("P50", lambda r: _f(r.tokens.p50, 0)),
        Column("P90", lambda r: _f(r.tokens.p90, 0)),
        Column("P99", lambda r: _f(r.tokens.p99, 0)),
        Column("Max", lambda r: _f(r.tokens.max, 0)),
    ]


RATE_COLUMNS: list[Column[RateBin]] = [
    Column("From (s)", lambda b: _f(b.start_s, 1)),
    Column("Offered (req/s)", lambda b: _f(b.offered_per_s, 1)),
    Column("Achieved (req/s)", lambda b: _f(b.achieved_per_s, 1)),
]
TURN_COLUMNS: list[Column[TurnTtft]] = [
    Column("Turn", lambda t: t.turn),
    Column("Requests", lambda t: t.ttft_ms.count),
    Column("TTFT P50 (ms)", lambda t: _f(t.ttft_ms.p50, 1)),
    Column("TTFT P90 (ms)", lambda t: _f(t.ttft_ms.p90, 1)),
    Column("TTFT P99 (ms)", lambda t: _f(t.ttft_ms.p99, 1)),
]


def _source(s: Scenario) -> str:
    spec = s.spec
    if spec is not None and spec.trace is not None:
        t = spec.trace
        return (
            f"trace `{t.file}`, trace seconds {t.start_s:g}-{t.start_s + spec.duration_s * t.time_scale:g} "
            f"sent in {spec.duration_s:g} s (time x{t.time_scale:g}), lengths x{t.length_scale:g}"
            + (f", input capped at {t.max_input_tokens}" if t.max_input_tokens else "")
            + (f", output at {t.max_output_tokens}" if t.max_output_tokens else "")
            + f", tokens counted by `{t.tokenizer}`"
        )
    return "multi-turn sessions (each turn sends the whole history)"


def _goodput(s: Scenario) -> str:
    metrics = s.summary.metrics if s.summary else None
    if metrics is None or metrics.slo is None or metrics.slo_result is None:
        return "no SLO set (add `slo:`)"
    verdict = metrics.slo_result
    share = "-" if verdict.share_meeting is None else f"{100 * verdict.share_meeting:.1f} %"
    return (
        f"{_f(metrics.request_goodput, 2)} req/s and {_f(metrics.output_goodput, 1)} output tokens/s within "
        f"SLO {metrics.slo.label()}; {share} of the window's requests met it"
    )


def _prefix_cache(figures: ServerFigures | None) -> str:
    if figures is None or figures.prefix_cache_hit_percent is None:
        return "not measured (no Prometheus with vLLM's prefix-cache counters for this window)"
    return f"{figures.prefix_cache_hit_percent:.1f} % of prompt tokens looked up were cached (vLLM)"


def _one(s: Scenario, replay: ReplayFigures, figures: ServerFigures | None) -> list[Block]:
    lag = replay.send_lag_ms
    kept = "kept" if replay.schedule_kept else f"**not kept** (P99 beyond {LATE_MS:g} ms, or drops)"
    blocks: list[Block] = [
        Heading(s.name, 3),
        Paragraph(
            f"{_source(s)}: {replay.requests} requests due. Schedule {kept}: sent minus due P50 "
            f"{_f(lag.p50, 1)} ms, P99 {_f(lag.p99, 1)} ms, max {_f(lag.max, 1)} ms; {replay.late} sent more "
            f"than {LATE_MS:g} ms late, {replay.dropped} dropped at the in-flight cap.\n"
            f"Goodput: {_goodput(s)}. Prefix cache: {_prefix_cache(figures)}."
        ),
        table(RATE_COLUMNS, replay.rate_over_time),
    ]
    sessions = s.spec is not None and s.spec.sessions is not None
    asked = "asked (the turn's new tokens)" if sessions else "asked (scaled, capped)"
    served = "served (the whole history)" if sessions else "served (the server's count)"
    rows = [
        LengthRow(f"input, {label}", dist)
        for label, dist in (("trace", replay.input_tokens.trace), (asked, replay.input_tokens.asked),
                            (served, replay.input_tokens.served))
        if dist.count
    ] + [
        LengthRow(f"output, {label}", dist)
        for label, dist in (("trace", replay.output_tokens.trace),
                            ("asked (max_tokens)", replay.output_tokens.asked),
                            ("served", replay.output_tokens.served))
        if dist.count
    ]  # fmt: skip
    blocks.append(table(_dist_columns("Tokens"), rows))
    if replay.ttft_by_turn:
        blocks += [Paragraph("Time to first token by turn:"), table(TURN_COLUMNS, replay.ttft_by_turn)]
    return blocks


def replay_section(run: Run, figures: dict[str, ServerFigures]) -> list[Block]:
    """Nothing when no scenario replayed a trace or ran sessions."""
    replays = [(s, s.summary.replay) for s in ordered(run) if s.summary is not None and s.summary.replay]
    if not replays:
        return []
    blocks: list[Block] = [
        Heading("Trace replays and sessions: the schedule, the lengths, the goodput"),
        Paragraph(
            "Each request was due at its trace row's time (time-scaled) or its session's turn; *offered* "
            "counts the requests due per second of the run, *achieved* those sent. Lengths: as the trace "
            "has them, as the requests asked (after scaling and caps), and as the server counted them."
        ),
    ]
    for s, replay in replays:
        assert replay is not None
        blocks += _one(s, replay, figures.get(s.name))
    return blocks
