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
every scenario whose measured event rate exceeds it. The certificate's model, its tolerances and the
planned rate it is measured at are results/certificate.py's; this module runs the self-test.
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

from distinfer.bench.runner import run_scenario
from distinfer.results.certificate import (
    Certificate,
    Fidelity,
    certificate_note,
    event_rate,
)
from distinfer.results.metrics import tpot_ms, ttft_ms
from distinfer.results.records import RECORDS_FILE, RequestRecord, load_records
from distinfer.results.scenario import ScenarioSpec
from distinfer.results.summary import Summary

log = logging.getLogger(__name__)

SELFTEST_DIR = "certificate"
SELFTEST_TTFT_MS = 50.0
SELFTEST_ITL_MS = 10.0  # 100 tokens/s per user: the runner's planning figure for a closed-loop user
SELFTEST_TOKENS = 64
SELFTEST_STEADY_S = 6.0


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
    certificate.save_file(run_dir)
    return certificate
