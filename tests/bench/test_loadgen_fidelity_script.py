"""benchmarks/loadgen_fidelity.py runs end to end (small, without the GuideLLM peer) and its figures
are the truth log's and the records', recomputed here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen_fidelity.py"


def test_fidelity_script_reports_our_figures_against_the_truth(tmp_path):
    out = tmp_path / "lgf"
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--points", "4:10", "--no-peer"]
    result = subprocess.run(
        [*cmd, "--warmup", "1", "--steady", "3"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    (point,) = doc["points"]
    (ours,) = point["results"]
    assert ours["client"] == "ours" and ours["error"] is None and ours["valid"] is True
    assert point["warmup_s"] == 1 and point["duration_s"] == 4
    # The truth P50s, recomputed from the server's log for the requests our summary counted.
    records = [
        json.loads(line) for line in (out / "u4-itl10" / "ours" / "records.jsonl").read_text().splitlines()
    ]
    summary = json.loads((out / "u4-itl10" / "ours" / "summary.json").read_text())
    w0, w1 = summary["metrics"]["window_start"], summary["metrics"]["window_end"]
    counted = {r["request_id"] for r in records if r["ok"] and w0 <= r["scheduled"] < w1}
    truth = [json.loads(line) for line in (out / "u4-itl10" / "truth.jsonl").read_text().splitlines()]
    rows = [t for t in truth if t["request_id"] in counted]
    assert ours["client_requests"] == ours["truth_requests"] == len(rows) > 0
    ttft = np.percentile([(t["first_token_unix"] - t["received_unix"]) * 1000 for t in rows], 50)
    assert ours["truth_ttft_p50_ms"] == pytest.approx(ttft)
    assert ours["ttft_p50_ms"] == pytest.approx(summary["metrics"]["ttft_ms"]["p50"])
    # 10 ms between tokens on the server's absolute clock; the client sees the same to well within 2 %
    assert ours["truth_tpot_p50_ms"] == pytest.approx(10.0, rel=0.01)
    assert abs(ours["tpot_p50_ms"] - ours["truth_tpot_p50_ms"]) / ours["truth_tpot_p50_ms"] < 0.02
    assert ours["ttft_p50_ms"] > ours["truth_ttft_p50_ms"] > 49.0  # a client can only see it later
    assert ours["extra"]["server_cpu_pct"] >= 0 and "request_path_p50_ms" in ours["extra"]
    table = (out / "table.md").read_text()
    assert "| 4 | 10 | ours |" in table and "largest user count within 5 % / 2 %, ours" in table
    # --render rewrites the table from results.json alone
    (out / "table.md").unlink()
    rendered = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--render"], capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    assert (out / "table.md").read_text() == table


def test_fidelity_script_refuses_a_bad_point_list(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "x"), "--points", "32-20", "--no-peer"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "'32-20' is not USERS:ITL_MS" in result.stderr and "fix --points" in result.stderr
    assert not (tmp_path / "x").exists()
