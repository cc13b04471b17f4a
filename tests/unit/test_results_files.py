"""The results files' one reader and writer (python/distinfer/results/base.py): each file names itself,
writes itself atomically and reads itself back; a version it does not know is refused with the file
named; a capacity.json or certificate.json written before versions were checked still reads; a
status.jsonl line is checked against its model; a scenario's deployment facts read typed from its
`meta` labels and write back to the same strings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from distinfer.results.availability import STATUS_FILE, StatusLine, read_status
from distinfer.results.base import ResultsFile, ResultsSchemaError
from distinfer.results.capacity import CapacityResult
from distinfer.results.certificate import Certificate, Fidelity
from distinfer.results.run import Provenance
from distinfer.results.scenario import CapacitySearch, Deployment, ScenarioSpec
from distinfer.results.slo import PRESETS
from distinfer.results.summary import Summary

SPEC = {"name": "s", "model": "m", "url": "http://127.0.0.1:1", "users": 2, "duration_s": 2.0}


def capacity_result() -> CapacityResult:
    return CapacityResult(
        name="c", model="m", url="http://x", replicas=1, users_per_replica=4,
        slo=next(iter(PRESETS.values())), search=CapacitySearch.model_validate({}), converged=False,
        capacity_rate=None, lowest_failing_rate=None, limited_by_load_generator=False, at_capacity=None,
        note="", steps=[],
    )  # fmt: skip


def certificate() -> Certificate:
    none = dict.fromkeys(
        ["ttft_p50_ms", "truth_ttft_p50_ms", "ttft_p99_ms", "truth_ttft_p99_ms", "tpot_p50_ms",
         "truth_tpot_p50_ms", "tpot_p99_ms", "truth_tpot_p99_ms"]
    )  # fmt: skip
    return Certificate(
        created=1.0, target_events_per_s=100.0, users=1, itl_ms=10.0, ttft_ms=50.0, max_tokens=8,
        measured_events_per_s=90.0, fidelity=Fidelity(requests=0, **none), valid=True,
        certified_events_per_s=None, note="n",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "name"),
    [(Summary, "summary.json"), (Provenance, "run.json"), (ScenarioSpec, "scenario.json"),
     (CapacityResult, "capacity.json"), (Certificate, "certificate.json")],
)  # fmt: skip
def test_each_file_names_itself(model: type[ResultsFile], name: str, tmp_path: Path) -> None:
    assert name == model.DEFAULT_FILE
    assert model.file_in(tmp_path) == tmp_path / name
    assert model.load_file(tmp_path) is None  # no file: None, not an error


@pytest.mark.parametrize("make", [capacity_result, certificate, lambda: ScenarioSpec.model_validate(SPEC)])
def test_a_file_reads_back_what_it_wrote(make: Callable[[], ResultsFile], tmp_path: Path) -> None:
    written = make()
    path = written.save_file(tmp_path)
    assert path.name == type(written).DEFAULT_FILE and not list(tmp_path.glob(".*.tmp"))
    assert type(written).load_file(tmp_path) == written


@pytest.mark.parametrize("make", [capacity_result, certificate])
def test_a_file_without_a_version_reads_and_an_unknown_one_is_refused(
    make: Callable[[], ResultsFile], tmp_path: Path
) -> None:
    written = make()
    data = written.model_dump(mode="json")
    path = tmp_path / type(written).DEFAULT_FILE
    path.write_text(json.dumps({k: v for k, v in data.items() if k != "schema_version"}))
    assert type(written).load_file(tmp_path) == written  # version 1: the layout before versions
    path.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ResultsSchemaError, match=r"schema_version 99.*reads results of schema versions 1"):
        type(written).load_file(tmp_path)


def test_the_deployment_reads_typed_from_meta_and_writes_the_same_strings() -> None:
    meta = {
        "nodes": "node1, node2", "devices": "Dell PowerEdge XE8545", "gpus": "4xNVIDIA A100 SXM 80GB",
        "replicas": "2", "platform": "local", "prometheus": "http://h:24090", "users_per_replica": "x",
        "run_id": "r1",
    }  # fmt: skip
    spec = ScenarioSpec.model_validate({**SPEC, "meta": meta})
    deployment = spec.deployment
    assert deployment.nodes == ["node1", "node2"] and deployment.replicas == 2
    assert deployment.gpus == "4xNVIDIA A100 SXM 80GB" and deployment.users_per_replica is None
    assert deployment.labels == {"run_id": "r1"}
    assert Deployment.from_meta(deployment.to_meta()) == deployment
    assert ScenarioSpec.model_validate(SPEC).deployment == Deployment()


def test_status_lines_read_through_their_model(tmp_path: Path) -> None:
    polls = [
        StatusLine(time=1.0, ok=True, models=[{"name": "m", "running_replicas": 1, "message": ""}]),
        StatusLine(time=2.0, ok=False, error="HTTP 401: no key"),
    ]
    path = tmp_path / STATUS_FILE
    path.write_text("".join(p.model_dump_json(exclude_none=True) + "\n" for p in polls) + '{"time": 3, "o')
    assert read_status(path) == [p.model_dump(exclude_none=True) for p in polls]  # the torn line passed over
    path.write_text('{"time": 1.0, "ok": true, "replicas": 2}\n')
    with pytest.raises(
        ResultsSchemaError, match=r"status.jsonl:1 does not fit the results schema \(StatusLine"
    ):
        read_status(path)
