"""`distinfer report` on a real run: two scenarios of real load (`distinfer bench run` against the
project's lightest server, synthetic engine) with real node samples (`distinfer nodemetrics record`),
then every column of the guide's tables and the per-node table, values checked against the raw
records, JSON with vLLM's field names, CSV, PNG charts, a failed host named, and --compare.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic_server import SyntheticServer, synthetic_server

DISTINFER = str(Path(sys.executable).with_name("distinfer"))
HOST = socket.gethostname()
SCENARIOS = {"r1": {"replicas": 1, "users": 3}, "r2": {"replicas": 2, "users": 6}}
MAX_TOKENS = 12

GUIDE_COLUMNS = [
    "Inference Nodes",
    "Devices",
    "GPUs",
    "Concurrent Requests",
    "RPS",
    "Tokens/s (output)",
    "P95 Latency (s)",
    "P95 token latency (ms, guide's derived: P95 latency / max_tokens)",
    "TTFT P50 (ms)",
    "TTFT P95 (ms)",
    "TPOT P50 (ms)",
    "TPOT P95 (ms)",
    "Errors",
]
NODE_COLUMNS = [
    "Node",
    "Avg CPU %",
    "Avg Memory %",
    "Avg GPU Util %",
    "Avg GPU Memory %",
    "Net rx avg (MB/s)",
    "Net rx max (MB/s)",
    "Net tx avg (MB/s)",
    "Net tx max (MB/s)",
]
VLLM_FIELDS = [
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "completed",
    "total_input_tokens",
    "total_output_tokens",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
    "mean_itl_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "mean_e2el_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
]


def _bench(server: SyntheticServer, out: Path, name: str, replicas: int, users: int) -> None:
    argv = [
        DISTINFER, "bench", "run", "--url", server.url, "--model", server.model,
        "--users", str(users), "--duration", "6", "--warmup", "1", "--max-tokens", str(MAX_TOKENS),
        "--api", "completions", "--scenario", name, "--out", str(out),
        "--meta", f"nodes={HOST},ghost", "--meta", f"replicas={replicas}",
        "--meta", "users_per_replica=3", "--meta", "gpus=0", "--meta", "devices=test box",
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("report")
    run = work / "run"
    with synthetic_server(work) as server:
        for name, spec in SCENARIOS.items():
            folder = run / "scenarios" / name
            (folder / "nodes").mkdir(parents=True)
            recorder = subprocess.Popen(
                [DISTINFER, "nodemetrics", "record", "--out", str(folder / "nodes" / f"{HOST}.jsonl"),
                 "--interval", "0.5"],
            )  # fmt: skip
            try:
                _bench(server, folder, name, spec["replicas"], spec["users"])
            finally:
                recorder.send_signal(signal.SIGTERM)
                recorder.wait(timeout=30)
            # What the node_metrics role leaves for a host that could not record.
            error = {"host": "ghost", "scenario": name, "error": "recorder did not start: disk full"}
            (folder / "nodes" / "ghost.error.json").write_text(json.dumps(error))
    subprocess.run([DISTINFER, "report", str(run)], check=True, capture_output=True, timeout=300)
    yield run


def _table(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The markdown table whose header starts with `first_header`, as dicts (all such tables joined)."""
    rows: list[dict[str, str]] = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| {first_header} |"):
            header = [c.strip() for c in line.strip("|").split("|")]
            for body in lines[i + 2 :]:
                if not body.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in body.strip("|").split("|")), strict=True)))
    return rows


def _records(run: Path, name: str) -> list[dict[str, Any]]:
    path = run / "scenarios" / name / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _window(run: Path, name: str) -> tuple[float, float]:
    metrics = json.loads((run / "scenarios" / name / "summary.json").read_text())["metrics"]
    return metrics["window_start"], metrics["window_end"]


def test_guide_table_has_every_column_and_values_from_the_raw_records(run_dir: Path) -> None:
    report = (run_dir / "report" / "report.md").read_text()
    rows = _table(report, "Inference Nodes")
    assert len(rows) == 2, report
    for column in GUIDE_COLUMNS:
        assert column in rows[0], f"missing column {column!r} in {list(rows[0])}"
    by_users = {int(r["Concurrent Requests"]): r for r in rows}
    assert sorted(by_users) == [3, 6]
    for name, spec in SCENARIOS.items():
        row = by_users[spec["users"]]
        w0, w1 = _window(run_dir, name)
        records = _records(run_dir, name)
        ended = [r for r in records if r["ok"] and w0 <= r["end"] < w1]
        assert float(row["RPS"]) == pytest.approx(len(ended) / (w1 - w0), abs=0.006)
        population = [r for r in records if w0 <= r["scheduled"] < w1 and r["ok"]]
        e2e = np.array([r["end"] - r["sent"] for r in population])
        assert float(row["P95 Latency (s)"]) == pytest.approx(np.percentile(e2e, 95), abs=0.006)
        token_latency = float(row["P95 token latency (ms, guide's derived: P95 latency / max_tokens)"])
        assert token_latency == pytest.approx(np.percentile(e2e, 95) * 1000 / MAX_TOKENS, rel=0.01)
        ttft = np.array([(r["first_token"] - r["sent"]) * 1000 for r in population])
        assert float(row["TTFT P50 (ms)"]) == pytest.approx(np.percentile(ttft, 50), abs=0.06)
        assert row["Errors"] == "0"
        assert row["GPUs"] == "0"
    assert by_users[3]["Inference Nodes"] == "Two Nodes"  # nodes=<this host>,ghost


def test_node_table_has_every_column_and_names_the_failed_host(run_dir: Path) -> None:
    report = (run_dir / "report" / "report.md").read_text()
    rows = _table(report, "Scenario")
    node_rows = [r for r in rows if "Node" in r]
    for column in NODE_COLUMNS:
        assert column in node_rows[0], f"missing column {column!r} in {list(node_rows[0])}"
    mine = [r for r in node_rows if r["Node"] == HOST]
    assert len(mine) == 2
    for row in mine:
        assert 0 < float(row["Avg CPU %"]) <= 100 and 0 < float(row["Avg Memory %"]) < 100
        assert row["Avg GPU Util %"] == "n/a"  # no GPU on this machine, said so in the note
        assert "no GPU" in row["Note"]
    ghost = [r for r in node_rows if r["Node"] == "ghost"]
    assert len(ghost) == 2 and all("disk full" in r["Note"] for r in ghost), ghost


def test_json_csv_and_charts(run_dir: Path) -> None:
    out = run_dir / "report"
    document = json.loads((out / "results.json").read_text())
    assert len(document["scenarios"]) == 2
    for scenario in document["scenarios"]:
        for field in VLLM_FIELDS:
            assert field in scenario, f"results.json lacks vLLM's {field}"
        records = _records(run_dir, scenario["scenario"])
        w0, w1 = _window(run_dir, scenario["scenario"])
        population = [r for r in records if w0 <= r["scheduled"] < w1 and r["ok"]]
        assert scenario["completed"] == len(population)
        ttft = [(r["first_token"] - r["sent"]) * 1000 for r in population]
        assert scenario["median_ttft_ms"] == pytest.approx(float(np.median(ttft)), rel=1e-6)
    assert document["provenance"], "versions / hardware / config not recorded"
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["scenario"] for r in rows} == set(SCENARIOS)
    charts = sorted(out.glob("*.png"))
    assert len(charts) >= 3
    for chart in charts:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000


def test_compare_shows_the_change(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    shutil.rmtree(other / "report")
    summary = other / "scenarios" / "r1" / "summary.json"
    data = json.loads(summary.read_text())
    data["metrics"]["request_throughput"] /= 2  # the other run served half the requests/s
    summary.write_text(json.dumps(data))
    subprocess.run(
        [DISTINFER, "report", str(run_dir), "--compare", str(other)], check=True, capture_output=True
    )
    report = (run_dir / "report" / "report.md").read_text()
    assert f"Compared with {other}" in report
    assert "+100.0%" in report  # this run's RPS is twice the other's
    compare = json.loads((run_dir / "report" / "results.json").read_text())["compare"]
    assert compare["other_run"] == str(other)
