"""A scenario's load from load hosts, on the control machine: the Locust master's run, then the merge
of what the hosts recorded into the scenario's records and summary (results/loadgen.py).

`distinfer bench run --load-host A --load-host B` checks and probes as always, then runs the Locust
master (bench/master.py) in a process of its own (it loads Locust; this one does not), and leaves
`loadgen.json`; the benchmark role then fetches each host's `hosts/<host>/` folder and runs
`distinfer bench merge`, which writes the merged `records.jsonl` and `summary.json` (last, as ever:
its presence means the scenario finished).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

from distinfer.bench.runner import ScenarioRun, _take_ctrl_c
from distinfer.bench.watcher import StatusWatcher
from distinfer.results import guard
from distinfer.results.availability import STATUS_FILE, assess, read_status
from distinfer.results.base import Strict
from distinfer.results.certificate import event_rate
from distinfer.results.legs import ttft_split
from distinfer.results.loadgen import (
    HOST_FILE,
    HOSTS_DIR,
    HostAccount,
    LoadgenRun,
    LoadHostResult,
    combined_client,
    host_offset,
    merge_records,
)
from distinfer.results.metrics import compute_metrics
from distinfer.results.records import RECORDS_FILE, RecordWriter
from distinfer.results.scenario import ScenarioSpec
from distinfer.results.summary import Summary

log = logging.getLogger(__name__)

MASTER_PORT = 24857  # Locust's master port (its default, 5557, is moved beside the project's 248xx)
CONNECT_TIMEOUT_S = 120.0


class LoadgenError(RuntimeError):
    """The load could not run on the load hosts; the message says which host and what to check."""


def run_on_load_hosts(
    spec: ScenarioSpec,
    out: Path,
    hosts: list[str],
    api_key: str | None = None,
    port: int = MASTER_PORT,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> LoadgenRun:
    """Check, probe, run the Locust master until every load host's workers are done or lost."""
    _take_ctrl_c()
    run = ScenarioRun(spec, out, api_key)
    run.check()
    run.prepare()
    (out / LoadgenRun.DEFAULT_FILE).unlink(missing_ok=True)
    config = out / "client" / "master.json"
    config.write_text(
        LoadgenMasterConfig(
            scenario=spec, out=str(out), hosts=hosts, port=port, connect_timeout_s=connect_timeout_s
        ).model_dump_json(indent=2)
    )
    watcher = StatusWatcher(spec.url, out, api_key) if spec.watch_status else None
    if watcher is not None:
        watcher.start()
    limit = connect_timeout_s + spec.duration_s + spec.drain_timeout_s + 120.0
    master = subprocess.Popen([sys.executable, "-m", "distinfer.bench.master", str(config)])
    try:
        master.wait(timeout=limit)
    except BaseException:
        master.terminate()
        try:
            master.wait(timeout=15)
        except subprocess.TimeoutExpired:
            master.kill()
        raise
    finally:
        if watcher is not None:
            watcher.stop()
    result = LoadgenRun.load_file(out)
    if result is None or result.error is not None or result.started is None:
        why = result.error if result is not None and result.error else f"it exited {master.returncode}"
        raise LoadgenError(
            f"the Locust master could not run scenario {spec.name} on {', '.join(hosts)}: {why}"
        )
    return result


def merge_scenario(out: Path) -> Summary:
    """Every fetched host's records merged onto the controller's timeline (records.jsonl), and the
    summary computed from them: exact percentiles over every raw record."""
    spec = ScenarioSpec.load_file(out)
    run = LoadgenRun.load_file(out)
    if spec is None or run is None or run.started is None:
        raise LoadgenError(
            f"{out} has no scenario.json and loadgen.json of a started load: run `distinfer bench run "
            "--load-host ...` into it first"
        )
    merged, by_host = merge_records(out, run)
    records_path = out / RECORDS_FILE
    records_path.unlink(missing_ok=True)
    with RecordWriter(records_path) as writer:
        for record in merged:
            writer.write(record)
    start = run.started
    w0, w1 = start + spec.warmup_s, start + spec.duration_s
    metrics = compute_metrics(merged, w0, w1, spec.max_tokens, spec.slo)
    accounts: dict[str, HostAccount] = {}
    for h in run.hosts:
        found = (
            HostAccount.load_file(out / HOSTS_DIR / h) if (out / HOSTS_DIR / h / HOST_FILE).exists() else None
        )
        if found is not None:
            accounts[h] = found
    results: list[LoadHostResult] = []
    host_reasons: list[str] = []
    for host in run.hosts:
        account = accounts.get(host)
        loss = next((x for x in run.losses if x.host == host), None)
        mine = [w for w in run.workers if w.host == host]
        fetched = (out / HOSTS_DIR / host / RECORDS_FILE).exists()
        own = compute_metrics(by_host[host], w0, w1, spec.max_tokens)
        reasons = guard.check_client(account.client) if account is not None else []
        if account is None and loss is None:
            reasons.append("its host.json could not be fetched: its CPU and event-loop lag are unknown")
        offset = host_offset(run, account)
        results.append(
            LoadHostResult(
                host=host,
                workers=len(mine),
                users=sum(w.users for w in mine),
                records=len(by_host[host]),
                records_fetched=fetched,
                start_offset_ms=None if offset is None else offset * 1000.0,
                requests=own.requests_scheduled,
                events_per_s=event_rate(own.output_throughput, own.request_throughput),
                client=None if account is None else account.client,
                valid=not reasons and loss is None,
                reasons=reasons,
                lost=loss,
            )
        )
        host_reasons += [f"load host {host}: {r}" for r in reasons]
        if loss is not None:
            kept = (
                f"its {len(by_host[host])} record(s) written before were fetched and are kept"
                if fetched
                else "its records could not be fetched: every request it sent is lost from these figures"
            )
            host_reasons.append(
                f"load host {host} was lost {loss.after_s:.1f} s into the load ({loss.how}) with "
                f"{loss.users} user(s) on {loss.workers} worker(s) and at least {loss.requests_reported} "
                f"request(s) sent; {kept}"
            )
    client = combined_client(list(accounts.values()), workers=len(run.workers))
    own_clock = spec.trace is not None or spec.sessions is not None
    reasons = (
        guard.nothing_measured(metrics)
        + host_reasons
        + guard.shortfall(metrics, spec.users, spec.rate, own_clock)
    )
    summary = Summary(
        scenario=spec,
        started=start,
        load_end=start + spec.duration_s,
        finished=time.time(),
        valid=not reasons,
        invalid_reasons=reasons,
        metrics=metrics,
        client=client,
        availability=assess(merged, read_status(out / STATUS_FILE), start, spec.slo),
        ttft_split=ttft_split(merged, w0, w1, ",".join(run.hosts) or socket.gethostname()),
        load_hosts=results,
    )
    summary.save_file(out)
    return summary


class LoadgenMasterConfig(Strict):
    """What bench/master.py reads: the scenario, where loadgen.json goes, the hosts, Locust's port."""

    scenario: ScenarioSpec
    out: str
    hosts: list[str]
    port: int
    connect_timeout_s: float
