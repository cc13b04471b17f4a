"""Run one scenario: start the Locust worker processes, watch them, then compute and write its summary.

This process imports neither Locust nor gevent; it only supervises. The workers write records
themselves as each request ends, so whatever happens to this process (Ctrl-C, SIGKILL), the
records already written stay. `summary.json` is written last, atomically: its presence means the
scenario finished. A scenario re-run over an unfinished directory keeps the old records aside.

Before any load: the results directory is checked (bench/storage.py) and one probe request is sent
(bench/probe.py), so a wrong URL, model or key, or a full disk, stops the run with the fix named. A
worker that cannot write its records stops the scenario without a summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from distinfer.bench.probe import ProbeError, probe
from distinfer.bench.progress import ScenarioProgress, View
from distinfer.bench.prompts import load_prompts
from distinfer.bench.provenance import collect_provenance
from distinfer.bench.replicas import ReplicaSource, ReplicaWatcher
from distinfer.bench.storage import ResultsWriteError, check_results_dir, required_bytes
from distinfer.bench.stream import RequestSpec
from distinfer.bench.traces import read_trace, schedule, window
from distinfer.bench.watcher import StatusWatcher
from distinfer.config import deployment_name
from distinfer.results import guard
from distinfer.results.autoscaling import AutoscalingFigures, autoscaling_figures, read_replicas
from distinfer.results.availability import STATUS_FILE, assess, read_status
from distinfer.results.legs import ttft_split
from distinfer.results.metrics import compute_metrics
from distinfer.results.records import RECORDS_FILE, WRITE_FAILED, RequestRecord, load_records
from distinfer.results.replay import ReplayFigures, replay_figures
from distinfer.results.run import Provenance
from distinfer.results.scenario import ScenarioSpec, WorkerPlan, target_events_per_s
from distinfer.results.summary import StoppedEarly, Summary
from distinfer.results.workload import mean_level

log = logging.getLogger(__name__)

# Streamed events per second one worker handles with its loop still on time (measured on this
# project's reference 2-core VM: see benchmarks/loadgen_fidelity.md). Beyond it, add a worker.
EVENTS_PER_WORKER = 8000.0
STARTUP_TIMEOUT_S = 60.0

# Asked once a second while the load runs, with the load's start time: a reason to stop the scenario
# now (it is clearly failing: bench/capacity.py), or None to go on.
StopWhen = Callable[[float], "str | None"]


def expected_requests_per_s(spec: ScenarioSpec) -> float:
    """Requests per second the records will hold at most (closed loop: at the assumed token rate)."""
    if spec.peak_rate is not None:
        return spec.peak_rate
    if spec.trace is not None:
        rows = window(read_trace(spec.trace.file, spec.trace.format), spec.trace, spec.duration_s)
        return len(rows) / spec.duration_s
    if spec.sessions is not None:
        return spec.sessions.rate * spec.sessions.turns.high
    return target_events_per_s(spec) / (spec.max_tokens + 2)


def host_processes(spec: ScenarioSpec, share: int, cpu_count: int | None = None) -> int:
    """Worker processes one of `share` load hosts runs for its part of a scenario: sized as
    `plan_workers` sizes the control machine's, on that part's event rate and users."""
    if spec.workers is not None:
        return max(1, math.ceil(spec.workers / share))
    wanted = math.ceil(target_events_per_s(spec) / share / EVENTS_PER_WORKER)
    return max(1, min(wanted, cpu_count or os.cpu_count() or 1, math.ceil(spec.users / share)))


def plan_workers(spec: ScenarioSpec) -> int:
    if spec.workers is not None:
        return spec.workers
    wanted = math.ceil(target_events_per_s(spec) / EVENTS_PER_WORKER)
    # Never more processes than cores (they would only steal from each other) or than users.
    return max(1, min(wanted, os.cpu_count() or 1, spec.users))


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ScenarioRun:
    def __init__(
        self,
        spec: ScenarioSpec,
        out: Path,
        api_key: str | None = None,
        progress: ScenarioProgress | None = None,
        stop_when: StopWhen | None = None,
    ) -> None:
        self.spec = spec
        self.out = out
        self.api_key = api_key
        self.progress = progress
        self.stop_when = stop_when
        self.stopped_early: tuple[str, float] | None = None  # (why, when)
        self.workers: list[subprocess.Popen[str]] = []
        self.cpu_samples: dict[int, list[tuple[float, float]]] = {}
        self.machine_samples: list[tuple[float, float]] = []

    def request_spec(self) -> RequestSpec:
        return RequestSpec.of(self.spec, self.api_key)

    def check(self) -> None:
        """Before any load: a usable results directory, and a server that takes a request like ours."""
        need = required_bytes(
            target_events_per_s(self.spec), expected_requests_per_s(self.spec), self.spec.duration_s
        )
        check_results_dir(self.out, need)
        prompt = self.longest_prompt()
        try:
            result = probe(self.request_spec(), prompt)
        except ProbeError as err:
            if self.spec.trace is None:
                raise
            raise ProbeError(
                f"{err}. The probe sent the trace window's longest prompt ({len(prompt.split())} words, as "
                "many tokens by its tokenizer): lower trace.max_input_tokens (or trace.length_scale) to fit "
                "the model's context"
            ) from None
        log.info("probe: %s answered, first token after %.0f ms", self.spec.url, result.first_token_s * 1000)

    def longest_prompt(self) -> str:
        """The probe's prompt: a trace window's longest (a prompt past the model's context stops the run
        here, before any load), else the prompt set's."""
        trace = self.spec.trace
        if trace is not None:
            arrivals = schedule(trace, self.spec.duration_s, self.spec.seed)
            if arrivals:
                return max(arrivals, key=lambda a: a.input_tokens).prompt
        return max((p.text for p in load_prompts(self.spec.prompts)), key=len)

    def prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        records = self.out / RECORDS_FILE
        if records.exists() and records.stat().st_size:
            kept = self.out / f"records.unfinished-{int(time.time())}.jsonl"
            records.rename(kept)
            log.warning("an unfinished earlier run left records; kept them as %s", kept.name)
        (self.out / "client").mkdir(exist_ok=True)
        self.spec.save_file(self.out)
        run_dir = self.out.parent.parent
        if self.out.parent.name == "scenarios" and not Provenance.file_in(run_dir).exists():
            collect_provenance().save_file(run_dir)

    def start_workers(self) -> None:
        count = plan_workers(self.spec)
        users = split(self.spec.users, count)
        env = dict(os.environ)
        if self.api_key:
            env["DISTINFER_BENCH_API_KEY"] = self.api_key
        for index in range(count):
            plan = WorkerPlan(
                index=index,
                scenario=self.spec,
                users=users[index],
                workers=count,
                rate=None if self.spec.rate is None else self.spec.rate / count,
                records=str(self.out / RECORDS_FILE),
                stats=str(self.out / "client" / f"worker-{index}.json"),
            )
            plan_path = self.out / "client" / f"plan-{index}.json"
            plan_path.write_text(plan.model_dump_json(indent=2))
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distinfer.bench.worker", str(plan_path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        log.info("started %d load worker(s) for %d users", count, self.spec.users)

    def go(self) -> float:
        """Wait for every worker to be ready, then give them all one start time."""
        deadline = time.time() + STARTUP_TIMEOUT_S
        for worker in self.workers:
            assert worker.stdout is not None
            line = worker.stdout.readline().strip()
            if line != "ready" or time.time() > deadline:
                raise RuntimeError(
                    f"load worker pid {worker.pid} failed to start (said {line!r}); see its stderr above"
                )
        start = time.time() + 0.5
        for worker in self.workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{start}\n")
            worker.stdin.close()
        return start

    def watch(self, start: float) -> None:
        """Sample the workers' CPU each second until they all exit."""
        procs = {w.pid: psutil.Process(w.pid) for w in self.workers}
        for proc in procs.values():
            proc.cpu_percent(None)
        psutil.cpu_percent(None)
        hard_end = start + self.spec.duration_s + self.spec.drain_timeout_s + 30.0
        if self.progress is not None:
            self.progress.begin(start, self.spec.duration_s, self.spec.warmup_s)
        while any(w.poll() is None for w in self.workers):
            time.sleep(1.0)
            if self.progress is not None:
                self.progress.tick()
            if any(w.poll() == WRITE_FAILED for w in self.workers):
                self.stop_workers()  # the records have a hole: measuring on is pointless
                break
            reason = self.stop_when(start) if self.stop_when is not None else None
            if reason is not None:
                self.stopped_early = (reason, time.time())
                log.info("stopping %s early: %s", self.spec.name, reason)
                self.stop_workers()
                break
            now = time.time()
            self.machine_samples.append((now, psutil.cpu_percent(None)))
            for pid, proc in procs.items():
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.cpu_samples.setdefault(pid, []).append((now, proc.cpu_percent(None)))
            if now > hard_end:
                log.error("load workers overran the drain deadline; stopping them")
                self.stop_workers()

    def stop_workers(self, grace_s: float = 15.0) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
        deadline = time.time() + grace_s
        for worker in self.workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    def check_writes(self) -> None:
        """Raise if a worker could not write its records (it exits WRITE_FAILED and says why)."""
        failed = [w.pid for w in self.workers if w.returncode == WRITE_FAILED]
        if failed:
            raise ResultsWriteError(
                f"load worker(s) {failed} could not write records to {self.out / RECORDS_FILE} (the "
                "reason is in their message above); the scenario stopped and has no summary.json, so a "
                "resumed sweep runs it again. Free space (or fix the disk) and re-run"
            )

    def client_load(self, w0: float, w1: float) -> guard.ClientLoad:
        stats = [self.out / "client" / f"worker-{index}.json" for index in range(len(self.workers))]
        pids = [w.pid for w in self.workers]
        return client_load(pids, self.cpu_samples, self.machine_samples, stats, w0, w1)[0]

    def summarise(self, start: float, finished: float) -> Summary:
        spec = self.spec
        w0, w1 = start + spec.warmup_s, start + spec.duration_s
        if self.stopped_early is not None:  # the window ends where the load did
            w1 = max(min(w1, self.stopped_early[1]), w0 + 1e-3)
        records = list(load_records(self.out / RECORDS_FILE))
        metrics = compute_metrics(records, w0, w1, spec.max_tokens, spec.slo)
        availability = assess(records, read_status(self.out / STATUS_FILE), start, spec.slo)
        client = self.client_load(w0, w1)
        own_clock = spec.trace is not None or spec.sessions is not None or spec.rate_steps
        users: float = spec.users
        if spec.steps is not None and not spec.rate_steps:  # the users the steps kept active on average
            users = mean_level(spec.steps, w0 - start, w1 - start)
        reasons = guard.check(metrics, client, users, spec.rate, own_clock)
        stopped = self.stopped_early
        return Summary(
            scenario=spec,
            started=start,
            load_end=start + spec.duration_s,
            finished=finished,
            valid=not reasons,
            invalid_reasons=reasons,
            metrics=metrics,
            client=client,
            availability=availability,
            stopped_early=None if stopped is None else StoppedEarly(reason=stopped[0], at=stopped[1]),
            ttft_split=ttft_split(records, w0, w1, socket.gethostname()),
            replay=self.replay(records, start),
            autoscaling=self.autoscaling(records, start),
        )

    def autoscaling(self, records: list[RequestRecord], start: float) -> AutoscalingFigures | None:
        """An autoscaling scenario's figures from its replica samples (results/autoscaling.py)."""
        if self.spec.autoscaling is None:
            return None
        samples, source = read_replicas(self.out, self.spec.model)
        return autoscaling_figures(self.spec, records, samples, start, source)

    def replay(self, records: list[RequestRecord], start: float) -> ReplayFigures | None:
        spec = self.spec
        if spec.trace is not None:
            rows = window(read_trace(spec.trace.file, spec.trace.format), spec.trace, spec.duration_s)
            lengths = [(r.input_tokens, r.output_tokens) for r in rows]
            return replay_figures(records, start, spec.duration_s, lengths)
        if spec.sessions is not None:
            return replay_figures(records, start, spec.duration_s)
        return None


def client_load(
    pids: list[int],
    cpu_samples: dict[int, list[tuple[float, float]]],
    machine_samples: list[tuple[float, float]],
    stats: list[Path],
    w0: float,
    w1: float,
) -> tuple[guard.ClientLoad, list[float]]:
    """The saturation guard's inputs over the window [w0, w1]: each worker's CPU (sampled by its
    supervisor), the machine's, and the event-loop lag every worker wrote in its stats file; with
    every lag sample."""

    def inside(samples: list[tuple[float, float]]) -> list[float]:
        return [v for t, v in samples if w0 < t <= w1 + 1.0] or [v for _, v in samples]

    means, maxes = [], []
    for pid in pids:
        values = inside(cpu_samples.get(pid, []))
        means.append(sum(values) / len(values) if values else 0.0)
        maxes.append(max(values) if values else 0.0)
    machine = inside(machine_samples)
    lags: list[float] = []
    reporting = 0
    for stats_path in stats:
        if stats_path.exists():
            reporting += 1
            lags.extend(_read_json(stats_path).get("loop_lag_ms", []))
    p50, p99, peak = guard.lag_summary(lags)
    load = guard.ClientLoad(
        workers=len(pids),
        worker_cpu_percent_mean=means,
        worker_cpu_percent_max=maxes,
        machine_cpu_percent_mean=sum(machine) / len(machine) if machine else None,
        loop_lag_ms_p50=p50,
        loop_lag_ms_p99=p99,
        loop_lag_ms_max=peak,
        workers_reporting=reporting,
    )
    return load, lags


def _loop(spec: ScenarioSpec) -> str:
    if spec.trace is not None:
        return f", trace {spec.trace.file} from {spec.trace.start_s:g} s at x{spec.trace.time_scale:g}"
    if spec.sessions is not None:
        return ", multi-turn sessions"
    if spec.steps is not None:
        unit = " req/s" if spec.rate_steps else " users"
        levels = " -> ".join(f"{step.level:g}{unit} at {step.at_s:g} s" for step in spec.steps)
        return f", steps {levels}"
    return f", {spec.rate:g} req/s open loop" if spec.rate else " closed loop"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _take_ctrl_c() -> None:
    """Make SIGINT raise KeyboardInterrupt here even when it was inherited as ignored.

    A process started as a background job (`cmd &` in a script, nohup, some CI runners) inherits
    SIGINT ignored, and Python keeps it so. The workers handle SIGINT themselves (they stop), so a
    runner that ignored it would see its load end early and write the summary of a cut-short run,
    which a resumed sweep would then take for finished.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_scenario(
    spec: ScenarioSpec,
    out: Path,
    api_key: str | None = None,
    view: View | None = None,
    position: tuple[int, int] = (1, 1),
    stop_when: StopWhen | None = None,
    replicas_from: ReplicaSource | None = None,
) -> Summary:
    """Run one scenario to its summary. Ctrl-C stops the load, keeps the records, writes no summary.

    With a `view`, its progress (scenario `position` = i of n) is shown while the load runs. With
    `stop_when`, the load stops as soon as it gives a reason; the summary then covers the steady
    window up to that moment and says why (`stopped_early`). With `replicas_from`, the model's
    replicas are sampled from Serve's REST API each second into replicas.jsonl (bench/replicas.py)."""
    _take_ctrl_c()
    progress = ScenarioProgress(view, out / RECORDS_FILE, spec.name, position) if view else None
    run = ScenarioRun(spec, out, api_key, progress, stop_when)
    run.check()
    run.prepare()
    watcher: StatusWatcher | None = None
    sampler: ReplicaWatcher | None = None
    try:
        if replicas_from is not None:  # from before the load, so the first samples show where it began
            sampler = replicas_from.watcher(deployment_name(spec.model), out)
            sampler.start()
        run.start_workers()
        start = run.go()
        if spec.watch_status:
            watcher = StatusWatcher(spec.url, out, api_key)
            watcher.start()
        log.info(
            "load %s: %d users%s for %.0fs (warm-up %.0fs) against %s",
            spec.name,
            spec.users,
            _loop(spec),
            spec.duration_s,
            spec.warmup_s,
            spec.url,
        )
        run.watch(start)
        run.check_writes()
    except BaseException:
        run.stop_workers()
        raise
    finally:
        if watcher is not None:
            watcher.stop()
        if sampler is not None:
            sampler.stop()
        if progress is not None and progress.started:
            progress.end()
    try:
        summary = run.summarise(start, time.time())
        summary.save_file(out)
    except (OSError, ValueError) as err:  # unreadable records, or the summary itself not written
        raise ResultsWriteError(
            f"the summary of scenario {spec.name} could not be computed or written in {out}: {err}; "
            "it has no summary.json, so a resumed sweep runs it again. Free space and re-run"
        ) from None
    if not summary.valid:
        log.warning("scenario %s is INVALID: %s", spec.name, "; ".join(summary.invalid_reasons))
    faults = summary.availability
    if faults is not None and (faults.failed or faults.endpoint_lost_at_s is not None):
        log.warning("scenario %s: %s", spec.name, faults.summary)
    return summary
