"""The fidelity certificate: before a sweep, the load generator's self-test against the synthetic
server's truth at the sweep's highest planned event rate; its figures recomputed here from the
self-test's records and the server's truth log; the report's certificate line; scenarios beyond the
certified event rate flagged; a resumed sweep keeps its certificate; `--no-certify` makes none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from synthetic_server import DISTINFER, FINISHED, SyntheticServer

from distinfer.report.blocks import to_markdown
from distinfer.report.fidelity import above_certified, fidelity_section
from distinfer.results.certificate import Certificate
from distinfer.results.load import load_run


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _scenarios(tmp_path: Path, server: SyntheticServer) -> Path:
    path = tmp_path / "scenarios.yaml"
    defaults = {"url": server.url, "model": server.model, "max_tokens": 8, "duration_s": 3, "warmup_s": 1}
    entries = [{"name": "one", "users": 1}, {"name": "six", "users": 6}]
    path.write_text(yaml.safe_dump({"defaults": defaults, "scenarios": entries}))
    return path


def test_a_sweep_certifies_the_load_generator_first_at_its_highest_planned_rate(
    server: SyntheticServer, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = [DISTINFER, "bench", "sweep", "--scenarios", str(_scenarios(tmp_path, server)), "--out", str(out)]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert first.returncode in FINISHED, first.stderr[-3000:]
    certificate = Certificate.model_validate_json((out / "certificate.json").read_text())
    # 6 users at the runner's planning figure of 100 tokens/s each: 600 events/s, 6 users at itl 10 ms.
    assert certificate.target_events_per_s == 600 and certificate.users == 6 and certificate.itl_ms == 10
    started = json.loads((out / "scenarios" / "one" / "summary.json").read_text())["started"]
    assert certificate.created < started, "the self-test must come before the sweep's load"
    # Its figures, recomputed from the self-test's own records and the server's truth log.
    selftest = out / "certificate" / "selftest"
    summary = json.loads((selftest / "summary.json").read_text())
    w0, w1 = summary["metrics"]["window_start"], summary["metrics"]["window_end"]
    records = {
        r["request_id"]: r
        for r in _jsonl(selftest / "records.jsonl")
        if r["ok"] and w0 <= r["scheduled"] < w1
    }
    truth = [t for t in _jsonl(out / "certificate" / "truth.jsonl") if t["request_id"] in records]
    assert certificate.fidelity.requests == len(truth) == len(records) > 20
    server_ttft = [(t["first_token_unix"] - t["received_unix"]) * 1000 for t in truth]
    client_ttft = [
        (records[t["request_id"]]["first_token"] - records[t["request_id"]]["sent"]) * 1000 for t in truth
    ]
    assert certificate.fidelity.truth_ttft_p50_ms == pytest.approx(float(np.percentile(server_ttft, 50)))
    assert certificate.fidelity.ttft_p50_ms == pytest.approx(float(np.percentile(client_ttft, 50)))
    ttft_error = certificate.fidelity.error("ttft")
    tpot_error = certificate.fidelity.error("tpot")
    assert ttft_error is not None and tpot_error is not None
    within = abs(ttft_error) <= 0.05 and abs(tpot_error) <= 0.02
    assert (certificate.certified_events_per_s is not None) is within
    assert certificate.fidelity.truth_tpot_p50_ms == pytest.approx(10.0, rel=0.01)  # the engine's clock
    # The report states it; a resumed sweep keeps it.
    subprocess.run([DISTINFER, "report", str(out)], check=True, capture_output=True, timeout=300)
    report = (out / "report" / "report.md").read_text()
    assert f"**{certificate.line()}**" in report
    assert "Load-generator fidelity: self-test at" in report
    kept = (out / "certificate.json").read_bytes()
    (out / "scenarios" / "six" / "summary.json").unlink()
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode in FINISHED and "ran 1 scenario(s): six" in again.stdout, again.stderr[-2000:]
    assert (out / "certificate.json").read_bytes() == kept
    # Opting out: no certificate, and the report says there is none.
    bare = tmp_path / "bare"
    skipped = subprocess.run(
        [*argv[:-1], str(bare), "--no-certify"], capture_output=True, text=True, timeout=300
    )
    assert skipped.returncode in FINISHED and not (bare / "certificate.json").exists()
    subprocess.run([DISTINFER, "report", str(bare)], check=True, capture_output=True, timeout=300)
    assert (
        "Load-generator fidelity: no certificate in this run" in (bare / "report" / "report.md").read_text()
    )


def test_a_scenario_beyond_the_certified_event_rate_is_flagged(
    server: SyntheticServer, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    certified = subprocess.run(
        [DISTINFER, "bench", "certify", "--out", str(run), "--events-per-s", "100"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert certified.returncode in (0, 4), certified.stderr[-3000:]
    certificate = Certificate.model_validate_json((run / "certificate.json").read_text())
    assert certificate.users == 1 and certificate.line() in certified.stdout
    # Eight users at ~100 tokens/s each: eight times the rate certified.
    fast = run / "scenarios" / "fast"
    argv = [
        DISTINFER, "bench", "run", "--url", server.url, "--model", server.model, "--users", "8",
        "--duration", "3", "--warmup", "1", "--max-tokens", "8", "--scenario", "fast", "--out", str(fast),
    ]  # fmt: skip
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode in FINISHED
    loaded = load_run(run)
    assert loaded.certificate == certificate
    report = to_markdown(fidelity_section(loaded, loaded.certificate))
    assert "### Beyond the certified event rate" in report and "- **fast**: " in report
    (flagged,) = above_certified(loaded, loaded.certificate)
    metrics = json.loads((fast / "summary.json").read_text())["metrics"]
    measured = metrics["output_throughput"] + 2 * metrics["request_throughput"]
    assert flagged == ("fast", pytest.approx(measured))
    assert certificate.certified_events_per_s is None or measured > certificate.certified_events_per_s
    # Certified above it, nothing is flagged.
    raised = certificate.model_copy(update={"certified_events_per_s": 2 * measured})
    assert above_certified(loaded, raised) == []
