"""`distinfer report` on real runs: two scenarios of real load (`distinfer bench run` against the
project's lightest server, `distinfer serve --bare` with the synthetic engine) with different meta
(replicas 1 and 2) and real node samples (`distinfer nodemetrics record`), plus an open-loop run the
saturation guard flags. Checked: every column of the guide's tables and of the per-node table, with
values recomputed from the raw records and raw node samples; results.json with vLLM's field names;
CSV; PNG charts; versions, hardware and config; a host that failed to record named; --compare.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
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
from synthetic_server import FINISHED, SyntheticServer, synthetic_server

from browser import Browser
from distinfer.report.charts import steady_latencies
from distinfer.report.tables import VIRTUAL_NIC_PREFIXES
from distinfer.results.load import load_run

DISTINFER = str(Path(sys.executable).with_name("distinfer"))
HOST = socket.gethostname()
SCENARIOS = {"r1": {"replicas": 1, "users": 3}, "r2": {"replicas": 2, "users": 6}}
MAX_TOKENS = 12
# The runs' own SLO: near the synthetic engine's clock (ttft 20 ms, itl 10 ms), so either verdict may come.
SLO = {"name": "test", "ttft_ms": 40.0, "tpot_ms": 12.0, "percentile": 90.0}
TOKEN_LABEL = "P95 token latency (ms, guide's derived: P95 latency / max_tokens)"

GUIDE_COLUMNS = [
    "Inference Nodes",
    "Devices",
    "GPUs",
    "Concurrent Requests",
    "RPS",
    "Tokens/s (output)",
    "Tokens/s (total)",
    "P95 Latency (s)",
    TOKEN_LABEL,
    "TTFT P50 (ms)",
    "TTFT P95 (ms)",
    "TPOT P50 (ms)",
    "TPOT P95 (ms)",
    "Errors",
    "Valid",
]
NODE_COLUMNS = [
    "Node",
    "Avg CPU %",
    "Peak CPU %",
    "Avg Memory %",
    "Peak Memory %",
    "Avg GPU Util %",
    "Avg GPU Memory %",
    "Net rx avg (MB/s)",
    "Net rx max (MB/s)",
    "Net tx avg (MB/s)",
    "Net tx max (MB/s)",
]
# Names of vLLM's serving benchmark result JSON (benchmark_serving.py / `vllm bench serve`), same
# meanings; max_concurrency and request_rate are the run arguments it saves beside them.
VLLM_FIELDS = [
    "duration",
    "completed",
    "failed",
    "request_goodput",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "max_concurrency",
    "request_rate",
    *(f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p99")),
]


def _bench(
    server: SyntheticServer, out: Path, name: str, *args: str, status: tuple[int, ...] = FINISHED
) -> None:
    argv = [
        DISTINFER, "bench", "run", "--url", server.url, "--model", server.model,
        "--duration", "6", "--warmup", "1", "--max-tokens", str(MAX_TOKENS),
        "--api", "completions", "--scenario", name, "--out", str(out), *args,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode in status, result.stderr[-3000:]


def _meta(replicas: int, users_per_replica: int) -> list[str]:
    return [
        "--meta", f"nodes={HOST},ghost", "--meta", f"replicas={replicas}",
        "--meta", f"users_per_replica={users_per_replica}", "--meta", "gpus=0",
        "--meta", "devices=test box,phantom box",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    work = tmp_path_factory.mktemp("report")
    run, saturated = work / "run", work / "saturated"
    with synthetic_server(work) as server:
        for name, spec in SCENARIOS.items():
            folder = run / "scenarios" / name
            (folder / "nodes").mkdir(parents=True)
            recorder = subprocess.Popen(
                [DISTINFER, "nodemetrics", "record", "--out", str(folder / "nodes" / f"{HOST}.jsonl"),
                 "--interval", "0.5"],
                start_new_session=True,
            )  # fmt: skip
            try:
                users = spec["users"]
                slo = "name={name},ttft={ttft_ms},tpot={tpot_ms},p={percentile}".format(**SLO)
                _bench(server, folder, name, "--users", str(users), "--slo", slo, *_meta(spec["replicas"], 3))
            finally:
                recorder.send_signal(signal.SIGTERM)
                recorder.wait(timeout=30)
            # What the node_metrics role leaves for a host that could not record.
            error = {"host": "ghost", "scenario": name, "error": "recorder did not start: disk full"}
            (folder / "nodes" / "ghost.error.json").write_text(json.dumps(error))
        # Open loop at 150 req/s with at most 2 in flight (~130 ms each): the client must drop
        # arrivals, and the saturation guard must mark the run invalid.
        _bench(server, saturated / "scenarios" / "sat", "sat", "--users", "2", "--rate", "150", status=(4,))
    for path in (run, saturated):
        subprocess.run([DISTINFER, "report", str(path)], check=True, capture_output=True, timeout=300)
    yield {"run": run, "saturated": saturated}


def _table(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The markdown tables whose header starts with `first_header`, as dicts (all such tables joined)."""
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


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _summary(run: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "scenarios" / name / "summary.json").read_text())
    return data


def _window(run: Path, name: str) -> tuple[float, float]:
    metrics = _summary(run, name)["metrics"]
    return metrics["window_start"], metrics["window_end"]


def _output_tokens_in(records: list[dict[str, Any]], w0: float, w1: float) -> float:
    """Output tokens inside the window: each request's tokens spread evenly from first to last."""
    total = 0.0
    for r in records:
        if not r["ok"] or not r["completion_tokens"]:
            continue
        first, last, n = r["first_token"], r["last_token"], r["completion_tokens"]
        total += 1.0 if w0 <= first < w1 else 0.0
        total += (n - 1) * max(0.0, min(last, w1) - max(first, w0)) / (last - first)
    return total


def test_guide_tables_have_every_column_with_values_from_the_raw_records(runs: dict[str, Path]) -> None:
    run = runs["run"]
    report = (run / "report" / "report.md").read_text()
    assert "## 1. Scalability results for batch size of 3 per replica" in report
    rows = _table(report, "Inference Nodes")
    assert len(rows) == 2, report
    for column in GUIDE_COLUMNS:
        assert column in rows[0], f"missing column {column!r} in {list(rows[0])}"
    by_name = {r["Scenario"]: r for r in rows}
    for name, spec in SCENARIOS.items():
        row = by_name[name]
        w0, w1 = _window(run, name)
        span = w1 - w0
        records = _jsonl(run / "scenarios" / name / "records.jsonl")
        population = [r for r in records if w0 <= r["scheduled"] < w1 and r["ok"]]
        assert len(population) > 20, "too few requests to check the figures"
        assert row["Concurrent Requests"] == str(spec["users"])
        ended = [r for r in records if r["ok"] and w0 <= r["end"] < w1]
        assert float(row["RPS"]) == pytest.approx(len(ended) / span, abs=0.006)
        output = _output_tokens_in(records, w0, w1) / span
        assert float(row["Tokens/s (output)"].replace(",", "")) == pytest.approx(output, abs=0.06)
        prompt = sum(r["prompt_tokens"] for r in records if r["ok"] and w0 <= r["first_token"] < w1) / span
        total = float(row["Tokens/s (total)"].replace(",", ""))
        assert total == pytest.approx(output + prompt, abs=0.06) and total > output
        e2e = np.array([r["end"] - r["sent"] for r in population])
        assert float(row["P95 Latency (s)"]) == pytest.approx(np.percentile(e2e, 95), abs=0.006)
        assert float(row[TOKEN_LABEL]) == pytest.approx(np.percentile(e2e, 95) * 1000 / MAX_TOKENS, abs=0.006)
        ttft = np.array([(r["first_token"] - r["sent"]) * 1000 for r in population])
        assert float(row["TTFT P50 (ms)"]) == pytest.approx(np.percentile(ttft, 50), abs=0.06)
        assert float(row["TTFT P95 (ms)"]) == pytest.approx(np.percentile(ttft, 95), abs=0.06)
        tpot = np.array(
            [(r["last_token"] - r["first_token"]) * 1000 / (r["completion_tokens"] - 1) for r in population]
        )
        assert float(row["TPOT P50 (ms)"]) == pytest.approx(np.percentile(tpot, 50), abs=0.006)
        assert float(row["TPOT P95 (ms)"]) == pytest.approx(np.percentile(tpot, 95), abs=0.006)
        # The synthetic engine's clock (ttft 20 ms, itl 10 ms) shows through the measured figures.
        assert 20 <= np.percentile(ttft, 50) < 200 and 9 <= np.percentile(tpot, 50) < 30
        assert row["Errors"] == "0"
        assert row["Valid"] == {True: "yes", False: "NO"}[_summary(run, name)["valid"]]
        assert row["GPUs"] == "0"
        assert row["Devices"] == "test box<br>phantom box"
        assert row["Inference Nodes"] == "Two Nodes"  # nodes=<this host>,ghost
    assert "not a measured token latency" in report


def _nearest_rank(values: list[float], percentile: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, int(np.ceil(percentile / 100 * len(ordered)))) - 1]


def test_slo_table_and_goodput_come_from_the_records(runs: dict[str, Path]) -> None:
    run = runs["run"]
    report = (run / "report" / "report.md").read_text()
    rows = {r["Scenario"]: r for r in _table(report, "Scenario") if "Meeting the SLO" in r}
    assert set(rows) == set(SCENARIOS)
    document = {
        s["scenario"]: s for s in json.loads((run / "report" / "results.json").read_text())["scenarios"]
    }
    for name, spec in SCENARIOS.items():
        row, w0, w1 = rows[name], *_window(run, name)
        records = _jsonl(run / "scenarios" / name / "records.jsonl")
        due = [r for r in records if w0 <= r["scheduled"] < w1]
        inf = float("inf")
        ttft = [(r["first_token"] - r["sent"]) * 1000 if r["ok"] else inf for r in due]
        tpot = [
            (r["last_token"] - r["first_token"]) * 1000 / (r["completion_tokens"] - 1) if r["ok"] else inf
            for r in due
        ]
        met = [i for i in range(len(due)) if ttft[i] <= SLO["ttft_ms"] and tpot[i] <= SLO["tpot_ms"]]
        assert row["Configuration"] == f"{spec['replicas']} x 3"
        assert row["SLO"] == "test: TTFT <= 40 ms, TPOT <= 12 ms at P90"
        p_ttft, p_tpot = _nearest_rank(ttft, 90), _nearest_rank(tpot, 90)
        assert float(row["TTFT at the SLO's percentile (ms)"]) == pytest.approx(p_ttft, abs=0.051)
        assert float(row["TPOT at the SLO's percentile (ms)"]) == pytest.approx(p_tpot, abs=0.0051)
        assert row["Meeting the SLO"] == f"{100 * len(met) / len(due):.1f} %"
        assert float(row["Goodput (req/s)"]) == pytest.approx(len(met) / (w1 - w0), abs=0.0051)
        tokens = sum(due[i]["completion_tokens"] for i in met) / (w1 - w0)
        assert float(row["Goodput (output tok/s)"].replace(",", "")) == pytest.approx(tokens, abs=0.051)
        passed = p_ttft <= SLO["ttft_ms"] and p_tpot <= SLO["tpot_ms"]
        assert row["SLO met"] == ("yes" if passed else "NO")
        assert document[name]["slo_met"] is passed
        assert document[name]["request_goodput"] == pytest.approx(len(met) / (w1 - w0))


def test_report_slo_judges_again_and_names_the_best_configuration(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(runs["run"], copy)
    for slo, verdict in (("ttft=1,tpot=1", "NO"), ("mlperf-llama2-70b", "yes")):
        subprocess.run([DISTINFER, "report", str(copy), "--slo", slo], check=True, capture_output=True)
        report = (copy / "report" / "report.md").read_text()
        rows = [r for r in _table(report, "Scenario") if "Meeting the SLO" in r]
        assert [r["SLO met"] for r in rows] == [verdict, verdict], rows
        assert "## SLO and goodput" in report and "(pareto_front.png)" in report
        assert ("**No configuration met its SLO.**" in report) is (verdict == "NO")
    assert all(r["SLO"].startswith("mlperf-llama2-70b: TTFT <= 2000 ms, TPOT <= 200 ms at P99") for r in rows)
    assert all(r["Meeting the SLO"] == "100.0 %" for r in rows)
    # Twice the users on twice the replicas: most output tokens/s, and within the SLO.
    assert (
        "**Most output tokens/s within the SLO: 2 x 3** (replicas x per-replica cap; scenario r2)" in report
    )


def test_node_table_values_come_from_the_raw_samples_and_a_failed_host_is_named(
    runs: dict[str, Path],
) -> None:
    run = runs["run"]
    report = (run / "report" / "report.md").read_text()
    rows = [r for r in _table(report, "Scenario") if "Node" in r]
    document = json.loads((run / "report" / "results.json").read_text())
    node_rows_json = [
        n | {"scenario": s["scenario"]} for s in document["scenarios"] for n in s["nodes_detail"]
    ]
    for column in NODE_COLUMNS:
        assert column in rows[0], f"missing column {column!r} in {list(rows[0])}"
    for name in SCENARIOS:
        (row,) = [r for r in rows if r["Node"] == HOST and r["Scenario"] == name]
        w0, w1 = _window(run, name)
        raw = _jsonl(run / "scenarios" / name / "nodes" / f"{HOST}.jsonl")
        samples = [s for s in raw if s["kind"] == "sample" and w0 <= s["time"] <= w1]
        assert len(samples) >= 5 and row["Samples"] == str(len(samples))
        cpu = np.mean([s["cpu_percent"] for s in samples])
        assert 0 < cpu <= 100 and float(row["Avg CPU %"]) == pytest.approx(cpu, abs=0.051)
        mem = np.mean([s["mem_percent"] for s in samples])
        assert float(row["Avg Memory %"]) == pytest.approx(mem, abs=0.051)
        # Peaks: the highest sample in the window, beside the averages (report.md and results.json).
        cpu_peak = max(s["cpu_percent"] for s in samples)
        mem_peak = max(s["mem_percent"] for s in samples)
        # (a mean of equal samples can exceed them in its last bit: 35.10000000000001 > 35.1)
        assert cpu <= cpu_peak + 1e-9 and cpu_peak <= 100 and mem <= mem_peak + 1e-9
        assert float(row["Peak CPU %"]) == pytest.approx(cpu_peak, abs=0.051)
        assert float(row["Peak Memory %"]) == pytest.approx(mem_peak, abs=0.051)
        (flat,) = [n for n in node_rows_json if n["host"] == HOST and n["scenario"] == name]
        assert (flat["peak_cpu_percent"], flat["peak_mem_percent"]) == (cpu_peak, mem_peak)
        virtual = VIRTUAL_NIC_PREFIXES
        physical = [{n: v for n, v in s["net"].items() if not n.startswith(virtual)} for s in samples]
        assert all(physical), "this machine has a physical NIC (eth0): its traffic must be counted"
        for direction in ("rx", "tx"):
            key = f"{direction}_bytes_per_s"
            per_sample = [sum(v[key] for v in nics.values()) / 1e6 for nics in physical]
            assert float(row[f"Net {direction} avg (MB/s)"]) == pytest.approx(np.mean(per_sample), abs=0.0051)
            assert float(row[f"Net {direction} max (MB/s)"]) == pytest.approx(max(per_sample), abs=0.0051)
        assert row["Avg GPU Util %"] == "n/a" and row["Avg GPU Memory %"] == "n/a"  # no GPU here
        assert "no GPU" in row["Note"]
    ghost = [r for r in rows if r["Node"] == "ghost"]
    assert len(ghost) == 2 and all("disk full" in r["Note"] for r in ghost), ghost
    assert "**Nodes listed in the scenarios but without samples:** ghost (r1), ghost (r2)" in report


def test_path_cost_per_1k_tokens_comes_from_the_raw_samples(runs: dict[str, Path]) -> None:
    run = runs["run"]
    report = (run / "report" / "report.md").read_text()
    assert "What the serving path costs (CPU seconds per 1,000 output tokens" in report
    rows = [r for r in _table(report, "Scenario") if "Proxy / HAProxy" in r]
    document = json.loads((run / "report" / "results.json").read_text())
    for name in SCENARIOS:
        (row,) = [r for r in rows if r["Scenario"] == name]
        metrics = _summary(run, name)["metrics"]
        w0, w1 = metrics["window_start"], metrics["window_end"]
        tokens = metrics["output_throughput"] * metrics["window_s"]
        raw = _jsonl(run / "scenarios" / name / "nodes" / f"{HOST}.jsonl")
        cores = raw[0]["cpu_count"]
        samples = [s for s in raw if s["kind"] == "sample"]
        inside = [s for s in samples if w0 <= s["time"] <= w1]
        assert row["Output tokens"] == str(round(tokens))
        for part, column in (("proxy", "Proxy / HAProxy"), ("ingress", "Ingress (router)"),
                             ("replicas", "Model replicas")):  # fmt: skip
            expected = sum(s["serve_cpu_s"][part] for s in inside) / tokens * 1000
            assert float(row[column]) == pytest.approx(expected, abs=0.00051)
        # Every process of the node: CPU % x cores x the time each sample covers.
        node_s = sum(
            s["cpu_percent"] / 100 * cores * (s["time"] - before["time"])
            for before, s in itertools.pairwise(samples)
            if w0 <= s["time"] <= w1
        )
        assert float(row["All nodes"]) == pytest.approx(node_s / tokens * 1000, abs=0.00051)
        # The bare server (no Ray Serve) is no part of a Serve path: the node's CPU is far above it.
        assert float(row["All nodes"]) > float(row["Serving path"])
        (entry,) = [e for e in document["scenarios"] if e["scenario"] == name]
        assert entry["path_cost"]["output_tokens_in_window"] == round(tokens)


def test_results_json_uses_vllm_names_and_csv_and_charts(runs: dict[str, Path]) -> None:
    run = runs["run"]
    out = run / "report"
    document = json.loads((out / "results.json").read_text())
    assert [s["scenario"] for s in document["scenarios"]] == ["r1", "r2"]
    for scenario in document["scenarios"]:
        for field in VLLM_FIELDS:
            assert field in scenario, f"results.json lacks vLLM's {field}"
        name = scenario["scenario"]
        records = _jsonl(run / "scenarios" / name / "records.jsonl")
        w0, w1 = _window(run, name)
        population = [r for r in records if w0 <= r["scheduled"] < w1 and r["ok"]]
        assert scenario["completed"] == len(population)
        assert scenario["max_concurrency"] == SCENARIOS[name]["users"]
        assert scenario["replicas"] == SCENARIOS[name]["replicas"]
        assert scenario["total_output_tokens"] == MAX_TOKENS * len(population)
        ttft = [(r["first_token"] - r["sent"]) * 1000 for r in population]
        assert scenario["median_ttft_ms"] == pytest.approx(float(np.median(ttft)), rel=1e-9)
        assert scenario["p99_ttft_ms"] == pytest.approx(float(np.percentile(ttft, 99)), rel=1e-9)
        gaps = [g for r in population for g in r["gaps_ms"]]
        assert scenario["p99_itl_ms"] == pytest.approx(float(np.percentile(gaps, 99)), rel=1e-9)
        e2e = [(r["end"] - r["sent"]) * 1000 for r in population]
        assert scenario["mean_e2el_ms"] == pytest.approx(float(np.mean(e2e)), rel=1e-9)
    with (out / "results.csv").open() as handle:
        rows = {r["scenario"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(SCENARIOS)
    for scenario in document["scenarios"]:
        csv_row = rows[scenario["scenario"]]
        assert float(csv_row["request_throughput"]) == pytest.approx(scenario["request_throughput"])
        assert float(csv_row["p99_e2el_ms"]) == pytest.approx(scenario["p99_e2el_ms"])
    charts = sorted(out.glob("*.png"))
    assert {
        "throughput_vs_replicas.png", "latency_vs_concurrency.png", "ttft_tpot_distribution.png",
        "pareto_front.png",
    } <= {c.name for c in charts}  # fmt: skip
    assert any(c.name.startswith("node") for c in charts), [c.name for c in charts]
    for chart in charts:
        data = chart.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 5000, chart
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 400 and height >= 300, (chart, width, height)
        assert f"({chart.name})" in (out / "report.md").read_text()


def test_versions_hardware_and_config_are_recorded(runs: dict[str, Path]) -> None:
    run = runs["run"]
    provenance = json.loads((run / "report" / "results.json").read_text())["provenance"]
    assert provenance["versions"]["locust"] and provenance["versions"]["distinfer"]
    assert provenance["hardware"]["logical_cpus"] >= 1 and provenance["hardware"]["memory_bytes"] > 0
    assert provenance["command"][1:3] == ["bench", "run"]
    report = (run / "report" / "report.md").read_text()
    assert "## Run provenance" in report
    assert f"locust {provenance['versions']['locust']}" in report
    assert f"Python {provenance['python']}" in report
    assert str(provenance["hardware"]["cpu_model"]) in report
    config = {r["Scenario"]: r for r in _table(report, "Scenario") if "Model" in r}
    assert set(config) == set(SCENARIOS)
    for name, spec in SCENARIOS.items():
        assert config[name]["Users"] == str(spec["users"]) and config[name]["Max tokens"] == str(MAX_TOKENS)
        assert config[name]["Duration (s)"] == "6.0" and config[name]["API"] == "completions"
        assert config[name]["Warm-up (s)"] == config[name]["Ramp (s)"] == "1.0"  # users ramp over the warm-up


def test_a_run_the_saturation_guard_flagged_is_marked_invalid(runs: dict[str, Path]) -> None:
    run = runs["saturated"]
    summary = _summary(run, "sat")
    assert summary["valid"] is False
    assert any("arrivals were dropped" in reason for reason in summary["invalid_reasons"])
    report = (run / "report" / "report.md").read_text()
    (row,) = _table(report, "Inference Nodes")
    assert row["Valid"] == "NO"
    w0, w1 = _window(run, "sat")
    records = _jsonl(run / "scenarios" / "sat" / "records.jsonl")
    dropped = sum(1 for r in records if w0 <= r["scheduled"] < w1 and r["error_kind"] == "client_overflow")
    assert dropped > 0 and row["Errors"] == f"client_overflow: {dropped}"
    assert "## Invalid scenarios (the load generator could not keep up)" in report
    assert "- **sat**: " in report and "arrivals were dropped" in report
    document = json.loads((run / "report" / "results.json").read_text())
    assert document["scenarios"][0]["valid"] is False


def test_compare_shows_the_change(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["run"]
    other = tmp_path / "other"
    shutil.copytree(run, other)
    shutil.rmtree(other / "report")
    summary = other / "scenarios" / "r1" / "summary.json"
    data = json.loads(summary.read_text())
    data["metrics"]["request_throughput"] /= 2  # the other run served half the requests/s
    summary.write_text(json.dumps(data))
    subprocess.run([DISTINFER, "report", str(run), "--compare", str(other)], check=True, capture_output=True)
    report = (run / "report" / "report.md").read_text()
    assert f"## Compared with {other}" in report
    (row,) = [r for r in _table(report, "Scenario") if r.get("RPS") and r["Scenario"] == "r1"]
    assert row["RPS"].endswith(", +100.0%)")  # this run's RPS is twice the other's
    (unchanged,) = [r for r in _table(report, "Scenario") if r.get("RPS") and r["Scenario"] == "r2"]
    assert unchanged["RPS"].endswith(", +0.0%)")
    compare = json.loads((run / "report" / "results.json").read_text())["compare"]
    assert compare["other_run"] == str(other)
    (r1,) = [c for c in compare["scenarios"] if c["scenario"] == "r1"]
    assert r1["request_throughput"]["delta_percent"] == pytest.approx(100.0)


def test_the_distribution_chart_plots_the_population_the_percentiles_come_from(runs: dict[str, Path]) -> None:
    for scenario in load_run(runs["run"]).scenarios:
        ttft, tpot = steady_latencies(scenario)
        metrics = _summary(runs["run"], scenario.name)["metrics"]
        assert len(ttft) == metrics["ttft_ms"]["count"] > 20
        assert float(np.percentile(ttft, 95)) == pytest.approx(metrics["ttft_ms"]["p95"], rel=1e-9)
        assert float(np.percentile(tpot, 50)) == pytest.approx(metrics["tpot_ms"]["p50"], rel=1e-9)


# Each image as the page drew it: its size, and how much of it is ink (drawn onto a canvas: a chart
# that failed to decode, even one whose header still gives a size, is blank there).
IMAGES_JS = """return [...document.images].map(i => {
    const canvas = document.createElement('canvas');
    canvas.width = i.naturalWidth; canvas.height = i.naturalHeight;
    let inked = 0, colours = new Set();
    if (i.naturalWidth && i.naturalHeight) {
        const ctx = canvas.getContext('2d');
        ctx.drawImage(i, 0, 0);
        const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        for (let k = 0; k < px.length; k += 4) {
            if (px[k + 3] > 0 && (px[k] < 235 || px[k + 1] < 235 || px[k + 2] < 235)) inked++;
            if (colours.size < 64) colours.add(px[k] << 16 | px[k + 1] << 8 | px[k + 2]);
        }
    }
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
            src: i.src.slice(0, 22), inked: inked / Math.max(1, canvas.width * canvas.height),
            colours: colours.size};
})"""
TABLE_JS = """const table = [...document.querySelectorAll('table')].find(
    t => t.querySelector('th') && t.querySelector('th').innerText.trim() === arguments[0]);
return [...table.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(td => td.innerText.trim()));"""


def _open_in_browser(browser: Browser, report: Path, shot: Path) -> list[dict[str, Any]]:
    """Open report.html from disk; its images once loaded, a full-page screenshot, no console errors."""
    html = report.read_text()
    # Self-contained: everything it loads is inside it.
    assert not re.findall(r'(?:src|href)="(?!data:)', html), re.findall(r'(?:src|href)="[^"]{0,40}', html)
    browser.console_errors()  # drop what earlier pages logged
    browser.open(report.as_uri())
    browser.wait_for(
        lambda: browser.driver.execute_script("return document.readyState") == "complete", 30, "page load"
    )
    images: list[dict[str, Any]] = browser.driver.execute_script(IMAGES_JS)
    browser.screenshot(shot)
    assert browser.console_errors() == []
    return images


def _rendered(images: list[dict[str, Any]]) -> bool:
    """Every chart decoded, with a real size, embedded, and drawn: axes, labels and lines show as ink."""
    return bool(images) and all(
        i["complete"]
        and i["width"] >= 400
        and i["height"] >= 300
        and i["src"] == "data:image/png;base64,"
        and i["inked"] > 0.01
        and i["colours"] >= 16
        for i in images
    )


def test_report_html_opens_in_a_browser_with_every_chart_and_the_same_tables(
    runs: dict[str, Path], browser: Browser, tmp_path: Path
) -> None:
    out = tmp_path / "report"  # its own: test_compare_shows_the_change rewrites the run's report/
    argv = [DISTINFER, "report", str(runs["run"]), "--out", str(out)]
    subprocess.run(argv, check=True, capture_output=True)
    images = _open_in_browser(browser, out / "report.html", tmp_path / "report.png")
    charts = {
        "throughput_vs_replicas",
        "latency_vs_concurrency",
        "ttft_tpot_distribution",
        "pareto_front",
        "node_utilisation",
    }
    assert sorted(i["alt"] for i in images) == sorted(charts), images
    assert _rendered(images), images  # decoded PNGs with a real size, not broken-image icons
    markdown = (out / "report.md").read_text()
    for first in ("Inference Nodes", "Scenario"):  # the guide's tables, then node/details/config tables
        in_page = browser.driver.execute_script(TABLE_JS, first)
        in_md = [[c.replace("<br>", "\n") for c in row.values()] for row in _table(markdown, first)]
        assert in_page == in_md[: len(in_page)] and in_page, first
    headings = [h.text for h in browser.find_all("h1, h2")]
    for heading in ("Resource utilisation per node (steady window)", "Run provenance", "Charts"):
        assert heading in headings, headings
    assert "1. Scalability results for batch size of 3 per replica" in headings
    body = browser.find("body").text
    provenance = json.loads((out / "results.json").read_text())["provenance"]
    assert f"Python {provenance['python']}" in body and "disk full" in body


def test_compared_report_html_shows_the_two_runs_side_by_side(
    runs: dict[str, Path], browser: Browser, tmp_path: Path
) -> None:
    run = runs["run"]
    other = tmp_path / "other"
    shutil.copytree(run, other)
    shutil.rmtree(other / "report")
    shutil.rmtree(other / "scenarios" / "r2")  # the other run had one scenario only
    out = tmp_path / "compared"
    argv = [DISTINFER, "report", str(run), "--compare", str(other), "--out", str(out)]
    subprocess.run(argv, check=True, capture_output=True)
    images = _open_in_browser(browser, out / "report.html", tmp_path / "report-compare.png")
    assert _rendered(images), images
    side = browser.driver.execute_script(
        "const t = document.querySelector('table.figures'); return [[...t.querySelectorAll('th')]"
        ".map(th => th.innerText), [...t.querySelectorAll('tbody tr')].map(tr => tr.querySelectorAll('img')"
        ".length)]"
    )
    assert side == [[run.name, other.name], [2, 2, 2, 2, 2]], side  # each chart beside the other run's
    headings = [h.text for h in browser.find_all("h2, h3, h4")]
    assert f"Compared with {other}" in headings and f"This run: {run.name}" in headings
    assert f"Other run: {other}" in headings
    assert headings.count("1. Scalability results for batch size of 3 per replica") == 3  # main, this, other
    assert len(browser.driver.execute_script(TABLE_JS, "Inference Nodes")) == 2  # this run: r1, r2
    assert sorted(p.name for p in (out / "compare").glob("*.png")) == sorted(
        f"{name}.png"
        for name in (
            "throughput_vs_replicas",
            "latency_vs_concurrency",
            "ttft_tpot_distribution",
            "pareto_front",
            "node_utilisation",
        )
    )


def _copy_run(runs: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(runs["run"], copy, ignore=shutil.ignore_patterns("report"))
    return copy


def _report_fails(run: Path) -> str:
    result = subprocess.run([DISTINFER, "report", str(run)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout
    assert not (run / "report" / "report.md").exists()
    return " ".join(result.stderr.split())


@pytest.mark.parametrize("where", ["summary", "run", "node"])
def test_a_results_file_of_an_unknown_schema_version_is_refused_by_name(
    runs: dict[str, Path], tmp_path: Path, where: str
) -> None:
    run = _copy_run(runs, tmp_path)
    path = {
        "summary": run / "scenarios" / "r1" / "summary.json",
        "run": run / "run.json",
        "node": run / "scenarios" / "r1" / "nodes" / f"{HOST}.jsonl",
    }[where]
    if where == "node":
        first, *rest = path.read_text().splitlines()
        path.write_text("\n".join([json.dumps({**json.loads(first), "schema_version": 99}), *rest]) + "\n")
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))
    message = _report_fails(run)
    assert "schema_version 99" in message and path.name in message and "reads results of schema" in message


def test_a_renamed_field_stops_the_report_instead_of_becoming_a_dash(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy_run(runs, tmp_path)
    path = run / "scenarios" / "r2" / "summary.json"
    summary = json.loads(path.read_text())
    summary["metrics"]["e2e_ms"] = summary["metrics"].pop("e2el_ms")  # what a rename in a writer does
    path.write_text(json.dumps(summary))
    message = _report_fails(run)
    assert "summary.json does not fit the results schema" in message
    assert "metrics.e2el_ms: Field required" in message and "metrics.e2e_ms: Extra inputs" in message


def test_files_of_the_first_layout_without_versions_still_read(runs: dict[str, Path], tmp_path: Path) -> None:
    """Schema version 1: run.json and node files had no version, summaries said 1 and had no TTFT split."""
    run = _copy_run(runs, tmp_path)
    provenance = json.loads((run / "run.json").read_text())
    del provenance["schema_version"]
    (run / "run.json").write_text(json.dumps(provenance))
    for summary_path in run.glob("scenarios/*/summary.json"):
        summary = json.loads(summary_path.read_text())
        summary["schema_version"] = 1
        summary.pop("ttft_split", None)
        summary_path.write_text(json.dumps(summary))
    subprocess.run([DISTINFER, "report", str(run)], check=True, capture_output=True, timeout=300)
    text = (run / "report" / "report.md").read_text()
    assert re.search(r"\| (yes|NO) \| r1 \|", text) and re.search(r"\| (yes|NO) \| r2 \|", text), text


def test_where_the_time_goes_splits_each_scenarios_ttft_median_into_legs(runs: dict[str, Path]) -> None:
    report = (runs["run"] / "report" / "report.md").read_text()
    section = report[report.index("## Where the time goes") :].split("\n## ")[0]
    for name in SCENARIOS:
        summary = json.loads((runs["run"] / "scenarios" / name / "summary.json").read_text())
        rows = _table(section[section.index(f"### {name}\n") :], "Leg")[:6]
        assert [r["Leg"] for r in rows] == [
            "client send → ingress",
            "ingress → model replica (Serve routing and queue)",
            "replica → engine start (prompt, engine queue)",
            "engine start → first token (prefill)",
            "first token → client read (stream back)",
            "**TTFT (client)**",
        ]
        shares = [float(r["Its share of the TTFT P50 (ms)"]) for r in rows[:5]]
        ttft_p50 = summary["metrics"]["ttft_ms"]["p50"]
        assert abs(sum(shares) - ttft_p50) < 1.0  # the legs add up to the client's TTFT median
        assert rows[5]["Its share of the TTFT P50 (ms)"] == f"**{ttft_p50:,.2f}** (TTFT P50 {ttft_p50:,.2f})"
        assert 15.0 < shares[3] < 30.0  # prefill: the synthetic engine's ttft_ms (20)
    document = json.loads((runs["run"] / "report" / "results.json").read_text())
    for scenario in document["scenarios"]:
        legs = scenario["ttft_split"]["legs"]
        assert sum(leg["at_median_ms"] for leg in legs) == pytest.approx(scenario["median_ttft_ms"], abs=1e-6)
        assert scenario["ttft_leg_prefill_ms"] == legs[3]["at_median_ms"]
