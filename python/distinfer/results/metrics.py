"""A scenario's figures, computed offline from its raw records over the steady window.

The steady window is [load start + warm-up, load end): requests scheduled before it ran while
users were still ramping, and requests still running after it ran while load was draining.

- Latency populations (e2e, TTFT, TPOT, inter-chunk gaps, errors) are the requests *scheduled*
  inside the window, each followed to its end even if that falls in the drain, so slow requests
  are not cut off (a survivorship bias that would flatter P99).
- Throughputs count what happened *inside* the window: completions whose end falls in it, and
  output tokens spread evenly between a request's first and last token and clipped to it.
- Percentiles are exact, from every sample (numpy linear interpolation), never from a histogram.
- With an SLO (results/slo.py), the same population is judged against it: goodput and the share meeting it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import Field

from distinfer.results.base import Strict
from distinfer.results.records import RequestRecord
from distinfer.results.slo import Slo, SloResult, evaluate


class Distribution(Strict):
    """Exact summary of one latency population, in milliseconds."""

    count: int
    mean: float | None
    std: float | None
    min: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None


def distribution(values_ms: Sequence[float] | np.ndarray) -> Distribution:
    data = np.asarray(values_ms, dtype=float)
    if data.size == 0:
        return Distribution(
            count=0, mean=None, std=None, min=None, p50=None, p90=None, p95=None, p99=None, max=None
        )
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, [50, 90, 95, 99]))
    return Distribution(
        count=int(data.size),
        mean=float(data.mean()),
        std=float(data.std()),
        min=float(data.min()),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(data.max()),
    )


class Metrics(Strict):
    """Everything a scenario measured. Throughputs per second of steady window; latencies in ms."""

    window_start: float
    window_end: float
    window_s: float
    requests_scheduled: int = Field(description="Requests due inside the window (the latency population).")
    completed: int = Field(description="Of those, requests that succeeded.")
    failed: int
    errors_by_kind: dict[str, int]
    completions_in_window: int = Field(description="Successful requests whose end fell inside the window.")
    request_throughput: float
    output_throughput: float = Field(description="Output tokens/s inside the window.")
    total_token_throughput: float = Field(description="Prompt + output tokens/s inside the window.")
    total_input_tokens: int = Field(description="Prompt tokens of the completed population.")
    total_output_tokens: int = Field(description="Completion tokens of the completed population.")
    achieved_concurrency: float = Field(description="Mean requests in flight over the window.")
    achieved_send_rate: float = Field(description="Requests sent per second inside the window.")
    e2el_ms: Distribution
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution = Field(description="Gaps between consecutive text chunks as they arrived.")
    send_lag_ms: Distribution = Field(description="Sent minus scheduled: the client's own lateness.")
    guide_p95_token_latency_ms: float | None = Field(
        description="The guide's derived figure: P95 e2e latency / max_tokens (not a measured token latency)."
    )
    slo: Slo | None = None
    slo_result: SloResult | None = Field(None, description="The window's requests judged against `slo`.")
    request_goodput: float | None = Field(None, description="Requests/s that met every limit of the SLO.")
    output_goodput: float | None = Field(None, description="Output tokens/s of those requests.")


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _tokens_in_window(rec: RequestRecord, w0: float, w1: float) -> float:
    """Output tokens of one request that arrived inside the window, spread evenly first..last."""
    n = rec.completion_tokens or 0
    if not rec.ok or n == 0 or rec.first_token is None:
        return 0.0
    last = rec.last_token if rec.last_token is not None else rec.first_token
    first_in = 1.0 if w0 <= rec.first_token < w1 else 0.0
    if n == 1 or last <= rec.first_token:
        return first_in + (n - 1) * (1.0 if w0 <= last < w1 else 0.0)
    return first_in + (n - 1) * _overlap(rec.first_token, last, w0, w1) / (last - rec.first_token)


def tpot_ms(rec: RequestRecord) -> float | None:
    """(last token - first token) / (completion tokens - 1): mean time per output token after the first."""
    n = rec.completion_tokens or 0
    if rec.first_token is None or rec.last_token is None or n < 2:
        return None
    return (rec.last_token - rec.first_token) * 1000.0 / (n - 1)


def ttft_ms(rec: RequestRecord) -> float | None:
    """Time to first token: first text chunk - sent."""
    return None if rec.first_token is None else (rec.first_token - rec.sent) * 1000.0


def steady_population(records: Iterable[RequestRecord], w0: float, w1: float) -> list[RequestRecord]:
    """The latency population: requests scheduled inside the window [w0, w1), followed to their end."""
    return [r for r in records if w0 <= r.scheduled < w1]


def compute_metrics(
    records: Sequence[RequestRecord],
    window_start: float,
    window_end: float,
    max_tokens: int,
    slo: Slo | None = None,
) -> Metrics:
    if window_end <= window_start:
        raise ValueError(f"steady window is empty: start {window_start} >= end {window_end}")
    w0, w1 = window_start, window_end
    span = w1 - w0
    population = steady_population(records, w0, w1)
    good = [r for r in population if r.ok]
    e2el = [(r.end - r.sent) * 1000.0 for r in good]
    ttft = [t for t in (ttft_ms(r) for r in good) if t is not None]
    tpots = [t for t in (tpot_ms(r) for r in good) if t is not None]
    gaps = [g for r in good for g in r.gaps_ms]
    sent = [r for r in records if r.error_kind != "client_overflow"]
    ended_inside = [r for r in records if r.ok and w0 <= r.end < w1]
    out_tokens = sum(_tokens_in_window(r, w0, w1) for r in records)
    # Prompt tokens count when their prefill ended, i.e. at the first token.
    in_tokens = sum(
        r.prompt_tokens or 0 for r in records if r.ok and r.first_token and w0 <= r.first_token < w1
    )
    e2el_dist = distribution(e2el)
    verdict = judge_slo(slo, population, span) if slo is not None else None
    return Metrics(
        window_start=w0,
        window_end=w1,
        window_s=span,
        requests_scheduled=len(population),
        completed=len(good),
        failed=len(population) - len(good),
        errors_by_kind=dict(Counter(r.error_kind or "unknown" for r in population if not r.ok)),
        completions_in_window=len(ended_inside),
        request_throughput=len(ended_inside) / span,
        output_throughput=out_tokens / span,
        total_token_throughput=(out_tokens + in_tokens) / span,
        total_input_tokens=sum(r.prompt_tokens or 0 for r in good),
        total_output_tokens=sum(r.completion_tokens or 0 for r in good),
        achieved_concurrency=sum(_overlap(r.sent, r.end, w0, w1) for r in sent) / span,
        achieved_send_rate=sum(1 for r in sent if w0 <= r.sent < w1) / span,
        e2el_ms=e2el_dist,
        ttft_ms=distribution(ttft),
        tpot_ms=distribution(tpots),
        itl_ms=distribution(gaps),
        send_lag_ms=distribution(
            [(r.sent - r.scheduled) * 1000.0 for r in population if r.error_kind != "client_overflow"]
        ),
        guide_p95_token_latency_ms=None if e2el_dist.p95 is None else e2el_dist.p95 / max_tokens,
        slo=slo,
        slo_result=verdict,
        request_goodput=None if verdict is None else verdict.request_goodput,
        output_goodput=None if verdict is None else verdict.output_goodput,
    )


def request_latencies(rec: RequestRecord) -> dict[str, float | None]:
    """What an SLO limits, for one request (ms): ttft, tpot, e2el."""
    return {"ttft": ttft_ms(rec), "tpot": tpot_ms(rec), "e2el": (rec.end - rec.sent) * 1000.0}


def judge_slo(slo: Slo, population: Sequence[RequestRecord], window_s: float) -> SloResult:
    """The SLO's verdict on a window's latency population (failed requests included)."""
    each = [request_latencies(r) for r in population]
    latencies = {key: [lat[key] for lat in each] for key in ("ttft", "tpot", "e2el")}
    return evaluate(slo, population, window_s, latencies)
