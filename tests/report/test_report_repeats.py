"""`--repeat N` on real runs: N scenario folders, the report's confidence intervals recomputed from their
summaries, and `--compare` naming a difference beyond the run-to-run noise (four times the users) and
none where there is nothing to tell (the same run on both sides)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from synthetic_server import DISTINFER, FINISHED, synthetic_server

from distinfer.report.stats import t975


def _repeat(url: str, out: Path, users: int) -> None:
    argv = [
        DISTINFER, "bench", "run", "--url", url, "--model", "synthetic", "--users", str(users),
        "--duration", "3", "--warmup", "1", "--max-tokens", "8", "--api", "completions",
        "--scenario", "s", "--repeat", "3", "--out", str(out / "scenarios" / "s"),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode in FINISHED, result.stderr[-3000:]


def _rows(markdown: str, first: str) -> list[dict[str, str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def test_repeats_get_confidence_intervals_and_compare_names_real_differences(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    with synthetic_server(tmp_path) as server:
        _repeat(server.url, large, users=8)
        _repeat(server.url, small, users=2)
    folders = sorted(p.name for p in (large / "scenarios").iterdir())
    assert folders == ["s-rep1", "s-rep2", "s-rep3"]
    summaries = [json.loads((large / "scenarios" / f / "summary.json").read_text()) for f in folders]
    assert [s["scenario"]["repetition"] for s in summaries] == [
        {"of": "s", "index": i, "count": 3} for i in (1, 2, 3)
    ]
    subprocess.run(
        [DISTINFER, "report", str(large), "--compare", str(small)], check=True, capture_output=True
    )
    report = (large / "report" / "report.md").read_text()
    (row,) = _rows(report, "Scenario")  # the repeats table comes first of those starting with Scenario
    assert row["Runs"] == "3"
    rps = [s["metrics"]["request_throughput"] for s in summaries]
    half = t975(2) * statistics.stdev(rps) / 3**0.5
    assert row["RPS"] == f"{statistics.mean(rps):,.2f} ± {half:,.2f}"
    document = json.loads((large / "report" / "results.json").read_text())
    assert document["repeats"]["s"]["request_throughput"]["ci95_half_width"] == pytest.approx(half)
    noise = {n["figure"]: n for n in document["compare"]["noise"]}
    # Four times the users on a server far from full: four times the requests/s, far beyond the noise.
    assert noise["request_throughput"]["beyond_noise"] == "yes"
    assert noise["request_throughput"]["delta_percent"] > 150
    assert "## Compared with" in report and "### Differences beyond run-to-run noise" in report
    # The same runs on both sides: no difference to find.
    twin = tmp_path / "twin"
    shutil.copytree(large, twin)
    subprocess.run([DISTINFER, "report", str(large), "--compare", str(twin)], check=True, capture_output=True)
    same = json.loads((large / "report" / "results.json").read_text())["compare"]["noise"]
    assert same and all(n["beyond_noise"] == "no" for n in same), same
