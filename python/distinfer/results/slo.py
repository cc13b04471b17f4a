"""Service-level objectives (SLOs): named limits on TTFT and TPOT at a percentile, and goodput.

An SLO is *met* by a scenario when, among the requests due in its steady window, the `percentile`-th
percentile of TTFT is within `ttft_ms` and that of TPOT within `tpot_ms` (and of end-to-end latency
within `e2el_ms` where set). Each percentile is taken over every request of the window, a failed or
cut-off request counting as beyond every limit (MLPerf Inference's server-scenario rule: a query
that never answered cannot be left out). Percentiles here are nearest-rank: the P99 is within a
limit exactly when at least 99 % of the requests are.

*Goodput* (DistServe) counts only the requests that met every limit at once: their number and their
output tokens per second of window, and their share of all requests due in it.

Presets carry the MLPerf Inference limits under the name of their source (P99 of both):
`mlperf-llama2-70b` 2000 / 200 ms, `mlperf-llama2-70b-interactive` 450 / 40 ms,
`mlperf-llama3.1-8b` 2000 / 100 ms, `mlperf-llama3.1-8b-interactive` 500 / 30 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, model_validator

from distinfer.results.base import Strict
from distinfer.results.records import RequestRecord

DEFAULT_PERCENTILE = 99.0


class Slo(Strict):
    """Limits a request must meet (milliseconds), judged at a percentile of all requests.

    In a scenarios file: a preset's name (`slo: mlperf-llama2-70b`), limits of your own
    (`slo: {name: chat, ttft_ms: 500, tpot_ms: 50}`) or a preset with changes
    (`slo: {preset: mlperf-llama2-70b, percentile: 95}`).
    """

    name: str | None = Field(None, description="What the report calls it.")
    ttft_ms: float | None = Field(None, gt=0, description="Time to first token, at most.")
    tpot_ms: float | None = Field(None, gt=0, description="Time per output token after the first, at most.")
    e2el_ms: float | None = Field(None, gt=0, description="End-to-end request latency, at most.")
    percentile: float = Field(
        DEFAULT_PERCENTILE, gt=0, le=100, description="Share of requests (%) that must be within each limit."
    )
    source: str | None = Field(None, description="Where the limits come from.")

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            return preset(data).model_dump()
        if isinstance(data, dict) and "preset" in data:
            fields = dict(data)
            base = preset(str(fields.pop("preset"))).model_dump()
            return {**base, **fields}
        return data

    @model_validator(mode="after")
    def _some_limit(self) -> Slo:
        if self.ttft_ms is None and self.tpot_ms is None and self.e2el_ms is None:
            raise ValueError(
                "an SLO needs at least one limit: ttft_ms, tpot_ms or e2el_ms (or a preset: "
                + ", ".join(PRESETS)
                + ")"
            )
        return self

    def limits(self) -> dict[str, float]:
        """The limits set, by latency name (ttft, tpot, e2el)."""
        named = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "e2el": self.e2el_ms}
        return {key: value for key, value in named.items() if value is not None}

    def missed(self, ok: bool, latencies: Mapping[str, float | None]) -> list[str]:
        """The limits one request missed (its latencies in ms by key: ttft, tpot, e2el)."""
        return [key for key, limit in self.limits().items() if judged(key, ok, latencies.get(key)) > limit]

    def label(self) -> str:
        """`name: TTFT <= 2000 ms, TPOT <= 200 ms at P99`."""
        parts = [f"{key.upper()} <= {value:g} ms" for key, value in self.limits().items()]
        text = f"{', '.join(parts)} at P{self.percentile:g}"
        return f"{self.name}: {text}" if self.name else text


def _mlperf(name: str, model: str, scenario: str, ttft: float, tpot: float) -> Slo:
    return Slo(
        name=name,
        ttft_ms=ttft,
        tpot_ms=tpot,
        e2el_ms=None,
        percentile=99.0,
        source=f"MLPerf Inference, {model}, {scenario} scenario: P99 TTFT {ttft:g} ms, P99 TPOT {tpot:g} ms",
    )


PRESETS: dict[str, Slo] = {
    slo.name: slo
    for slo in (
        _mlperf("mlperf-llama2-70b", "Llama-2-70B", "server", 2000, 200),
        _mlperf("mlperf-llama2-70b-interactive", "Llama-2-70B", "interactive", 450, 40),
        _mlperf("mlperf-llama3.1-8b", "Llama-3.1-8B", "server", 2000, 100),
        _mlperf("mlperf-llama3.1-8b-interactive", "Llama-3.1-8B", "interactive", 500, 30),
    )
    if slo.name
}


def preset(name: str) -> Slo:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown SLO preset {name!r}; choose one of {', '.join(PRESETS)} or give limits "
            "(ttft_ms, tpot_ms)"
        ) from None


def parse_slo(text: str) -> Slo:
    """`--slo`: a preset's name, limits `ttft=500,tpot=50[,e2el=20000]` in ms, `p=95`, or a mix
    (`mlperf-llama2-70b,p=95`)."""
    values: dict[str, Any] = {}
    keys = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2el": "e2el_ms", "p": "percentile", "name": "name"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep:
            values["preset"] = part
            continue
        if key.strip() not in keys:
            raise ValueError(
                f"--slo part {part!r} must be ttft=MS, tpot=MS, e2el=MS, p=PERCENTILE, name=NAME or a "
                f"preset ({', '.join(PRESETS)}), e.g. ttft=500,tpot=50"
            )
        if key.strip() == "name":
            values["name"] = raw.strip()
            continue
        try:
            values[keys[key.strip()]] = float(raw)
        except ValueError:
            raise ValueError(f"--slo value {raw!r} for {key} is not a number") from None
    return Slo.model_validate(values)


class SloResult(Strict):
    """How the requests due in the steady window fared against an SLO."""

    requests: int = Field(description="Requests due in the window, failed ones included.")
    met: int = Field(description="Of those, successful requests within every limit at once.")
    share_meeting: float | None = Field(description="met / requests.")
    within: dict[str, float] = Field(description="Per limit (ttft, tpot, e2el): share of requests within it.")
    at_percentile_ms: dict[str, float | None] = Field(
        description="Per limit: the SLO's percentile of that latency, failures counted as beyond any "
        "limit (None: the percentile falls on a failed request)."
    )
    passed: bool = Field(description="Every limit's percentile within its limit.")
    request_goodput: float = Field(description="Requests/s that met every limit.")
    output_goodput: float = Field(description="Output tokens/s of the requests that met every limit.")


def judged(key: str, ok: bool, value: float | None) -> float:
    """A request's latency as an SLO judges it: a failed or cut-off request is beyond every limit; a
    successful one-token answer has no TPOT, so it is within that limit; any other missing latency
    (no first token) is beyond."""
    if not ok:
        return math.inf
    if value is None:
        return 0.0 if key == "tpot" else math.inf
    return value


def nearest_rank(values: Sequence[float], percentile: float) -> float:
    """The smallest value with at least `percentile` % of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered)))
    return ordered[rank - 1]


def evaluate(
    slo: Slo, population: Sequence[RequestRecord], window_s: float, latencies: dict[str, list[float | None]]
) -> SloResult:
    """Judge the requests due in a window; `latencies[key][i]` is request i's latency in ms."""
    count = len(population)
    limits = slo.limits()
    values = {
        key: [judged(key, rec.ok, v) for rec, v in zip(population, latencies[key], strict=True)]
        for key in limits
    }
    within = {
        key: sum(1 for v in values[key] if v <= limit) / count if count else 0.0
        for key, limit in limits.items()
    }
    at: dict[str, float | None] = {}
    for key in limits:
        value = nearest_rank(values[key], slo.percentile) if count else math.inf
        at[key] = None if math.isinf(value) else value
    met = [
        rec for i, rec in enumerate(population) if all(values[k][i] <= limit for k, limit in limits.items())
    ]
    return SloResult(
        requests=count,
        met=len(met),
        share_meeting=len(met) / count if count else None,
        within=within,
        at_percentile_ms=at,
        passed=count > 0 and all(_within(at[key], limit) for key, limit in limits.items()),
        request_goodput=len(met) / window_s,
        output_goodput=sum(r.completion_tokens or 0 for r in met) / window_s,
    )


def _within(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit
