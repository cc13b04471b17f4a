"""The report's files for fixed runs, byte for byte as `distinfer report` wrote them before its rows
were typed (issue 21). golden/runs holds real runs made as tests/report makes them (a scenario that never
finished, one the saturation guard flagged, node samples with a host that failed to record, repeats), their
records thinned to keep them small; golden/expected.json what the report wrote for them, by case and
file. report.html carries the charts inline: their images are left out of the comparison, the rest of
the page is not.

`PYTHONPATH=python python tests/report/test_report_golden.py` writes golden/expected.json again, from
the code on PYTHONPATH: only for a change meant to alter the report.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from distinfer.bench.capacity import CapacityResult, CapacityStep
from distinfer.report.blocks import to_markdown
from distinfer.report.goodput import rejudge
from distinfer.report.html import to_html
from distinfer.report.prometheus import Pair, ServerFigures
from distinfer.report.render import ServerSection, report_blocks, write_report
from distinfer.results.availability import Availability, ReplicaCourse
from distinfer.results.load import load_run
from distinfer.results.slo import parse_slo

GOLDEN = Path(__file__).with_name("golden")
EXPECTED = GOLDEN / "expected.json"
# case: (run, the run compared with, --slo)
CASES = {
    "run": ("run", None, None),
    "repeated": ("repeated", "repeated-small", None),
    "judged": ("run", "repeated", "mlperf-llama2-70b"),
}
FILES = ("report.md", "report.html", "results.json", "results.csv", "nodes.csv")
IMAGE = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def written(case: str) -> dict[str, str]:
    """What the report writes for `case`, run from the folder holding the runs (paths are relative)."""
    run_dir, other_dir, slo = CASES[case]
    run = load_run(Path(run_dir))
    other = load_run(Path(other_dir)) if other_dir else None
    if slo:
        for each in (run, other):
            if each is not None:
                rejudge(each, parse_slo(slo))
    out = Path("out") / case
    write_report(run, out, other)
    return {name: IMAGE.sub("data:image/png;base64,", (out / name).read_text()) for name in FILES}


def search(replicas: int, rate: float) -> CapacityResult:
    """A capacity search that passed at `rate` and found the next step invalid."""
    passed = CapacityStep(
        index=1, rate=rate, name="step-1", outcome="pass", requests=40, share_meeting=0.995,
        at_percentile_ms={"ttft": 30.5, "tpot": 9.25}, request_goodput=rate * 0.99,
        output_goodput=rate * 11.9, request_throughput=rate, output_throughput=rate * 12.0,
        achieved_send_rate=rate, valid=True,
    )  # fmt: skip
    failed = passed.model_copy(
        update={
            "index": 2, "rate": rate * 2, "name": "step-2", "outcome": "invalid", "retry": replicas - 1,
            "share_meeting": None, "at_percentile_ms": {"ttft": None}, "valid": False,
            "invalid_reasons": ["the client fell behind"] if replicas < 3 else [],
            "stopped_early": "missed the SLO beyond recovery" if replicas == 3 else None,
        }
    )  # fmt: skip
    return CapacityResult.model_validate(
        {
            "name": f"cap-{replicas}", "model": "synthetic", "url": "http://x", "replicas": replicas,
            "users_per_replica": 8, "slo": parse_slo("mlperf-llama2-70b"), "search": {}, "converged": True,
            "capacity_rate": rate, "lowest_failing_rate": rate * 2,
            "limited_by_load_generator": replicas == 2, "at_capacity": passed, "note": "bracketed",
            "steps": [passed, failed],
        }
    )  # fmt: skip


def faults() -> dict[str, str]:
    """What the real runs lack, added to them: faults, a stand-in engine, Prometheus's figures,
    capacity searches at three replica counts (so the planner has a law to fit)."""
    run = load_run(Path("run"))
    run.capacity = [search(1, 10.0), search(2, 19.0), search(3, 26.0)]
    lost = ReplicaCourse(model="m", at_start=2, lowest=1, dropped_at_s=2.0, back_at_s=None, message="gone")
    back = ReplicaCourse(model="m", at_start=2, lowest=1, dropped_at_s=1.0, back_at_s=3.5, message="")
    stories = [
        Availability(
            failed=3, first_error_s=1.5, last_error_s=4.25, error_seconds=2, slo_violated_seconds=None,
            replicas=[lost], status_samples=5, endpoint_lost_at_s=None, summary="a replica lost",
        ),
        Availability(
            failed=0, first_error_s=None, last_error_s=None, error_seconds=0, slo_violated_seconds=3,
            replicas=[back], status_samples=5, endpoint_lost_at_s=4.0, summary="back, then the server lost",
        ),
    ]  # fmt: skip
    figures = {}
    for i, s in enumerate(s for s in run.scenarios if s.summary is not None):
        assert s.summary is not None and s.spec is not None
        s.summary = s.summary.model_copy(update={"availability": stories[i % 2]})
        if i == 0:
            s.spec = s.spec.model_copy(update={"meta": {**s.spec.meta, "engine_stand_in": "1"}})
        figures[s.name] = ServerFigures(
            prometheus="http://prometheus:9090", window_s=5.0, serve_queue_wait_ms=Pair(avg=1.234, max=5.678),
            queued_at_handles=Pair(avg=0.5), ongoing_per_replica=Pair(max=3.0),
            engine_running=Pair(avg=2.0, max=4.0), engine_waiting=Pair(), kv_cache_percent=Pair(avg=12.5),
            gpu_util_percent=Pair(), gpu_mem_percent=Pair(avg=1.0, max=2.0),
            energy_j=None if i else 1234.5, energy_source="dcgm", tokens_per_joule=0.1234 if i else None,
            engine_ttft_p50_ms=None if i else 12.0, engine_ttft_p99_ms=40.0,
            prefix_cache_hit_percent=0.0 if i else None,
        )  # fmt: skip
    blocks = report_blocks(run, [], None, ServerSection(figures, None))
    return {"report.md": to_markdown(blocks), "report.html": to_html("faults", blocks)}


def _in_copy(where: Path) -> None:
    shutil.copytree(GOLDEN / "runs", where, dirs_exist_ok=True)


@pytest.mark.parametrize("case", [*CASES, "faults"])
def test_the_report_writes_what_it_wrote_before(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _in_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    files = faults() if case == "faults" else written(case)
    expected = json.loads(EXPECTED.read_text())[case]
    assert files.keys() == expected.keys()
    for name, text in files.items():
        assert text == expected[name], f"{case}/{name}"


def write_expected() -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        _in_copy(Path(work))
        here = Path.cwd()
        os.chdir(work)
        try:
            cases = {case: written(case) for case in CASES} | {"faults": faults()}
        finally:
            os.chdir(here)
    EXPECTED.write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(write_expected())
