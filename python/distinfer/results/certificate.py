"""`certificate.json`: how exact the load generator is, as measured by its self-test before a sweep
(the self-test itself: bench/fidelity.py).

The certificate states the load generator's TTFT and TPOT error against a server's own truth at the
run's highest planned event rate; within 5 % (TTFT P50) and 2 % (TPOT P50) of the truth, it certifies
the event rate the client really read. The report prints it, and flags every scenario whose measured
event rate exceeds it. `schema_version` 1 is the only layout so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from distinfer.results.base import ResultsFile, Strict
from distinfer.results.scenario import ScenarioSpec, target_events_per_s

CERTIFICATE_FILE = "certificate.json"
SCHEMA_VERSION = 1
TTFT_TOLERANCE = 0.05  # relative error of the TTFT P50
TPOT_TOLERANCE = 0.02  # relative error of the TPOT P50


class Fidelity(Strict):
    """A client's TTFT and TPOT (P50 and P99) beside the server's truth for the same requests."""

    requests: int = Field(description="Requests joined to the truth.")
    ttft_p50_ms: float | None
    truth_ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    truth_ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    truth_tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    truth_tpot_p99_ms: float | None

    def error(self, which: str, q: int = 50) -> float | None:
        """(client - truth) / truth of one percentile."""
        measured, truth = getattr(self, f"{which}_p{q}_ms"), getattr(self, f"truth_{which}_p{q}_ms")
        return None if measured is None or not truth else (measured - truth) / truth

    def within_tolerance(self) -> bool:
        ttft, tpot = self.error("ttft"), self.error("tpot")
        return (
            ttft is not None
            and tpot is not None
            and abs(ttft) <= TTFT_TOLERANCE
            and abs(tpot) <= TPOT_TOLERANCE
        )


class Certificate(ResultsFile):
    """RUN/certificate.json: the load generator's self-test at the run's highest planned event rate."""

    DEFAULT_FILE: ClassVar[str] = CERTIFICATE_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (SCHEMA_VERSION,)

    schema_version: int = SCHEMA_VERSION
    created: float
    target_events_per_s: float = Field(description="The run's highest planned streamed events/s.")
    users: int = Field(description="Closed-loop users of the self-test (each reading 100 tokens/s).")
    itl_ms: float
    ttft_ms: float
    max_tokens: int
    measured_events_per_s: float = Field(description="Streamed events/s the client read in the window.")
    fidelity: Fidelity
    valid: bool = Field(description="The saturation guard's verdict on the self-test.")
    invalid_reasons: list[str] = Field(default_factory=list)
    certified_events_per_s: float | None = Field(
        description="Up to this event rate the figures are within tolerance; None: not certified."
    )
    note: str

    def line(self) -> str:
        """One sentence: the rate tested, the errors measured, what is certified."""
        f = self.fidelity

        def err(which: str) -> str:
            value = f.error(which)
            truth = getattr(f, f"truth_{which}_p50_ms")
            measured = getattr(f, f"{which}_p50_ms")
            if value is None or truth is None or measured is None:
                return "-"
            return f"{value:+.2%} ({measured - truth:+.2f} ms)"

        certified = (
            f"certified up to {self.certified_events_per_s:,.0f} events/s"
            if self.certified_events_per_s is not None
            else "nothing certified"
        )
        return (
            f"Load-generator fidelity: self-test at {self.measured_events_per_s:,.0f} streamed events/s "
            f"(planned {self.target_events_per_s:,.0f}: {self.users} users x {1000 / self.itl_ms:.0f} "
            f"tokens/s, synthetic server, {f.requests} requests): TTFT P50 error {err('ttft')}, "
            f"TPOT P50 error {err('tpot')}; {self.note}; {certified}."
        )


def planned_events_per_s(specs: Sequence[ScenarioSpec]) -> float:
    """The highest event rate the scenarios plan to make the client read (capacity searches aside)."""
    loads = [target_events_per_s(s) for s in specs if s.capacity is None]
    return max(loads, default=0.0)


def event_rate(output_throughput: float | None, request_throughput: float | None) -> float:
    """Streamed events/s a scenario's client read: one per output token, plus the first (role) and
    last (usage) events of each request."""
    return (output_throughput or 0.0) + 2.0 * (request_throughput or 0.0)


def certificate_note(fidelity: Fidelity, valid: bool, certified: float | None) -> str:
    limits = f"{TTFT_TOLERANCE:.0%} (TTFT P50) and {TPOT_TOLERANCE:.0%} (TPOT P50) of the truth"
    verdict = f"within {limits}" if certified is not None else f"not within {limits}"
    return verdict if valid else f"{verdict} (the saturation guard marked the self-test INVALID)"


def certificate_covers(run_dir: Path, target_events_per_s: float) -> bool:
    """A certificate already in the run, measured at this planned rate or above (a resumed run)."""
    found = Certificate.load_file(run_dir)
    return found is not None and found.target_events_per_s >= target_events_per_s
