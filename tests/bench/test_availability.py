"""Faults in a scenario, from its records and the deployment's sampled status (results/availability.py):
when errors began and ended, the seconds the SLO was violated, when a lost replica was back, and a
server that stopped answering for good. Here on records and status lines written as a run writes
them; the real faults (a test host stopped, the Ray head lost) are in tests/cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from synthetic_server import synthetic_server

from distinfer.bench.watcher import StatusWatcher
from distinfer.results.availability import STATUS_FILE, assess, read_status
from distinfer.results.metrics import Slo
from distinfer.results.records import RequestRecord

START = 1_000.0


def record(seq: int, sent_s: float, ok: bool = True, ttft_s: float = 0.05, **extra: Any) -> RequestRecord:
    sent = START + sent_s
    return RequestRecord(
        request_id=f"r{seq}",
        worker=0,
        seq=seq,
        user=seq % 4,
        scheduled=sent,
        sent=sent,
        first_byte=sent + ttft_s if ok else None,
        first_token=sent + ttft_s if ok else None,
        last_token=sent + ttft_s + 0.1 if ok else None,
        end=sent + (ttft_s + 0.1 if ok else 0.01),
        status=200 if ok else 0,
        ok=ok,
        error_kind=None if ok else "connect",
        completion_tokens=11 if ok else None,
        max_tokens=11,
        chunks=11 if ok else 0,
        **extra,
    )


def status(at_s: float, running: int, message: str = "") -> dict[str, Any]:
    model = {"name": "m", "status": "HEALTHY" if running == 3 else "UPDATING", "running_replicas": running}
    return {"time": START + at_s, "ok": True, "models": [{**model, "replica_states": {}, "message": message}]}


def test_a_lost_replica_that_comes_back() -> None:
    records = [record(i, i * 0.5) for i in range(60)]
    records += [record(100 + i, 10.2 + i * 0.4, ok=False) for i in range(6)]  # 10.2 .. 12.2 s
    records += [record(200 + i, 14 + i, ttft_s=3.0) for i in range(3)]  # slow while one replica short
    timeline = [status(t, 3) for t in (-0.5, 1, 5, 10)]
    timeline += [status(t, 2, "1 replica pending: not enough CPU") for t in (11, 12, 13, 14, 15)]
    timeline += [status(t, 3) for t in (16, 20, 29)]
    a = assess(records, timeline, START, Slo(ttft_ms=1000))
    assert (a.failed, a.first_error_s, a.last_error_s) == (6, 10.21, 12.21)
    assert a.error_seconds == 3  # 10, 11 and 12
    assert a.slo_violated_seconds == 6  # the three seconds with errors and three slow answers
    (course,) = a.replicas
    assert (course.at_start, course.lowest, course.dropped_at_s, course.back_at_s) == (3, 2, 11.0, 16.0)
    assert course.message == "1 replica pending: not enough CPU"
    assert a.endpoint_lost_at_s is None
    assert "fell from 3 to 2 replica(s) at 11.0 s and was back at 16.0 s" in a.summary


def test_a_replica_that_never_comes_back_says_why() -> None:
    timeline = [status(0, 3), status(5, 2, "No node can take {'CPU': 1.5}"), status(9, 2, "still none")]
    (course,) = assess([record(1, 1)], timeline, START, None).replicas
    assert course.back_at_s is None and course.message == "still none"
    assert "was not back by the end (still none)" in assess([record(1, 1)], timeline, START, None).summary


def test_a_server_that_stops_answering_for_good() -> None:
    timeline = [status(t, 3) for t in (0, 1, 2)]
    timeline += [{"time": START + t, "ok": False, "error": "ConnectError"} for t in (3.5, 5.5, 7.5)]
    records = [record(1, 1), record(2, 4, ok=False)]
    a = assess(records, timeline, START, None)
    assert a.endpoint_lost_at_s == 3.5
    assert "stopped answering at 3.5 s and did not come back" in a.summary
    # Unanswered polls in the middle, answered again later, are no loss.
    recovered = [*timeline, status(9, 3)]
    assert assess(records, recovered, START, None).endpoint_lost_at_s is None


def test_a_quiet_run_says_so() -> None:
    a = assess([record(i, i) for i in range(5)], [status(t, 3) for t in (0, 2, 4)], START, Slo(ttft_ms=500))
    assert (a.failed, a.error_seconds, a.slo_violated_seconds) == (0, 0, 0)
    assert a.summary == "no errors, and every replica stayed up."


def test_the_watcher_samples_a_real_server_with_its_key(tmp_path: Path) -> None:
    with synthetic_server(tmp_path, api_key="k-123") as app:
        refused = StatusWatcher(app.url, tmp_path / "refused", api_key=None, interval_s=0.2)
        (tmp_path / "refused").mkdir()
        watcher = StatusWatcher(app.url, tmp_path, api_key="k-123", interval_s=0.2)
        for w in (refused, watcher):
            w.start()
        time.sleep(1.0)
        for w in (refused, watcher):
            w.stop()
    lines = read_status(tmp_path / STATUS_FILE)
    assert len(lines) >= 3 and all(line["ok"] for line in lines), lines
    assert lines[0]["models"][0] == {
        "name": "synthetic",
        "status": "HEALTHY",
        "running_replicas": 1,
        "replica_states": {"RUNNING": 1},
        "message": "",
    }
    without_key = read_status(tmp_path / "refused" / STATUS_FILE)
    assert without_key and all(not line["ok"] and "HTTP 401" in line["error"] for line in without_key)
