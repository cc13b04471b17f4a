"""`distinfer bench run` against the project's real synthetic server: records, summary, kills, errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from synthetic_server import DISTINFER, FINISHED, SyntheticServer, stop_group, synthetic_server

from distinfer.results.records import load_records


def bench(server: SyntheticServer, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [DISTINFER, "bench", "run", "--url", server.url, "--model", server.model, "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def truth_by_id(server: SyntheticServer) -> dict[str, dict]:
    lines = server.truth_log.read_text().splitlines()
    return {t["request_id"]: t for t in map(json.loads, lines)}


def test_closed_loop_run_records_every_request_and_matches_server_truth(server, tmp_path):
    out = tmp_path / "run" / "scenarios" / "closed"
    result = bench(
        server, out, "--users", "6", "--duration", "4", "--warmup", "1", "--max-tokens", "16",
        "--scenario", "closed", "--meta", "replicas=1", "--meta", "users_per_replica=6", "--slo", "ttft=500",
    )  # fmt: skip
    assert result.returncode in FINISHED, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    records = load_records(out / "records.jsonl")
    assert len(records) >= 6 * 3  # 6 users, ~200 ms requests, 4 s
    assert all(r.ok and r.completion_tokens == 16 and r.chunks == 16 for r in records)
    for r in records:
        assert r.first_byte and r.first_token and r.last_token
        assert r.sent <= r.first_byte <= r.first_token <= r.last_token <= r.end
    m = summary["metrics"]
    assert summary["valid"], summary["invalid_reasons"]
    assert m["failed"] == 0 and m["completed"] == m["requests_scheduled"] > 0
    assert m["window_end"] - m["window_start"] == pytest.approx(3.0)
    assert 5.0 <= m["achieved_concurrency"] <= 6.01
    assert m["request_goodput"] == pytest.approx(m["completed"] / 3.0, rel=0.5)
    assert summary["scenario"]["users_per_replica"] == 6 and summary["scenario"]["replicas"] == 1
    # run.json (provenance) sits at the run's top, as the results layout says
    provenance = json.loads((tmp_path / "run" / "run.json").read_text())
    assert provenance["versions"]["locust"] and provenance["hardware"]["logical_cpus"]
    # The client's view against the server's own record of each request (joined by X-Request-Id):
    truth = truth_by_id(server)
    for r in records:
        t = truth[r.request_id]
        assert t["completion_tokens"] == r.completion_tokens
        server_decode = t["last_token_unix"] - t["first_token_unix"]
        client_decode = r.last_token - r.first_token
        assert client_decode == pytest.approx(server_decode, abs=0.05)
        assert r.first_token - r.sent >= t["first_token_unix"] - t["arrival_unix"] - 0.002


def test_open_loop_sends_at_poisson_times_independent_of_the_server(server, tmp_path):
    out = tmp_path / "open"
    result = bench(
        server, out, "--users", "64", "--rate", "20", "--duration", "3", "--max-tokens", "8", "--seed", "7"
    )
    assert result.returncode in FINISHED, result.stderr
    records = load_records(out / "records.jsonl")
    assert 25 <= len(records) <= 100  # Poisson(60)
    assert all(r.user == -1 and r.ok for r in records)
    lateness = sorted(r.sent - r.scheduled for r in records)
    assert lateness[len(lateness) // 2] < 0.02  # sent when due, not when the previous answer came
    due = sorted(r.scheduled for r in records)
    gaps = sorted(b - a for a, b in itertools.pairwise(due))
    assert gaps[0] < 0.02 and gaps[-1] > 0.08  # exponential gaps, not a fixed pace
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"]["rate"] == 20


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a `cmd &` job in a script inherits it


def _start_long_run(
    server: SyntheticServer, out: Path, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    cmd = [DISTINFER, "bench", "run", "--url", server.url, "--model", server.model, "--out", str(out),
           "--users", "4", "--duration", "60", "--max-tokens", "8"]  # fmt: skip
    return subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )


def _wait_for_records(path: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 120  # a bound, not a speed goal: a loaded 2-core CI box starts Locust slowly
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} records after 120 s")


def _group_gone(pgid: int, within_s: float) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("sig", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGKILL, False)],
    ids=["sigint", "sigint-inherited-as-ignored", "sigkill"],
)
def test_killing_the_bench_keeps_the_records_already_written(server, tmp_path, sig, sigint_ignored):
    out = tmp_path / "killed"
    proc = _start_long_run(server, out, sigint_ignored)
    try:
        _wait_for_records(out / "records.jsonl", 10, proc)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal reaches the whole foreground group
        else:
            proc.kill()  # only the runner: its workers must notice and stop by themselves
        proc.wait(timeout=60)
        assert _group_gone(proc.pid, 60), "load workers outlived the runner"
        records = load_records(out / "records.jsonl")
        assert len(records) >= 10
        assert sum(r.ok for r in records) >= 10
        assert not (out / "summary.json").exists()  # unfinished: a sweep will run it again
        if sig == signal.SIGINT:
            assert proc.returncode != 0
    finally:
        stop_group(proc)  # type: ignore[arg-type]


def test_bad_options_are_refused_with_the_value_and_the_fix(server, tmp_path):
    result = bench(server, tmp_path / "bad", "--users", "2", "--duration", "3", "--warmup", "5")
    assert result.returncode == 2
    assert "warm-up (5.0s) must be shorter than duration (3.0s)" in result.stderr
    result = bench(server, tmp_path / "bad", "--users", "2", "--duration", "3", "--meta", "replicas")
    assert result.returncode == 2 and "--meta 'replicas' must be KEY=VALUE" in result.stderr
    result = bench(
        server, tmp_path / "bad", "--users", "2", "--duration", "3", "--prompts", "/nonexistent.jsonl"
    )
    assert result.returncode == 2 and "cannot read prompts file /nonexistent.jsonl" in result.stderr
    assert not (tmp_path / "bad" / "records.jsonl").exists()


def test_refusals_become_typed_records_the_users_back_off_and_invalid_exits_4(tmp_path):
    # One request in flight and one waiting: of 6 users, most are refused with 503 + Retry-After.
    with synthetic_server(tmp_path, max_ongoing_requests=1, max_queued_requests=1) as small:
        cmd = [DISTINFER, "bench", "run", "--url", small.url, "--model", small.model, "--out",
               str(tmp_path / "out"), "--users", "6", "--duration", "4", "--max-tokens", "8"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stderr  # INVALID: the users could not keep 6 in flight
    assert "INVALID: achieved concurrency" in result.stderr
    records = load_records(tmp_path / "out" / "records.jsonl")
    refused = [r for r in records if not r.ok]
    assert refused and all(r.error_kind == "http" and r.status == 503 for r in refused)
    assert any(r.ok for r in records)
    # A refused user waits at least the server's Retry-After (1 s) before trying again.
    assert len(refused) <= 6 * 5, f"{len(refused)} refusals in 4 s: the users did not back off"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metrics"]["errors_by_kind"]["http"] == summary["metrics"]["failed"] > 0
