"""Where a scenario's time to first token goes: the client's records joined to the server's timing.

Each successful request of the steady window that carried server timing (results/records.py, ServerTiming)
has six moments on one time line: the client sent it, the ingress received it, a model replica
admitted it, the engine started it, the first token left the engine, the client read that token.
Five legs lie between them; per request they add up to its TTFT exactly.

The table's leg figure is the median time from the send to a leg's end minus the median time to its
start, so the legs share out the TTFT median and add up to it (to rounding). Each leg's own median is
given beside it: medians of independent legs do not add up to the median of their sum.

Clocks: the client's times are the load machine's, the ingress's its host's, the rest the replica's
host's (all Unix time). On the local platform these are one machine and one clock. Across machines
the hosts must be NTP-synchronised (the prereq role keeps systemd-timesyncd on); a residual offset
moves time between the first and the last leg (their sum is unchanged), `clock_offset_ms` estimates
it, and requests whose moments come out of order are counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distinfer.results.metrics import distribution, steady_population
from distinfer.results.records import RequestRecord
from distinfer.results.summary import LegKey, TtftLeg, TtftSplit

LEGS: tuple[tuple[LegKey, str], ...] = (
    ("send_to_ingress", "client send → ingress"),
    ("ingress_to_replica", "ingress → model replica (Serve routing and queue)"),
    ("engine_queue", "replica → engine start (prompt, engine queue)"),
    ("prefill", "engine start → first token (prefill)"),
    ("first_token_to_client", "first token → client read (stream back)"),
)


def moments_ms(record: RequestRecord) -> list[float] | None:
    """The six moments of one request in ms since its send; None without a full server timing."""
    server = record.server
    if server is None or server.first_token is None or record.first_token is None:
        return None
    points = [server.ingress, server.replica, server.engine_start, server.first_token, record.first_token]
    return [0.0, *((p - record.sent) * 1000.0 for p in points)]


def ttft_split(
    records: Sequence[RequestRecord], window_start: float, window_end: float, client_host: str
) -> TtftSplit | None:
    """The split over the steady window's successful requests with server timing (None if none had)."""
    good = [r for r in steady_population(records, window_start, window_end) if r.ok and r.first_token]
    rows = [m for m in (moments_ms(r) for r in good) if m is not None]
    if not rows:
        return None
    points = np.asarray(rows)
    legs_each = np.diff(points, axis=1)
    reached = np.percentile(points, 50, axis=0)  # the same interpolation as every other percentile
    legs = [
        TtftLeg(
            key=key,
            label=label,
            at_median_ms=float(reached[i + 1] - reached[i]),
            own_ms=distribution(legs_each[:, i]),
        )
        for i, (key, label) in enumerate(LEGS)
    ]
    hosts = {client_host}
    for record in good:
        if record.server is not None:
            hosts.update((record.server.ingress_host, record.server.replica_host))
    one_clock = len(hosts) == 1
    offset = None
    if not one_clock:
        offset = float(legs_each[:, 0].min() - legs_each[:, -1].min()) / 2.0
    return TtftSplit(
        requests=len(rows),
        without_timing=len(good) - len(rows),
        ttft_ms=distribution(points[:, -1]),
        legs=legs,
        out_of_order=int(np.any(legs_each < 0, axis=1).sum()),
        one_clock=one_clock,
        clock_offset_ms=offset,
    )
