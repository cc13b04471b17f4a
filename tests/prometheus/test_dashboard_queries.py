"""Every dashboard panel's PromQL against a real Prometheus after a real benchmark, and the report's
server-side figures from it.

Set-up (one module): the session's real local Ray Serve with an app serving `syn` (synthetic engine)
and `tiny` (hf engine, a random tiny Llama); Debian's prometheus and node exporter on free ports; the
Prometheus scraping Ray's metrics export port (Ray Serve's `ray_serve_*`, the engines' `ray_vllm_*`), the
node exporter and a DCGM exporter. There is no GPU here, so the DCGM exporter is
`dcgm_exporter_sample.txt` (a 4x A100 host in dcgm-exporter's format, not captured from a GPU) served
by a small HTTP server that advances its energy counter by its power readings: the GPU panels (every
query naming a `DCGM_` metric) are answered by that fixture, the rest by the real processes. Then a
real `distinfer bench run` against each model.

Checked: every panel's every query answers with at least one series (a misspelt metric name, a Ray name
with `:` or without `ray_`, a label that is not there: all answer nothing); the report asks the same
Prometheus for each scenario's window (engine running, replicas' ongoing requests, queue wait, KV cache
from hf, GPU figures and tokens per joule from the fixture); and with no Prometheus answering it says
so in a line and writes the rest.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures_http import serving_dcgm
from prometheus_run import job, need_binaries, running_node_exporter, running_prometheus

from distinfer.config import parse_models
from distinfer.dashboards.build import all_dashboards
from distinfer.serve.local_ray import free_ports
from httpwait import wait_http_ok

pytestmark = pytest.mark.ray

DISTINFER = str(Path(sys.executable).with_name("distinfer"))
HERE = Path(__file__).parent
HOST = socket.gethostname()
SAMPLE = (HERE / "dcgm_exporter_sample.txt").read_text()
# What Grafana puts for $__rate_interval; long enough to hold the whole benchmark.
RATE_INTERVAL = "2m"


def _panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every target of every panel."""
    return [
        (uid, panel["title"], target["expr"])
        for uid, dashboard in all_dashboards().items()
        for panel in dashboard["panels"]
        for target in panel.get("targets") or []
    ]


@pytest.fixture(scope="module")
def observed(
    ray_serve: Any, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    need_binaries()
    work = tmp_path_factory.mktemp("observed")
    models = parse_models(
        {
            "models": [
                {"name": "syn", "engine": "synthetic", "ttft_ms": 20, "itl_ms": 5,
                 "max_ongoing_requests": 16},
                {"name": "tiny", "engine": "hf", "model": str(tiny_model_dir), "max_ongoing_requests": 4,
                 "max_model_len": 256, "num_cpus": 1},
            ]
        }
    )  # fmt: skip
    app = ray_serve.deploy(models, "observed")
    wait_http_ok(f"{app}/v1/models")  # the proxies know the new route
    metrics_port = ray_serve.local.ports["--metrics-export-port"]
    with running_node_exporter(work) as node_port, serving_dcgm(SAMPLE) as dcgm_port:
        jobs = [job("ray", metrics_port, HOST), job("node", node_port, HOST), job("dcgm", dcgm_port, HOST)]
        with running_prometheus(work, jobs) as prometheus:
            run = work / "run"
            # tiny's requests are long enough (48 tokens) that the engine, not the replica's own
            # handling, holds them most of the time: its once-a-second gauges catch them at work.
            for model, users, tokens in (("syn", 4, 16), ("tiny", 3, 48)):
                _bench(app, model, users, run / "scenarios" / model, prometheus, tokens)
            yield {"prometheus": prometheus, "run": run, "work": work}


@pytest.fixture(scope="module")
def observed_vllm(observed: dict[str, Any], vllm_app: str) -> dict[str, Any]:
    """A benchmark of the session's vLLM replica (tests/conftest.py `vllm_app`) under the same Prometheus
    (its own run folder: the report tests above read only syn and tiny)."""
    run = observed["work"] / "vllm-run"
    _bench(vllm_app, "smollm2", 2, run / "scenarios" / "smollm2", observed["prometheus"], 16)
    return {**observed, "run": run}


def _bench(app: str, model: str, users: int, out: Path, prometheus: str, tokens: int) -> None:
    argv = [
        DISTINFER, "bench", "run", "--url", app, "--model", model, "--users", str(users), "--duration", "20",
        "--warmup", "2", "--max-tokens", str(tokens), "--api", "completions", "--scenario", model,
        "--out", str(out),
        "--meta", f"nodes={HOST}", "--meta", f"prometheus={prometheus}",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 4), result.stderr[-3000:]  # 4: INVALID on a busy machine, still measured


def _series(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def test_every_panel_query_answers_after_a_benchmark(observed: dict[str, Any]) -> None:
    queries = _panel_queries()
    assert len(queries) >= 20 and {uid for uid, _, _ in queries} == {"distinfer-nodes", "distinfer-serving"}
    pending = {(uid, title, expr.replace("$__rate_interval", RATE_INTERVAL)) for uid, title, expr in queries}
    # Ray hands its metrics to the export port every few seconds: wait for them, then none may be empty.
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        pending = {q for q in pending if not _series(observed["prometheus"], q[2])}
        if pending:
            time.sleep(3)
    assert not pending, "panels whose query answers nothing:\n" + "\n".join(map(str, sorted(pending)))
    gpu = [expr for _, _, expr in queries if "DCGM_" in expr]
    assert len(gpu) == 4  # the GPU panels, answered by the DCGM exporter sample (no GPU here)


def test_the_engines_export_what_they_did(observed: dict[str, Any]) -> None:
    """The exported counters agree with the benchmark's own records (what a renamed metric would lose)."""
    prometheus, run = observed["prometheus"], observed["run"]
    for model in ("syn", "tiny"):
        records = [
            json.loads(line)
            for line in (run / "scenarios" / model / "records.jsonl").read_text().splitlines()
        ]
        done = sum(r["completion_tokens"] or 0 for r in records if r["ok"])
        expr = f'sum(ray_vllm_generation_tokens_total{{model_name="{model}"}})'
        deadline = time.monotonic() + 60
        exported = 0.0
        while time.monotonic() < deadline:
            series = _series(prometheus, expr)
            exported = float(series[0]["value"][1]) if series else 0.0
            if exported >= done:
                break
            time.sleep(2)
        # At least the benchmark's tokens (the probe request's and the warm-up's are counted as well).
        assert done <= exported <= done + 400, (model, done, exported)
    kv = _series(prometheus, 'max_over_time(ray_vllm_kv_cache_usage_perc{model_name="tiny"}[5m])')
    assert kv and 0 < float(kv[0]["value"][1]) <= 1  # the hf engine held tokens in its cache under load


def test_vllms_own_metrics_answer_every_engine_panel(observed_vllm: dict[str, Any]) -> None:
    """The engine panels read vLLM's own export (its Ray stat logger), not an imitation: every
    `ray_vllm_*` series a panel names answers for the vLLM model, carrying vLLM's own `ReplicaId` tag
    (distinfer's export for the other engines has none), and its token counter holds the benchmark's."""
    prometheus, run = observed_vllm["prometheus"], observed_vllm["run"]
    names = {name for _, _, expr in _panel_queries() for name in re.findall(r"ray_vllm_[a-z_]+", expr)}
    assert len(names) >= 6, names
    pending = set(names)
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if not _series(prometheus, f'{n}{{model_name="smollm2"}}')}
        if pending:
            time.sleep(3)
    assert not pending, f"vLLM exports none of {sorted(pending)}"
    lines = (run / "scenarios" / "smollm2" / "records.jsonl").read_text().splitlines()
    done = sum(r["completion_tokens"] or 0 for r in map(json.loads, lines) if r["ok"])
    expr = 'sum by (ReplicaId) (ray_vllm_generation_tokens_total{model_name="smollm2"})'
    deadline = time.monotonic() + 60
    while True:
        (series,) = _series(prometheus, expr)
        if float(series["value"][1]) >= done or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert series["metric"].get("ReplicaId"), series  # vLLM's own tag: its stat logger made it
    assert float(series["value"][1]) >= done > 0, (series, done)


def test_the_report_gives_vllms_own_ttft_beside_the_clients(observed_vllm: dict[str, Any]) -> None:
    run = observed_vllm["run"]
    time.sleep(6)  # the window's last samples scraped
    result = subprocess.run([DISTINFER, "report", str(run)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (run / "report" / "report.md").read_text()
    assert "Served by: vllm 0.32.0 (cpu)" in report
    section = report[report.index("## The engine's own latency") :].split("\n## ")[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| smollm2 |")]
    engine, client, hits = (c.strip() for c in row.strip("|").split("|")[1:])
    engine_p50, engine_p99 = (float(v.replace(",", "")) for v in engine.split(" / "))
    client_p50, _ = (float(v.replace(",", "")) for v in client.split(" / "))
    assert 0 < engine_p50 <= engine_p99 and client_p50 > 0, row
    # vLLM looked every prompt up in its prefix cache (its queries counter); the benchmark's prompts
    # share no whole block, so Ray never exported a hits series: the report says 0 %, not "-".
    assert hits != "-" and 0 <= float(hits) <= 100, row


def _server_rows(report: str) -> dict[str, dict[str, str]]:
    section = report[report.index("## Server-side figures") :].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]
    return {row["Scenario"]: row for row in rows}


def _pair(cell: str) -> tuple[float, float]:
    avg, peak = (float(part.replace(",", "")) for part in cell.split(" / "))
    return avg, peak


def test_the_report_asks_prometheus_for_each_scenarios_window(observed: dict[str, Any]) -> None:
    run = observed["run"]
    time.sleep(6)  # the last window's last samples scraped
    result = subprocess.run([DISTINFER, "report", str(run)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _server_rows((run / "report" / "report.md").read_text())
    assert sorted(rows) == ["syn", "tiny"]
    for name, row in rows.items():
        running_avg, running_max = _pair(row["Engine running avg / max"])
        waiting_avg, waiting_max = _pair(row["Engine waiting avg / max"])
        assert 0 <= running_avg <= running_max <= 16 and 0 <= waiting_avg <= waiting_max, (name, row)
        # The engine's gauges of the window reached the report: sampled once a second, a request is
        # caught running or waiting (the tiny hf model runs its 16 tokens so fast that on a loaded
        # machine its requests can spend the sampled moments waiting for the next batch step).
        assert running_max > 0 or waiting_max > 0, (name, row)
        ongoing_avg, ongoing_max = _pair(row["Ongoing per replica avg / max"])
        assert 0 < ongoing_avg <= ongoing_max, (name, row)
        assert re.fullmatch(r"[\d.,]+ / [\d.,]+", row["Serve queue wait avg / P95 (ms)"]), row
        util_avg, util_max = _pair(row["GPU util avg / max (%)"])
        assert util_avg == pytest.approx((93 + 97 + 88 + 95) / 4, abs=0.1) and util_max == 97  # the sample's
        assert row["GPU energy (J)"].endswith("(dcgm)")
    kv_avg, _ = _pair(rows["tiny"]["KV cache avg / max (%)"])
    assert kv_avg > 0
    assert rows["syn"]["KV cache avg / max (%)"] == "- / -"  # the synthetic engine has no KV cache
    document = json.loads((run / "report" / "results.json").read_text())
    for scenario in document["scenarios"]:
        figures = scenario["server_figures"]
        # Energy = the sample's 4 GPUs' power over the window (the fixture advances the counter so).
        watts = 312.457 + 334.912 + 298.104 + 321.66
        assert figures["energy_j"] == pytest.approx(watts * figures["window_s"], rel=0.15)
        tokens = scenario["output_throughput"] * scenario["duration"]
        assert figures["tokens_per_joule"] == pytest.approx(tokens / figures["energy_j"], rel=1e-6)


def test_without_an_answering_prometheus_the_report_says_so_and_goes_on(observed: dict[str, Any]) -> None:
    (closed,) = free_ports(1)
    out = observed["work"] / "report-without"
    argv = [
        DISTINFER,
        "report",
        str(observed["run"]),
        "--prometheus",
        f"http://127.0.0.1:{closed}",
        "--out",
        str(out),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert f"Server-side figures left out: no Prometheus answered at http://127.0.0.1:{closed}" in report
    assert "## 1. Scalability results" in report and "## Where the time goes" in report
