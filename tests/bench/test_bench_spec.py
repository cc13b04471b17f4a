"""`distinfer bench run --spec`: a scenario given as JSON (what the benchmark role passes, from the
plan), flags on top; the API key from a file; no key in anything the run writes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from synthetic_server import FINISHED, SyntheticServer, synthetic_server

DISTINFER = str(Path(sys.executable).with_name("distinfer"))
KEY = "dk-spec-test-0123456789abcdef"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticServer]:
    with synthetic_server(tmp_path_factory.mktemp("secured"), api_key=KEY) as running:
        yield running


def bench(spec: dict[str, object], out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [DISTINFER, "bench", "run", "--spec", "-", "--out", str(out), *flags]
    return subprocess.run(argv, input=json.dumps(spec), capture_output=True, text=True, timeout=300)


def spec_for(server: SyntheticServer) -> dict[str, object]:
    return {
        "name": "from-spec",
        "model": server.model,
        "url": server.url,
        "users": 2,
        "duration_s": 3,
        "max_tokens": 4,
        "meta": {"replicas": "1", "platform": "local"},
    }


def written(out: Path) -> str:
    return "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())


def test_a_spec_on_stdin_runs_with_the_key_from_a_file(secured: SyntheticServer, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    out = tmp_path / "run"
    proc = bench(
        spec_for(secured), out, "--api-key-file", str(key_file), "--meta", "run_id=r1", "--duration", "4"
    )
    assert proc.returncode == 0, proc.stderr
    scenario = json.loads((out / "scenario.json").read_text())
    assert scenario["name"] == "from-spec" and scenario["duration_s"] == 4  # the flag overrides the spec
    assert scenario["meta"] == {"replicas": "1", "platform": "local", "run_id": "r1"}
    assert scenario["replicas"] == 1
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["completed"] > 0 and metrics["failed"] == 0, metrics
    assert KEY not in written(out) and KEY not in proc.stdout + proc.stderr


def test_a_key_on_the_command_line_is_redacted_in_the_provenance(
    secured: SyntheticServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    out = run_dir / "scenarios" / "s"  # a run folder's scenario: the run's provenance is written beside
    proc = bench(spec_for(secured), out, "--api-key", KEY)
    assert proc.returncode in FINISHED, proc.stderr
    command = json.loads((run_dir / "run.json").read_text())["command"]
    assert command[command.index("--api-key") + 1] == "REDACTED", command
    assert KEY not in written(run_dir)


def test_without_the_key_the_probe_refuses_before_any_load(secured: SyntheticServer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = bench(spec_for(secured), out)
    assert proc.returncode == 2 and "API key" in proc.stderr, proc.stderr
    assert not (out / "records.jsonl").exists()


def test_a_spec_missing_what_a_run_needs_is_refused_before_any_load(tmp_path: Path) -> None:
    proc = bench({"model": "m", "users": 1}, tmp_path / "run")
    assert proc.returncode == 2 and "--url" in proc.stderr and "--duration" in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "records.jsonl").exists()
