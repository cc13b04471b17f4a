"""The saturation guard: is the load generator itself the bottleneck? Then the run is invalid.

A client that falls behind reports the server slower than it is (late reads inflate TTFT and
gaps) and sends less load than asked for. Each check names what was seen and the limit.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from distinfer.results.base import Strict
from distinfer.results.metrics import Metrics

WORKER_CPU_LIMIT = 90.0  # % of one core, mean over the steady window, per worker process
LOOP_LAG_P99_LIMIT_MS = 20.0  # a gevent loop this late delays every timestamp it takes
CONCURRENCY_SHORT = 0.95  # closed loop: achieved in-flight / users
RATE_SHORT = 0.95  # open loop: achieved send rate / asked
SEND_LAG_P99_LIMIT_MS = 50.0  # open loop: sent - scheduled


class ClientLoad(Strict):
    """How hard the load generator worked, sampled over the steady window."""

    workers: int
    worker_cpu_percent_mean: list[float] = Field(description="Per worker, % of one core.")
    worker_cpu_percent_max: list[float]
    machine_cpu_percent_mean: float | None = Field(
        description="All cores, everyone's processes: context only. A busy machine matters when it makes"
        " the load generator late, which the event-loop lag measures directly."
    )
    loop_lag_ms_p50: float | None
    loop_lag_ms_p99: float | None
    loop_lag_ms_max: float | None
    workers_reporting: int = Field(description="Workers whose event-loop statistics came back.")


def lag_summary(lags_ms: list[float]) -> tuple[float | None, float | None, float | None]:
    if not lags_ms:
        return None, None, None
    p50, p99 = np.percentile(np.asarray(lags_ms), [50, 99])
    return float(p50), float(p99), float(max(lags_ms))


def check(
    metrics: Metrics, client: ClientLoad, users: float, rate: float | None, own_clock: bool = False
) -> list[str]:
    """Reasons the run cannot be trusted; empty when it can. `users`: the closed loop's (closed-loop
    steps: their mean over the window); `rate`: the open loop's asked rate; `own_clock`: requests due on
    a schedule of their own (a trace, sessions, rate steps) without one rate."""
    return nothing_measured(metrics) + check_client(client) + shortfall(metrics, users, rate, own_clock)


def shortfall(metrics: Metrics, users: float, rate: float | None, own_clock: bool = False) -> list[str]:
    """Less load offered than asked (closed loop: concurrency; open loop: the send rate and its lag)."""
    reasons: list[str] = []
    if rate is None and not own_clock:
        if metrics.achieved_concurrency < CONCURRENCY_SHORT * users:
            reasons.append(
                f"achieved concurrency {metrics.achieved_concurrency:.1f} is short of the {users:g} users "
                f"(below {CONCURRENCY_SHORT:.0%})"
            )
    else:
        if rate is not None and metrics.achieved_send_rate < RATE_SHORT * rate:
            reasons.append(
                f"sent {metrics.achieved_send_rate:.2f} req/s of the {rate:g} asked (below {RATE_SHORT:.0%})"
            )
        lag = metrics.send_lag_ms.p99
        if lag is not None and lag > SEND_LAG_P99_LIMIT_MS:
            reasons.append(
                f"requests left {lag:.0f} ms after their arrival time at P99 "
                f"(limit {SEND_LAG_P99_LIMIT_MS:.0f} ms)"
            )
        overflow = metrics.errors_by_kind.get("client_overflow", 0)
        if overflow:
            reasons.append(f"{overflow} arrivals were dropped: more than {users} requests were in flight")
    return reasons


def nothing_measured(metrics: Metrics) -> list[str]:
    if metrics.completed:
        return []
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(metrics.errors_by_kind.items()))
    return [
        f"no request succeeded in the steady window ({metrics.failed} failed"
        f"{'; ' + kinds if kinds else ''}): nothing was measured"
    ]


def check_client(client: ClientLoad) -> list[str]:
    """The load machine's own verdict: its workers' CPU, their reports, its event loops' lag."""
    reasons: list[str] = []
    for index, cpu in enumerate(client.worker_cpu_percent_mean):
        if cpu > WORKER_CPU_LIMIT:
            reasons.append(f"load worker {index} used {cpu:.0f}% of a core (limit {WORKER_CPU_LIMIT:.0f}%)")
    if client.workers_reporting < client.workers:
        reasons.append(
            f"only {client.workers_reporting} of {client.workers} load workers reported their stats"
        )
    if client.loop_lag_ms_p99 is not None and client.loop_lag_ms_p99 > LOOP_LAG_P99_LIMIT_MS:
        reasons.append(
            f"event-loop lag P99 {client.loop_lag_ms_p99:.1f} ms (limit {LOOP_LAG_P99_LIMIT_MS:.0f} ms): "
            "timestamps were taken late"
        )
    return reasons
