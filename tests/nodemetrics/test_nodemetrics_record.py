"""`distinfer nodemetrics record` on this machine (no GPU): sane samples, the 'no GPU' note, clean stop."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

DISTINFER = str(Path(sys.executable).with_name("distinfer"))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_until_sigterm_with_a_clear_no_gpu_note(tmp_path):
    out = tmp_path / "node.jsonl"
    proc = subprocess.Popen(
        [DISTINFER, "nodemetrics", "record", "--out", str(out), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline and (not out.exists() or sum(1 for _ in out.open()) < 8):
            time.sleep(0.1)
        lines_before_stop = read(out)  # flushed as taken: readable while it runs
        usage = psutil.Process(proc.pid).cpu_times()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    lines = read(out)
    assert len(lines) >= len(lines_before_stop) >= 8
    start, note, *samples = lines
    assert start["kind"] == "start" and start["cpu_count"] == os.cpu_count() and start["gpu_source"] is None
    assert note["kind"] == "note" and note["source"] == "gpu"
    assert note["message"].startswith("no GPU metrics on this node") and "still recorded" in note["message"]
    assert sum(1 for x in lines if x["kind"] == "note") == 1  # said once, not per sample
    assert f"wrote {len(samples)} samples" in stdout
    for sample in samples:
        assert sample["kind"] == "sample" and sample["host"] == start["host"]
        assert 0.0 <= sample["cpu_percent"] <= 100.0
        assert len(sample["cpu_percent_per_core"]) == os.cpu_count()
        assert 0.0 < sample["mem_percent"] < 100.0
        assert sample["gpus"] == []
        assert "lo" not in sample["net"]
        for rates in sample["net"].values():
            assert rates["rx_bytes_per_s"] >= 0 and rates["tx_bytes_per_s"] >= 0
    times = [s["time"] for s in samples]
    assert all(0.1 < b - a < 1.0 for a, b in itertools.pairwise(times))
    # Cost: CPU seconds per sample (start-up imports included) well under 10 ms = 1% of a core at 1 s.
    startup_and_samples = usage.user + usage.system
    assert startup_and_samples < 3.0


def test_duration_stops_by_itself_and_interval_is_checked(tmp_path):
    out = tmp_path / "node.jsonl"
    result = subprocess.run(
        [DISTINFER, "nodemetrics", "record", "--out", str(out), "--interval", "0.25", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert 3 <= sum(1 for x in read(out) if x["kind"] == "sample") <= 5
    bad = subprocess.run(
        [DISTINFER, "nodemetrics", "record", "--out", str(out), "--interval", "0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--interval 0.0 must be between 0.05 and 3600" in bad.stderr


def test_sampling_costs_under_one_percent_of_a_core_at_one_second(tmp_path):
    """Time the sampler's own work (not start-up) in-process: 20 samples, CPU time each."""
    from distinfer.nodemetrics.sampler import Sampler

    with (tmp_path / "cost.jsonl").open("w") as handle:
        sampler = Sampler(handle, 1.0)
        sampler.start()
        before = time.process_time()
        for _ in range(20):
            sampler.sample()
        per_sample_s = (time.process_time() - before) / 20
        sampler.close()
    assert per_sample_s < 0.01, f"{per_sample_s * 1000:.2f} ms CPU per sample is over 1% of a core at 1 s"


def test_the_bundle_without_pydantic_writes_lines_the_results_schema_reads(tmp_path):
    """What the node_metrics role's `bundle` runtime runs on cluster nodes: only the recorder's own files
    (the package root and nodemetrics/, no results/ package, so no schema check while writing); the report
    reads the lines through the results schema all the same."""
    import distinfer
    from distinfer.results.base import SCHEMA_VERSION
    from distinfer.results.nodes import NodeSample, NodeStart, read_node_lines

    package = Path(distinfer.__file__).parent
    bundle = tmp_path / "lib" / "distinfer"
    (bundle / "nodemetrics").mkdir(parents=True)
    (bundle / "__init__.py").write_text((package / "__init__.py").read_text())
    for source in (package / "nodemetrics").glob("*.py"):
        (bundle / "nodemetrics" / source.name).write_text(source.read_text())
    out = tmp_path / "node.jsonl"
    probe = "import distinfer.nodemetrics.sampler as s; print(s._line_json.__name__)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    checked = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert checked.stdout.strip() == "_plain_json", checked.stderr  # really without the schema
    result = subprocess.run(
        [sys.executable, "-m", "distinfer.nodemetrics", "record", "--out", str(out), "--interval", "0.1",
         "--duration", "0.5"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = read_node_lines(out)
    assert isinstance(lines[0], NodeStart) and lines[0].schema_version == SCHEMA_VERSION
    assert sum(isinstance(line, NodeSample) for line in lines) >= 3
