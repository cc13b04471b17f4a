"""Load hosts (results/loadgen.py, bench/distributed.py): the inventory group `loadgen` checked before
any change, the users' places spread over workers, and the merge of several hosts' records into one
summary whose percentiles are exact over every raw record, with a lost host named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_plan import request

from distinfer.bench.distributed import merge_scenario
from distinfer.bench.runner import host_processes
from distinfer.config import ConfigError
from distinfer.plan import build_plan
from distinfer.results.guard import ClientLoad
from distinfer.results.loadgen import (
    HostAccount,
    HostLoss,
    LoadgenRun,
    WorkerEntry,
    check_load_hosts,
    interleave,
    shifted,
)
from distinfer.results.records import RecordWriter, RequestRecord
from distinfer.results.scenario import ScenarioSpec

SERVING = ["xe9680", "xe8545"]


def refused(*args: object) -> str:
    with pytest.raises(ConfigError) as err:
        check_load_hosts(*args)  # type: ignore[arg-type]
    return str(err.value)


def test_no_group_or_only_the_control_machine_keeps_the_load_on_the_control_machine() -> None:
    assert check_load_hosts([], SERVING) == []
    assert check_load_hosts([("localhost", "localhost")], SERVING) == []
    assert check_load_hosts([("local", "127.0.0.1")], SERVING) == []
    assert check_load_hosts([("lg1", "10.0.0.21"), ("lg2", "10.0.0.22")], SERVING) == ["lg1", "lg2"]


def test_bad_loadgen_groups_are_refused_naming_the_fix() -> None:
    mixed = refused([("localhost", "localhost"), ("lg1", "10.0.0.21")], SERVING)
    assert "lists the control machine (localhost) beside load hosts (lg1)" in mixed
    assert "Remove it from loadgen, or list only localhost" in mixed
    serving = refused([("xe8545", "192.0.2.11")], SERVING)
    assert (
        "lists xe8545, which also serve the model" in serving and "List machines that do not serve" in serving
    )
    name = refused([("lg 1", "10.0.0.21")], SERVING)
    assert "host name 'lg 1' names its results folder" in name
    search = refused([("lg1", "10.0.0.21")], SERVING, ["cap-1"])
    assert "cap-1 search a capacity" in search and "distinfer_scenarios_only" in search
    scaling = refused([("lg1", "10.0.0.21")], SERVING, [], ["step-up"])
    assert "step-up change their load over time" in scaling and "without the loadgen group" in scaling


def test_the_planner_refuses_a_bad_group_before_any_change_and_lists_a_good_one() -> None:
    loadgen = [{"name": "lg1", "address": "10.0.0.21"}, {"name": "lg2", "address": "10.0.0.22"}]
    assert build_plan(request(loadgen=loadgen)).loadgen == ["lg1", "lg2"]
    assert build_plan(request()).loadgen == []
    with pytest.raises(ConfigError, match="lists r760xa, which also serve the model"):
        build_plan(request(loadgen=[{"name": "r760xa", "address": "192.0.2.12"}]))


def test_users_dealt_unevenly_still_interleave_over_the_ramp() -> None:
    assert interleave([2, 2]) == [[0, 2], [1, 3]]
    assert interleave([3, 1]) == [[0, 2, 3], [1]]
    assert interleave([0, 2]) == [[], [0, 1]]
    places = interleave([5, 3, 4])
    assert sorted(p for ps in places for p in ps) == list(range(12))


def test_each_host_runs_as_many_processes_as_its_share_of_the_event_rate_needs() -> None:
    spec = ScenarioSpec.model_validate(
        {"name": "s", "model": "m", "url": "http://127.0.0.1:1", "users": 400, "duration_s": 10}
    )  # 400 users x 100 tokens/s = 40,000 events/s: 5 processes of 8,000 on one host
    assert host_processes(spec, 1, cpu_count=64) == 5
    assert host_processes(spec, 2, cpu_count=64) == 3  # 20,000 events/s each
    assert host_processes(spec, 2, cpu_count=2) == 2  # never more than its cores


def record(worker: int, seq: int, sent: float, ttft_s: float, host: str | None = None) -> RequestRecord:
    return RequestRecord(
        request_id=f"r-w{worker}-{seq}", worker=worker, seq=seq, user=0, scheduled=sent, sent=sent,
        first_token=sent + ttft_s, last_token=sent + ttft_s + 0.15, end=sent + ttft_s + 0.16, status=200,
        ok=True, prompt_tokens=10, completion_tokens=16, max_tokens=16, chunks=16, load_host=host,
    )  # fmt: skip


def test_a_record_moves_onto_the_controllers_timeline_without_changing_a_duration() -> None:
    moved = shifted(record(0, 1, 1000.0, 0.05), 2.5, "lg1")
    assert moved.sent == 1002.5 and moved.scheduled == 1002.5 and moved.load_host == "lg1"
    assert moved.first_token is not None and moved.first_token - moved.sent == pytest.approx(0.05)
    assert moved.end - moved.sent == pytest.approx(0.21)


def client(workers: int = 1, lag: float = 2.0) -> ClientLoad:
    return ClientLoad(
        workers=workers, worker_cpu_percent_mean=[10.0] * workers, worker_cpu_percent_max=[20.0] * workers,
        machine_cpu_percent_mean=30.0, loop_lag_ms_p50=1.0, loop_lag_ms_p99=lag, loop_lag_ms_max=lag,
        workers_reporting=workers,
    )  # fmt: skip


def test_the_merge_is_exact_over_every_hosts_raw_records_and_names_a_lost_host(tmp_path: Path) -> None:
    """lg1's clock runs 100 s behind the controller's, lg2 was lost 6 s in and could not be fetched: the
    summary covers lg1's records on the controller's timeline and says what went with lg2."""
    started = 5000.0
    spec = ScenarioSpec.model_validate(
        {"name": "s", "model": "m", "url": "http://127.0.0.1:1", "users": 4, "duration_s": 10, "warmup_s": 2}
    )
    spec.save_file(tmp_path)
    workers = [
        WorkerEntry(client_id=f"{h}_x", host=h, process=0, index=i, pid=1, users=2, cap=2, rate=None)
        for i, h in enumerate(["lg1", "lg2"])
    ]
    loss = HostLoss(host="lg2", at=started + 6, after_s=6.0, how="missed Locust heartbeats", workers=1,
                    users=2, requests_reported=17)  # fmt: skip
    LoadgenRun(master="ctl", hosts=["lg1", "lg2"], started=started, workers=workers, losses=[loss]).save_file(
        tmp_path
    )
    lg1 = tmp_path / "hosts" / "lg1"
    lg1.mkdir(parents=True)
    host_start = started - 100.0  # its own clock
    HostAccount(
        host="lg1", processes=1, cpu_count=2, start=host_start, client=client(), loop_lag_ms=[1.0, 2.0]
    ).save_file(lg1)
    ttfts = [0.02 + 0.001 * k for k in range(40)]
    with RecordWriter(lg1 / "records.jsonl") as writer:
        for k, ttft in enumerate(ttfts):  # one request every 0.25 s from the host's start
            writer.write(record(0, k, host_start + 0.25 * k, ttft))
    summary = merge_scenario(tmp_path)

    inside = [t * 1000.0 for k, t in enumerate(ttfts) if 2.0 <= 0.25 * k < 10.0]
    assert summary.metrics.completed == len(inside)
    p50, p99 = np.percentile(inside, [50, 99])
    assert summary.metrics.ttft_ms.p50 == pytest.approx(p50) and summary.metrics.ttft_ms.p99 == pytest.approx(
        p99
    )
    merged = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(merged) == 40 and {r["load_host"] for r in merged} == {"lg1"}
    assert merged[0]["sent"] == pytest.approx(started)  # moved onto the controller's timeline
    hosts = {h.host: h for h in summary.load_hosts or []}
    assert hosts["lg1"].valid and hosts["lg1"].start_offset_ms == pytest.approx(100_000.0)
    assert hosts["lg1"].events_per_s > 0 and hosts["lg1"].records == 40
    assert hosts["lg2"].lost == loss and not hosts["lg2"].records_fetched and not hosts["lg2"].valid
    assert not summary.valid
    assert any(
        r.startswith("load host lg2 was lost 6.0 s into the load (missed Locust heartbeats) with 2 user(s)")
        and "at least 17 request(s) sent; its records could not be fetched" in r
        for r in summary.invalid_reasons
    ), summary.invalid_reasons


def test_a_load_hosts_own_guard_fails_it_by_name(tmp_path: Path) -> None:
    spec = ScenarioSpec.model_validate(
        {"name": "s", "model": "m", "url": "http://127.0.0.1:1", "users": 1, "duration_s": 4, "warmup_s": 1}
    )
    spec.save_file(tmp_path)
    worker = WorkerEntry(client_id="lg1_x", host="lg1", process=0, index=0, pid=1, users=1, cap=1, rate=None)
    LoadgenRun(master="ctl", hosts=["lg1"], started=100.0, workers=[worker]).save_file(tmp_path)
    lg1 = tmp_path / "hosts" / "lg1"
    lg1.mkdir(parents=True)
    HostAccount(host="lg1", processes=1, cpu_count=2, start=100.0, client=client(lag=45.0)).save_file(lg1)
    with RecordWriter(lg1 / "records.jsonl") as writer:
        for k in range(12):
            writer.write(record(0, k, 100.0 + 0.3 * k, 0.05))
    summary = merge_scenario(tmp_path)
    [host] = summary.load_hosts or []
    assert not host.valid and "event-loop lag P99 45.0 ms" in host.reasons[0]
    assert any(r.startswith("load host lg1: event-loop lag P99 45.0 ms") for r in summary.invalid_reasons)


def test_the_cli_refuses_autoscaling_or_steps_from_load_hosts_before_any_load(tmp_path: Path) -> None:
    """`distinfer bench run --load-host` with a stepped scenario: exit 2, the reason and the fix, no
    results folder (the planner refuses the same for the role; this is the command run by hand)."""
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"name": "step", "model": "m", "url": "http://127.0.0.1:9", "duration_s": 10,
             "steps": [{"at_s": 0, "users": 1}, {"at_s": 5, "users": 4}]}
        )
    )  # fmt: skip
    out = tmp_path / "out"
    distinfer = str(Path(sys.executable).with_name("distinfer"))
    argv = [distinfer, "bench", "run", "--spec", str(spec), "--out", str(out), "--load-host", "lg1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "control machine only" in done.stderr and "drop --load-host" in done.stderr, done.stderr
    assert not out.exists()
