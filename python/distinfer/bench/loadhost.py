"""A load host's agent: `distinfer bench loadhost`, started on each load host by the benchmark role
for one scenario (results/loadgen.py tells the whole flow).

It starts this host's Locust worker processes (`python -m distinfer.bench.worker --master ...`, as
many as its share of the scenario's event rate needs: bench/runner.py's sizing), samples their CPU
each second as the control machine's runner does, and once they have all exited writes `host.json`:
its own start time and saturation guard inputs. The records are the workers' own, in the same
folder. This process imports neither Locust nor gevent; it only supervises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from distinfer.bench.runner import _read_json, client_load, host_processes
from distinfer.results.loadgen import HostAccount
from distinfer.results.records import RECORDS_FILE
from distinfer.results.scenario import ScenarioSpec

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 300.0  # a worker waits this long for the master (Locust's own retries)


def run_load_host(
    master: str, host: str, folder: Path, spec: ScenarioSpec, share: int, api_key: str | None = None
) -> HostAccount:
    folder.mkdir(parents=True, exist_ok=True)
    records = folder / RECORDS_FILE
    if records.exists() and records.stat().st_size:
        records.rename(folder / f"records.unfinished-{int(time.time())}.jsonl")
    (folder / HostAccount.DEFAULT_FILE).unlink(missing_ok=True)
    for old in folder.glob("worker-*.json"):
        old.unlink()
    count = host_processes(spec, share)
    env = dict(os.environ)
    if api_key:
        env["DISTINFER_BENCH_API_KEY"] = api_key
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "distinfer.bench.worker", "--master", master, "--load-host", host,
             "--dir", str(folder), "--process", str(k), "--processes", str(count)],
            env=env,
        )
        for k in range(count)
    ]  # fmt: skip
    log.warning("load host %s: %d worker process(es) for the master at %s", host, count, master)
    procs = {w.pid: psutil.Process(w.pid) for w in workers}
    for proc in procs.values():
        proc.cpu_percent(None)
    psutil.cpu_percent(None)
    cpu: dict[int, list[tuple[float, float]]] = {}
    machine: list[tuple[float, float]] = []
    hard_end = time.time() + CONNECT_WAIT_S + spec.duration_s + spec.drain_timeout_s + 60.0
    try:
        while any(w.poll() is None for w in workers):
            time.sleep(1.0)
            now = time.time()
            machine.append((now, psutil.cpu_percent(None)))
            for pid, proc in procs.items():
                with contextlib.suppress(psutil.NoSuchProcess):
                    cpu.setdefault(pid, []).append((now, proc.cpu_percent(None)))
            if now > hard_end:
                log.error("load host %s: workers overran their deadline; stopping them", host)
                break
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            try:
                w.wait(timeout=15)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    stats = [folder / f"worker-{k}.json" for k in range(count)]
    starts = [float(s) for p in stats if (s := _read_json(p).get("start"))]
    start = min(starts) if starts else None
    w0 = (start or 0.0) + spec.warmup_s
    w1 = (start or 0.0) + spec.duration_s
    client, lags = client_load([w.pid for w in workers], cpu, machine, stats, w0, w1)
    account = HostAccount(
        host=host,
        processes=count,
        cpu_count=os.cpu_count() or 1,
        start=start,
        client=client,
        loop_lag_ms=lags,
    )
    account.save_file(folder)
    return account
