"""`distinfer bench sweep`: every scenario written atomically; a re-run skips the finished ones."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from synthetic_server import DISTINFER, FINISHED

from distinfer.config import ConfigError
from distinfer.results.scenario import load_sweep

REPO = Path(__file__).resolve().parents[2]


def sweep(scenarios: Path, out: Path, url: str) -> subprocess.CompletedProcess[str]:
    cmd = [DISTINFER, "bench", "sweep", "--scenarios", str(scenarios), "--out", str(out), "--url", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_guide_file_holds_the_guides_eight_scenarios():
    specs = load_sweep(REPO / "files/scenarios/guide.yaml", {})
    assert [(s.replicas, s.users_per_replica, s.users) for s in specs] == [
        (r, b, r * b) for b in (32, 256) for r in (1, 2, 3, 4)
    ]
    assert all(s.max_tokens == 256 and s.temperature == 1.0 for s in specs)
    assert len(load_sweep(REPO / "files/scenarios/local.yaml", {})) >= 2


def test_bad_scenarios_file_names_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"scenarios": [{"name": "x", "replicas": 2}]}))
    with pytest.raises(ConfigError, match="needs users, or replicas and users_per_replica"):
        load_sweep(bad, {"url": "http://127.0.0.1:1", "model": "m"})


def test_one_formatter_names_scenario_field_value_and_fix_never_a_pydantic_dump(tmp_path):
    bad = tmp_path / "bad.yaml"
    defaults = {"url": "http://127.0.0.1:1", "model": "m", "duration_s": 5, "slo": "mlperf-gpt"}
    bad.write_text(
        yaml.safe_dump({"defaults": defaults, "scenarios": [{"name": "a", "users": 2, "colour": 1}]})
    )
    with pytest.raises(ConfigError) as err:
        load_sweep(bad, {})
    message = str(err.value)
    assert message.startswith(f"{bad}: scenario 'a' is not a valid scenario:")
    assert "slo: unknown SLO preset 'mlperf-gpt'; choose one of mlperf-llama2-70b" in message
    assert "colour: Extra inputs are not permitted (got 1); fix: remove `colour`" in message
    assert "allowed here: name, model, url, users" in message
    assert "errors.pydantic.dev" not in message and "validation error for" not in message
    # The file's own shape goes through the same formatter: the entry by index and name.
    shape = tmp_path / "shape.yaml"
    shape.write_text(yaml.safe_dump({"scenarios": [{"name": "b", "users_per_replica": 0}]}))
    with pytest.raises(ConfigError) as err:
        load_sweep(shape, {})
    assert "scenarios[0] ('b').users_per_replica: Input should be greater than or equal to 1 (got 0)" in str(
        err.value
    )
    assert "See files/scenarios/*.yaml for working examples." in str(err.value)


def test_resumed_sweep_skips_finished_scenarios(server, tmp_path):
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(
        yaml.safe_dump(
            {
                "defaults": {
                    "model": server.model,
                    "url": "http://placeholder:1",
                    "max_tokens": 8,
                    "duration_s": 2,
                },
                "scenarios": [
                    {"name": "one", "replicas": 1, "users_per_replica": 2},
                    {"name": "two", "replicas": 2, "users_per_replica": 2},
                ],
            }
        )
    )
    out = tmp_path / "run"
    first = sweep(scenarios, out, server.url)
    assert first.returncode in FINISHED, first.stderr
    assert "ran 2 scenario(s): one, two" in first.stdout
    one, two = out / "scenarios/one", out / "scenarios/two"
    assert json.loads((two / "summary.json").read_text())["scenario"]["users"] == 4
    kept_summary = (one / "summary.json").read_text()
    kept_records = (one / "records.jsonl").read_text()
    (two / "summary.json").unlink()  # as if the sweep had been killed during "two"
    second = sweep(scenarios, out, server.url)
    assert second.returncode in FINISHED, second.stderr
    assert "ran 1 scenario(s): two" in second.stdout
    assert (one / "summary.json").read_text() == kept_summary
    assert (one / "records.jsonl").read_text() == kept_records
    assert (two / "summary.json").exists()
    assert list(two.glob("records.unfinished-*.jsonl")), "the interrupted attempt's records were not kept"
    assert not list(out.rglob(".*.tmp")), "a temporary file was left behind"
    third = sweep(scenarios, out, server.url)
    assert "none (all finished)" in third.stdout
