"""How exact the load generator is: its TTFT and TPOT against a server's own truth, and the
fidelity certificate every report carries.

The yardstick is the synthetic engine behind `distinfer serve --bare` (the lightest server the
project has): with `truth_log` set it records, per request, when its model server received it and
when the engine emitted its first and last token (engines/synthetic.py). The truth's TTFT counts
from the model server's receipt (as vLLM counts from its API server's), its TPOT is (last - first
token) / (tokens - 1); the client's figures are joined to it by request id (`X-Request-Id`) over
the requests the client's own percentiles come from (successful, due in the steady window).
benchmarks/loadgen_fidelity.py measures this at many points and against GuideLLM; the certificate
runs one short point.

**The certificate.** Before a sweep (`distinfer bench sweep`, the benchmark role; opt out with
`--no-certify` / `loadtest_certify: false`), a self-test on the same load machine at the sweep's
highest planned event rate: streamed events/s = users x tokens/s per user, planned as the runner
sizes its workers (bench/runner.py: 100 tokens/s per closed-loop user, rate x (max_tokens + 2) open
loop), reproduced with that many closed-loop users reading 100 tokens/s each (itl 10 ms). The
result, `RUN/certificate.json`, states the TTFT and TPOT error measured at that rate; within 5 %
(TTFT P50) and 2 % (TPOT P50) of the truth, it certifies the event rate the client really read (the
saturation guard's verdict on the self-test is stated beside it). The report prints it, and flags
every scenario whose measured event rate exceeds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from distinfer.bench.metrics import tpot_ms, ttft_ms
from distinfer.bench.records import RECORDS_FILE, RequestRecord, load_records
from distinfer.bench.runner import run_scenario, target_events_per_s
from distinfer.bench.scenario import ScenarioSpec, write_json_atomic
from distinfer.results import Summary

log = logging.getLogger(__name__)

CERTIFICATE_FILE = "certificate.json"
SELFTEST_DIR = "certificate"
TTFT_TOLERANCE = 0.05  # relative error of the TTFT P50
TPOT_TOLERANCE = 0.02  # relative error of the TPOT P50
SELFTEST_TTFT_MS = 50.0
SELFTEST_ITL_MS = 10.0  # 100 tokens/s per user: the runner's planning figure for a closed-loop user
SELFTEST_TOKENS = 64
SELFTEST_STEADY_S = 6.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- the truth and the join ------------------------------------------------------------------------


def read_truth(path: Path, start_line: int = 0) -> list[dict[str, Any]]:
    """The synthetic engine's truth log from `start_line` on (one JSON object per finished request)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()[start_line:]
    return [json.loads(line) for line in lines if line.strip()]


def received(truth: dict[str, Any]) -> float:
    return float(truth.get("received_unix") or truth["arrival_unix"])


def truth_ttft_ms(truth: dict[str, Any]) -> float | None:
    first = truth.get("first_token_unix")
    return None if not first else (first - received(truth)) * 1000.0


def truth_tpot_ms(truth: dict[str, Any]) -> float | None:
    first, last, n = (
        truth.get("first_token_unix"),
        truth.get("last_token_unix"),
        truth.get("completion_tokens", 0),
    )
    return None if not first or not last or n < 2 else (last - first) * 1000.0 / (n - 1)


def percentile(values: Sequence[float | None], q: float) -> float | None:
    data = [v for v in values if v is not None]
    return float(np.percentile(data, q)) if data else None


def steady_successes(folder: Path, summary: Summary) -> list[RequestRecord]:
    """The requests a summary's latency percentiles come from: successful, due in the window."""
    w0, w1 = summary.metrics.window_start, summary.metrics.window_end
    return [r for r in load_records(folder / RECORDS_FILE) if r.ok and w0 <= r.scheduled < w1]


class Fidelity(_Strict):
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


def compare_to_truth(records: Sequence[RequestRecord], truth: Sequence[dict[str, Any]]) -> Fidelity:
    """Join by request id and take both sides' percentiles over the same requests."""
    by_id = {t["request_id"]: t for t in truth}
    pairs = [(r, by_id[r.request_id]) for r in records if r.request_id in by_id]
    client_ttft = [ttft_ms(r) for r, _ in pairs]
    client_tpot = [tpot_ms(r) for r, _ in pairs]
    server_ttft = [truth_ttft_ms(t) for _, t in pairs]
    server_tpot = [truth_tpot_ms(t) for _, t in pairs]
    return Fidelity(
        requests=len(pairs),
        ttft_p50_ms=percentile(client_ttft, 50),
        truth_ttft_p50_ms=percentile(server_ttft, 50),
        ttft_p99_ms=percentile(client_ttft, 99),
        truth_ttft_p99_ms=percentile(server_ttft, 99),
        tpot_p50_ms=percentile(client_tpot, 50),
        truth_tpot_p50_ms=percentile(server_tpot, 50),
        tpot_p99_ms=percentile(client_tpot, 99),
        truth_tpot_p99_ms=percentile(server_tpot, 99),
    )


@contextlib.contextmanager
def truth_server(
    workdir: Path, ttft_ms: float, itl_ms: float, in_flight: int
) -> Iterator[tuple[str, Path, int]]:
    """`distinfer serve --bare` with the synthetic engine and a truth log; yields (url, truth log, pid).
    Admission never limits it: twice `in_flight` slots and as many queue places."""
    from distinfer.serve.launch import free_port, served

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    truth = workdir / "truth.jsonl"
    models = workdir / "models.yaml"
    cap = max(2 * in_flight, 64)
    entry = {
        "name": "synthetic", "engine": "synthetic", "ttft_ms": ttft_ms, "itl_ms": itl_ms,
        "max_ongoing_requests": cap, "max_queued_requests": cap, "truth_log": str(truth),
    }  # fmt: skip
    models.write_text(yaml.safe_dump({"models": [entry], "http": {"host": "127.0.0.1", "port": port}}))
    with served(models, port, workdir / "server.log", bare=True, timeout_s=60) as proc:
        yield f"http://127.0.0.1:{port}", truth, proc.pid


# ---- the certificate -------------------------------------------------------------------------------


class Certificate(_Strict):
    """RUN/certificate.json: the load generator's self-test at the run's highest planned event rate."""

    schema_version: int = 1
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


def certify(run_dir: Path, target_events_per_s: float) -> Certificate:
    """Run the self-test into RUN/certificate/ and write RUN/certificate.json."""
    per_user = 1000.0 / SELFTEST_ITL_MS
    users = max(1, math.ceil(target_events_per_s / per_user))
    one_request_s = (SELFTEST_TTFT_MS + (SELFTEST_TOKENS - 1) * SELFTEST_ITL_MS) / 1000.0
    warmup = max(2.0, round(one_request_s, 1))
    work = run_dir / SELFTEST_DIR
    folder = work / "selftest"
    log.info(
        "fidelity self-test: %d users x %.0f tokens/s = %.0f events/s", users, per_user, users * per_user
    )
    with truth_server(work, SELFTEST_TTFT_MS, SELFTEST_ITL_MS, users) as (url, truth_log, _pid):
        spec = ScenarioSpec.model_validate(
            {
                "name": "fidelity-selftest", "model": "synthetic", "url": url, "users": users,
                "duration_s": warmup + SELFTEST_STEADY_S, "warmup_s": warmup, "max_tokens": SELFTEST_TOKENS,
                "api": "completions", "drain_timeout_s": 30,
            }
        )  # fmt: skip
        summary = run_scenario(spec, folder)
        time.sleep(0.5)  # the last truth lines are written as each stream closes
        truth = read_truth(truth_log)
    fidelity = compare_to_truth(steady_successes(folder, summary), truth)
    measured = event_rate(summary.metrics.output_throughput, summary.metrics.request_throughput)
    # The error measured against the truth is the evidence; the guard's verdict is told beside it.
    certified = measured if fidelity.within_tolerance() else None
    certificate = Certificate(
        created=time.time(),
        target_events_per_s=target_events_per_s,
        users=users,
        itl_ms=SELFTEST_ITL_MS,
        ttft_ms=SELFTEST_TTFT_MS,
        max_tokens=SELFTEST_TOKENS,
        measured_events_per_s=measured,
        fidelity=fidelity,
        valid=summary.valid,
        invalid_reasons=list(summary.invalid_reasons),
        certified_events_per_s=certified,
        note=certificate_note(fidelity, summary.valid, certified),
    )
    write_json_atomic(run_dir / CERTIFICATE_FILE, certificate.model_dump(mode="json"))
    return certificate


def certificate_note(fidelity: Fidelity, valid: bool, certified: float | None) -> str:
    limits = f"{TTFT_TOLERANCE:.0%} (TTFT P50) and {TPOT_TOLERANCE:.0%} (TPOT P50) of the truth"
    verdict = f"within {limits}" if certified is not None else f"not within {limits}"
    return verdict if valid else f"{verdict} (the saturation guard marked the self-test INVALID)"


def read_certificate(run_dir: Path) -> Certificate | None:
    path = run_dir / CERTIFICATE_FILE
    if not path.exists():
        return None
    try:
        return Certificate.model_validate_json(path.read_text())
    except ValueError as err:
        raise ValueError(f"cannot read the fidelity certificate {path}: {err}") from None


def certificate_covers(run_dir: Path, target_events_per_s: float) -> bool:
    """A certificate already in the run, measured at this planned rate or above (a resumed run)."""
    found = read_certificate(run_dir)
    return found is not None and found.target_events_per_s >= target_events_per_s
