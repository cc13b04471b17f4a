"""A benchmark pointed at the wrong place fails fast; results that are never wrong.

Against real servers (`distinfer serve --bare`, synthetic engine) and real file systems: before any
load, one probe request finds an unreachable URL, an unknown model, a missing or wrong API key,
and the results directory is checked (read-only and full tmpfs mounts); during a run, failing
requests back off; a run whose requests all fail exits non-zero; a disk that fills mid-run leaves
no summary, so a resumed sweep runs that scenario again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from synthetic_server import DISTINFER, FINISHED, SyntheticServer, free_port, stop_group, synthetic_server

from distinfer.results.records import load_records

KEY = "sk-test-" + os.urandom(4).hex()


def bench(
    url: str, model: str, out: Path, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [DISTINFER, "bench", "run", "--url", url, "--model", model, "--out", str(out),
           "--users", "2", "--duration", "3", "--max-tokens", "4", *args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DISTINFER_API_KEY"}
    if key is not None:
        env["DISTINFER_API_KEY"] = key
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def truth_lines(server: SyntheticServer) -> int:
    path = server.truth_log
    return len(path.read_text().splitlines()) if path.exists() else 0


def assert_refused_before_load(result: subprocess.CompletedProcess[str], out: Path, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert not (out / "records.jsonl").exists(), "load started although the probe failed"
    assert not (out / "summary.json").exists()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticServer]:
    with synthetic_server(tmp_path_factory.mktemp("keyed"), api_key=KEY) as running:
        yield running


def test_unreachable_url_is_refused_at_once(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = bench(url, "synthetic", tmp_path / "out")
    assert_refused_before_load(result, tmp_path / "out", f"cannot reach {url}", "Fix --url")
    assert time.monotonic() - started < 30


def test_unknown_model_is_refused_naming_the_served_ones(server, tmp_path):
    before = truth_lines(server)
    result = bench(server.url, "no-such-model", tmp_path / "out")
    assert_refused_before_load(
        result, tmp_path / "out", "model 'no-such-model' is not served", "'synthetic'", "Fix --model"
    )
    assert truth_lines(server) == before  # the probe never reached the engine


def test_a_path_without_the_api_is_refused(server, tmp_path):
    result = bench(f"{server.url}/some/app", server.model, tmp_path / "out")
    assert_refused_before_load(
        result, tmp_path / "out", "HTTP 404", "no OpenAI API at that path", "Fix --url"
    )


def test_missing_or_wrong_api_key_is_refused_and_the_right_one_runs(keyed, tmp_path):
    missing = bench(keyed.url, keyed.model, tmp_path / "missing")
    assert_refused_before_load(
        missing, tmp_path / "missing", "refused the API key", "no key (none was given)", "--api-key"
    )
    wrong = bench(keyed.url, keyed.model, tmp_path / "wrong", key="sk-wrong")
    assert_refused_before_load(wrong, tmp_path / "wrong", "refused the API key", "the key sent", "--api-key")
    assert "sk-wrong" not in wrong.stderr
    right = bench(keyed.url, keyed.model, tmp_path / "right", key=KEY)
    assert right.returncode in FINISHED, right.stderr[-2000:]
    assert all(r.ok for r in load_records(tmp_path / "right" / "records.jsonl"))


def test_a_prompt_the_model_cannot_take_is_refused_by_the_probe(tmp_path):
    with synthetic_server(tmp_path, max_model_len=64) as small:
        result = bench(small.url, small.model, tmp_path / "out", "--max-tokens", "100")
    assert_refused_before_load(result, tmp_path / "out", "max_tokens=100", "64-token limit", "--max-tokens")


def test_a_server_gone_mid_run_gets_backoff_not_a_flood_and_a_nonzero_exit(tmp_path):
    out = tmp_path / "gone"
    with synthetic_server(tmp_path) as doomed:
        cmd = [DISTINFER, "bench", "run", "--url", doomed.url, "--model", doomed.model, "--out", str(out),
               "--users", "4", "--duration", "8", "--warmup", "3", "--max-tokens", "4"]  # fmt: skip
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            records = out / "records.jsonl"
            deadline = time.monotonic() + 90
            while not (records.exists() and records.stat().st_size) and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            assert doomed.process is not None
            stop_group(doomed.process)  # the server goes away during the warm-up
            _, stderr = proc.communicate(timeout=120)
        finally:
            stop_group(proc)  # type: ignore[arg-type]
    # 6: the server stopped answering and never came back (it wins over 3, nothing succeeded)
    assert proc.returncode == 6, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["completed"] == 0 and not summary["valid"]
    assert summary["availability"]["endpoint_lost_at_s"] is not None, summary["availability"]
    assert "FAULTS:" in stderr and "stopped answering" in stderr
    assert any("no request succeeded" in r for r in summary["invalid_reasons"])
    assert "INVALID: no request succeeded" in stderr
    failed = [r for r in load_records(records) if not r.ok]
    assert failed and {r.error_kind for r in failed} <= {"connect", "read", "incomplete"}
    # 4 users for ~7.5 s: backing off from 0.1 s (doubling) is ~6 tries each; spinning was thousands.
    assert len(failed) <= 60, f"{len(failed)} failing requests: the users did not back off"


# ---- the results directory ----


@contextlib.contextmanager
def tmpfs(size: str, *options: str) -> Iterator[Path]:
    """A real small file system (root only); skips where mounting is not permitted."""
    point = Path(tempfile.mkdtemp(prefix="di-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def test_a_read_only_results_directory_is_refused_before_any_load(server, tmp_path):
    before = truth_lines(server)
    with tmpfs("1m", "ro") as readonly:
        result = bench(server.url, server.model, readonly / "run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot create the results directory" in result.stderr and "Read-only file system" in result.stderr
    assert truth_lines(server) == before
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = bench(server.url, server.model, blocker / "run")
    assert result.returncode == 2 and "cannot create the results directory" in result.stderr
    assert "choose a writable --out" in result.stderr


def test_a_full_results_directory_is_refused_before_any_load(server):
    before = truth_lines(server)
    with tmpfs("2m") as small:
        result = bench(server.url, server.model, small / "run")
        assert result.returncode == 2, result.stderr[-2000:]
        assert "MiB free, and this scenario needs about" in result.stderr
        assert "free some space or choose another --out" in result.stderr
        assert not (small / "run" / "records.jsonl").exists()
    assert truth_lines(server) == before


def _fill(directory: Path) -> Path:
    """Write zeros until the file system is full, as another program would."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def test_a_disk_that_fills_mid_run_leaves_no_summary_and_the_sweep_resumes_it(server, tmp_path):
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(
        yaml.safe_dump(
            {
                "defaults": {"model": server.model, "url": server.url, "max_tokens": 8},
                "scenarios": [
                    {"name": "one", "users": 2, "duration_s": 2},
                    {"name": "two", "users": 4, "duration_s": 6},
                ],
            }
        )
    )
    with tmpfs("24m") as disk:
        out = disk / "run"
        cmd = [DISTINFER, "bench", "sweep", "--scenarios", str(scenarios), "--out", str(out)]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            records = out / "scenarios" / "two" / "records.jsonl"
            deadline = time.monotonic() + 90
            while not (records.exists() and records.stat().st_size) and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            filler = _fill(disk)
            started = time.monotonic()
            _, stderr = proc.communicate(timeout=60)
        finally:
            stop_group(proc)  # type: ignore[arg-type]
        assert proc.returncode == 5, stderr[-3000:]
        assert time.monotonic() - started < 20, "the load went on after the disk filled"
        assert "could not write records" in stderr and "No space left on device" in stderr, stderr[-3000:]
        assert "a resumed sweep runs it again" in stderr
        assert (out / "scenarios" / "one" / "summary.json").exists()
        assert not (out / "scenarios" / "two" / "summary.json").exists()
        filler.unlink()
        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert resumed.returncode in FINISHED, resumed.stderr[-3000:]
        assert "ran 1 scenario(s): two" in resumed.stdout
        assert (out / "scenarios" / "two" / "summary.json").exists()
