"""What a trace replay or a session workload sent, against what it was asked to send (`summary.json`'s
`replay`): the arrival rate offered (the schedule) and achieved (the sends) over time, the load
generator's lag per request, the input and output lengths sent against the trace's, and, for sessions,
TTFT by turn. Computed from the records by the runner; the report renders it (report/render.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from distinfer.results.base import Strict
from distinfer.results.metrics import Distribution, distribution, ttft_ms
from distinfer.results.records import RequestRecord

# A request sent later than this after its due time missed the schedule (the guard's open-loop limit).
LATE_MS = 50.0
BINS = 20


class RateBin(Strict):
    start_s: float = Field(description="Seconds after the load's start.")
    offered_per_s: float = Field(description="Requests due in the bin (the schedule), per second.")
    achieved_per_s: float = Field(description="Requests sent in the bin, per second.")


class Lengths(Strict):
    """Token counts of one kind (input or output), as three populations."""

    trace: Distribution = Field(description="As the trace has them (before scaling and caps).")
    asked: Distribution = Field(description="What the requests were made to (scaled, capped).")
    served: Distribution = Field(description="What the server counted (its usage), successful requests.")


class TurnTtft(Strict):
    turn: int
    ttft_ms: Distribution


class ReplayFigures(Strict):
    requests: int = Field(description="Requests due (dropped arrivals included).")
    rate_over_time: list[RateBin]
    send_lag_ms: Distribution = Field(description="Sent minus due, every request of the run.")
    late: int = Field(description=f"Requests sent more than {LATE_MS:g} ms after their due time.")
    dropped: int = Field(description="Arrivals not sent: the in-flight cap (`users`) was reached.")
    input_tokens: Lengths
    output_tokens: Lengths
    ttft_by_turn: list[TurnTtft] = Field(default_factory=list, description="Sessions: TTFT per turn number.")

    @property
    def schedule_kept(self) -> bool:
        """Nothing dropped, and sent minus due at P99 within LATE_MS (the saturation guard's limit)."""
        p99 = self.send_lag_ms.p99
        return self.dropped == 0 and (p99 is None or p99 <= LATE_MS)


def rate_over_time(records: Sequence[RequestRecord], start: float, duration_s: float) -> list[RateBin]:
    width = max(duration_s / BINS, 0.1)
    bins = max(1, math.ceil(duration_s / width))
    due, sent = [0] * bins, [0] * bins
    for record in records:
        index = int((record.scheduled - start) // width)
        if 0 <= index < bins:
            due[index] += 1
        index = int((record.sent - start) // width)
        if 0 <= index < bins and record.error_kind != "client_overflow":
            sent[index] += 1
    return [
        RateBin(start_s=i * width, offered_per_s=due[i] / width, achieved_per_s=sent[i] / width)
        for i in range(bins)
    ]


def replay_figures(
    records: Sequence[RequestRecord],
    start: float,
    duration_s: float,
    trace_lengths: Sequence[tuple[int, int]] | None = None,
) -> ReplayFigures:
    """`trace_lengths`: the window's (input, output) tokens as the trace has them, or None (sessions)."""
    dispatched = [r for r in records if r.error_kind != "client_overflow"]
    lags = [(r.sent - r.scheduled) * 1000.0 for r in dispatched]
    good = [r for r in records if r.ok]
    turns: dict[int, list[float]] = {}
    for record in good:
        value = ttft_ms(record)
        if record.turn is not None and value is not None:
            turns.setdefault(record.turn, []).append(value)
    pairs = list(trace_lengths or [])
    return ReplayFigures(
        requests=len(records),
        rate_over_time=rate_over_time(records, start, duration_s),
        send_lag_ms=distribution(lags),
        late=sum(1 for lag in lags if lag > LATE_MS),
        dropped=len(records) - len(dispatched),
        input_tokens=Lengths(
            trace=distribution([i for i, _ in pairs]),
            asked=distribution([r.input_tokens_asked for r in records if r.input_tokens_asked is not None]),
            served=distribution([r.prompt_tokens for r in good if r.prompt_tokens is not None]),
        ),
        output_tokens=Lengths(
            trace=distribution([o for _, o in pairs]),
            asked=distribution([r.max_tokens for r in records]),
            served=distribution([r.completion_tokens for r in good if r.completion_tokens is not None]),
        ),
        ttft_by_turn=[TurnTtft(turn=t, ttft_ms=distribution(v)) for t, v in sorted(turns.items())],
    )
