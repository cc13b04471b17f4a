"""What the serving path costs per token, and the highest token rate it delivers on the engine's schedule.

The synthetic engine (ttft 50 ms, itl 20 ms, 256 tokens with `ignore_eos`) behind several serving
setups, measured in one run, one after the other, on the same machine. Every setup runs the SAME
FastAPI OpenAI app (serve/api.py) and the SAME engine code:

  bare            `distinfer serve --bare`: app + engine in one uvicorn process, no Ray.
  router          `distinfer serve`, `ingress.layout: router`: Serve's HTTP proxy actor ->
                  OpenAIIngress replica (routes by `model`) -> model replica. Two actor hops a token.
  direct          `ingress.layout: direct` (the default for one model): Serve's HTTP proxy actor ->
                  the model's replica, which serves the OpenAI API itself. One actor hop.
  direct-haproxy  `direct` with Ray Serve's direct ingress behind HAProxy
                  (RAY_SERVE_ENABLE_HA_PROXY=1): HAProxy -> the replica's own uvicorn. No actor hop.
  router-haproxy  `router` with direct ingress behind HAProxy: HAProxy -> ingress replica -> model.
  router-2        `router` with two ingress replicas.
  direct-haproxy-tp         `direct-haproxy` with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (user code on
                            the replica's main loop, gRPC between replicas, buffered request logs,
                            the collector frozen after start).
  direct-haproxy-main-loop  `direct-haproxy` with only the user code on the replica's main loop
                            (RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0).

For each setup the server is started once and `distinfer bench run` (closed loop, the project's load
generator with its saturation guard) offers rising user counts; each user offers ~49.5 tokens/s
(256 tokens in 50 + 255 x 20 ms). The engine writes its truth for every request (`truth_log`: when
its model server received it, when it emitted the first and last token). A point is ON SCHEDULE when
the client's TTFT P50 is within 5 % of the truth's TTFT P50 for the same requests (joined by request
id), its TPOT P50 within 2 % of the truth's, no request failed, and the bench's guard calls the run
valid. The setup's figure is the highest offered token rate on schedule; a setup stops after two
misses in a row.

CPU per token: every process of the server's tree (psutil, the server started by this script, Ray's
processes included) is sampled each second; over the bench's steady window, each process's CPU
seconds are divided by the tokens the client received in that window and reported per 1,000 tokens,
grouped by role (HTTP proxy actor, HAProxy, ingress replica, model replica, Serve controller, Ray's
own daemons, the `distinfer serve` driver). `path` is the sum over the processes a token crosses.

The load generator runs at a lower CPU priority than the server: the server and Ray's workers at
this script's own nice value (Ray's default worker niceness of 15 is overridden with
RAY_worker_niceness), the load generator `--client-nice` (5) above it. On a machine shared with
other work, start the script at nice -10 (as root): the load generator then runs at nice -5, ahead
of the other work (at nice 0 on a 2-core machine under load 10-20 its event loop lagged 150-350 ms
and the bench's guard rightly called every point invalid), and the server ahead of the load
generator; the figure is then the server's. The 1-minute load average before and after each point
is recorded.

    nice -n -10 .venv/bin/python benchmarks/serve_overhead.py --out /tmp/ovh/run.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from distinfer.serve.launch import free_port, served, stop_process_group

BIN = Path(sys.executable).parent
TTFT_MS, ITL_MS, MAX_TOKENS = 50.0, 20.0, 256
REQUEST_S = (TTFT_MS + (MAX_TOKENS - 1) * ITL_MS) / 1000.0
TOKENS_PER_USER_S = MAX_TOKENS / REQUEST_S
TTFT_TOL, TPOT_TOL = 0.05, 0.02
# Roles of the processes a token crosses (the rest is Ray's machinery, counted apart).
PATH_ROLES = ("server", "haproxy", "proxy", "ingress", "model")


@dataclass(frozen=True)
class Setup:
    name: str
    bare: bool = False
    layout: str = "auto"
    ingress_replicas: int = 1
    haproxy: bool = False
    env: tuple[tuple[str, str], ...] = ()


SETUPS = {
    s.name: s
    for s in (
        Setup("bare", bare=True),
        Setup("router", layout="router"),
        Setup("direct", layout="direct"),
        Setup("direct-haproxy", layout="direct", haproxy=True),
        Setup("router-haproxy", layout="router", haproxy=True),
        Setup("router-2", layout="router", ingress_replicas=2),
        Setup(
            "direct-haproxy-tp",
            layout="direct",
            haproxy=True,
            env=(("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"),),
        ),
        Setup(
            "direct-haproxy-main-loop",
            layout="direct",
            haproxy=True,
            env=(("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "0"),),
        ),
    )
}


@dataclass
class Point:
    setup: str
    users: int
    offered_tokens_per_s: float
    ttft_p50_ms: float | None = None
    tpot_p50_ms: float | None = None
    truth_ttft_p50_ms: float | None = None
    truth_tpot_p50_ms: float | None = None
    output_tokens_per_s: float | None = None
    completed: int = 0
    failed: int = 0
    valid: bool = False
    invalid_reasons: list[str] = field(default_factory=list)
    on_schedule: bool = False
    window_s: float = 0.0
    cpu_s_per_1k_tokens: dict[str, float] = field(default_factory=dict)
    cpu_pct_of_core: dict[str, float] = field(default_factory=dict)
    client_cpu_s_per_1k_tokens: float | None = None
    load_before: float = 0.0
    load_after: float = 0.0
    error: str | None = None


def models_file(directory: Path, setup: Setup, cap: int, truth: Path) -> Path:
    path = directory / f"models-{setup.name}.yaml"
    spec = {
        "models": [
            {
                "name": "synthetic",
                "engine": "synthetic",
                "ttft_ms": TTFT_MS,
                "itl_ms": ITL_MS,
                "max_ongoing_requests": cap,
                "max_queued_requests": cap,
                "vocabulary": ["lorem", "ipsum", "dolor", "sit", "amet"],
                "truth_log": str(truth),
            }
        ],
        "ingress": {"layout": setup.layout, "replicas": setup.ingress_replicas},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "haproxy" in proc.name() or cmd.startswith(("haproxy", "/usr/sbin/haproxy")):
        return "haproxy"
    if "ProxyActor" in cmd:
        return "proxy"
    if "HAProxyManager" in cmd:
        return "haproxy-manager"
    if "ServeReplica" in cmd:
        return "ingress" if "OpenAIIngress" in cmd else "model"
    if "ServeController" in cmd:
        return "controller"
    if "distinfer serve" in cmd or " serve --models " in cmd:
        return "server" if "--bare" in cmd else "driver"
    return "ray-other"


class CpuSampler:
    """Each second, the CPU seconds (user + system) of every process under `root`, by role."""

    def __init__(self, root: int, interval_s: float = 1.0) -> None:
        self.root = psutil.Process(root)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._procs: dict[int, tuple[psutil.Process, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> tuple[float, dict[str, float]]:
        by_role: dict[str, float] = {}
        for proc in self._tree():
            known = self._procs.get(proc.pid)
            if known is None or known[1] == "gone":
                # A Ray worker sets its title once it becomes an actor: classify again until then.
                known = (proc, role(proc))
                self._procs[proc.pid] = known
            try:
                times = known[0].cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            by_role[known[1]] = by_role.get(known[1], 0.0) + times.user + times.system
        return time.time(), by_role

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.sample())

    def __enter__(self) -> CpuSampler:
        self._procs.clear()
        self.samples = [self.sample()]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop.clear()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> tuple[float, dict[str, float]]:
        """CPU seconds by role over the widest sampled interval inside [t0, t1], and its length."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return 0.0, {}
        (a_t, a), (b_t, b) = inside[0], inside[-1]
        return b_t - a_t, {r: b.get(r, 0.0) - a.get(r, 0.0) for r in b}


@contextmanager
def server(setup: Setup, directory: Path, cap: int, niceness: int) -> Iterator[tuple[str, int]]:
    models = models_file(directory, setup, cap, directory / "truth.jsonl")
    env = {"RAY_worker_niceness": str(niceness), **dict(setup.env)}
    port, log = free_port(), directory / f"{setup.name}.log"
    args = ["--haproxy" if setup.haproxy else "--no-haproxy"] if not setup.bare else []
    with served(models, port, log, bare=setup.bare, env=env, args=args) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


def run_point(
    setup: Setup, url: str, sampler: CpuSampler, users: int, args: argparse.Namespace, directory: Path
) -> Point:
    point = Point(setup=setup.name, users=users, offered_tokens_per_s=users * TOKENS_PER_USER_S)
    warmup = args.warmup if args.warmup is not None else REQUEST_S
    out = directory / f"{setup.name}-u{users}"
    cmd = ["nice", "-n", str(args.client_nice), str(BIN / "distinfer"), "bench", "run"]
    cmd += ["--url", url, "--model", "synthetic", "--users", str(users), "--api", "completions"]
    cmd += ["--duration", str(warmup + args.steady), "--warmup", str(warmup), "--ramp", str(warmup)]
    cmd += ["--max-tokens", str(MAX_TOKENS), "--out", str(out), "--no-watch-status"]
    point.load_before = os.getloadavg()[0]
    log_path = directory / f"{setup.name}-u{users}.log"
    with log_path.open("wb") as log:
        client = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client_ps = psutil.Process(client.pid)
        client_cpu = 0.0
        try:
            while client.poll() is None:
                try:
                    # The client's tree (its worker processes): the last reading before it exits.
                    procs = [client_ps, *client_ps.children(recursive=True)]
                    client_cpu = max(client_cpu, sum(sum(p.cpu_times()[:2]) for p in procs))
                except psutil.NoSuchProcess:
                    pass
                time.sleep(0.5)
        finally:
            stop_process_group(client)  # Ctrl-C: no client left behind
    point.load_after = os.getloadavg()[0]
    summary_path = out / "summary.json"
    if client.returncode not in (0, 4) or not summary_path.exists():
        point.error = f"bench exit {client.returncode}: {log_path.read_text(errors='replace')[-800:]}"
        return point
    summary = json.loads(summary_path.read_text())
    metrics = summary["metrics"]
    point.ttft_p50_ms = metrics["ttft_ms"]["p50"]
    point.tpot_p50_ms = metrics["tpot_ms"]["p50"]
    point.output_tokens_per_s = metrics["output_throughput"]
    point.completed, point.failed = metrics["completed"], metrics["failed"]
    point.valid = bool(summary["valid"])
    point.invalid_reasons = list(summary.get("invalid_reasons") or [])
    point.truth_ttft_p50_ms, point.truth_tpot_p50_ms = truth_p50(
        directory / "truth.jsonl", out / "records.jsonl", metrics["window_start"], metrics["window_end"]
    )
    ttft, tpot = point.ttft_p50_ms, point.tpot_p50_ms
    truth_ttft, truth_tpot = point.truth_ttft_p50_ms, point.truth_tpot_p50_ms
    point.on_schedule = bool(
        point.valid
        and point.failed == 0
        and ttft is not None
        and tpot is not None
        and truth_ttft
        and truth_tpot
        and ttft <= truth_ttft * (1 + TTFT_TOL)
        and abs(tpot - truth_tpot) <= truth_tpot * TPOT_TOL
    )
    span, cpu = sampler.between(metrics["window_start"], metrics["window_end"])
    point.window_s = span
    tokens = (point.output_tokens_per_s or 0.0) * span
    if tokens > 0:
        per_1k = {r: 1000.0 * s / tokens for r, s in sorted(cpu.items())}
        per_1k["path"] = sum(v for r, v in per_1k.items() if r in PATH_ROLES)
        per_1k["all"] = sum(v for r, v in per_1k.items() if r not in ("path", "all"))
        point.cpu_s_per_1k_tokens = {r: round(v, 4) for r, v in per_1k.items()}
        point.cpu_pct_of_core = {r: round(100.0 * s / span, 1) for r, s in sorted(cpu.items())}
        whole_tokens = (point.output_tokens_per_s or 0.0) * metrics["window_s"]
        # The client's CPU over its whole run, per token of its window: an upper bound, for scale.
        point.client_cpu_s_per_1k_tokens = round(1000.0 * client_cpu / max(whole_tokens, 1.0), 4)
    return point


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def truth_p50(truth: Path, records: Path, w0: float, w1: float) -> tuple[float | None, float | None]:
    """The engine's own TTFT (model server received -> first token) and TPOT P50, in ms, over the
    requests the bench's latencies come from (successful, due inside its steady window)."""
    ids = set()
    for line in records.read_text().splitlines():
        rec = json.loads(line)
        if rec["ok"] and w0 <= rec["scheduled"] < w1:
            ids.add(rec["request_id"])
    ttft, tpot = [], []
    for line in truth.read_text().splitlines() if truth.exists() else []:
        row = json.loads(line)
        if row.get("request_id") not in ids or not row.get("first_token_unix"):
            continue
        received = row.get("received_unix") or row["arrival_unix"]
        ttft.append((row["first_token_unix"] - received) * 1000)
        if row.get("last_token_unix") and row["completion_tokens"] >= 2:
            tpot.append(
                (row["last_token_unix"] - row["first_token_unix"]) * 1000 / (row["completion_tokens"] - 1)
            )
    return _p50(ttft), _p50(tpot)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}".replace(",", " ")


def table(points: list[Point]) -> str:
    rows = [
        "| setup | users | offered tok/s | TTFT P50 ms (truth) | TPOT P50 ms (truth) | delivered tok/s "
        "| valid "
        "| on schedule "
        "| CPU-s / 1k tokens: path (proxy / haproxy / ingress / model / bare server) | all processes "
        "| load |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|---|",
    ]
    for p in points:
        c = p.cpu_s_per_1k_tokens
        parts = " / ".join(fmt(c.get(r), 3) for r in ("proxy", "haproxy", "ingress", "model", "server"))
        rows.append(
            f"| {p.setup} | {p.users} | {fmt(p.offered_tokens_per_s, 0)} "
            f"| {fmt(p.ttft_p50_ms)} ({fmt(p.truth_ttft_p50_ms)}) "
            f"| {fmt(p.tpot_p50_ms, 2)} ({fmt(p.truth_tpot_p50_ms, 2)}) "
            f"| {fmt(p.output_tokens_per_s, 0)} | {'yes' if p.valid else 'no'} "
            f"| {'**yes**' if p.on_schedule else 'no'} | {fmt(c.get('path'), 3)} ({parts}) "
            f"| {fmt(c.get('all'), 3)} | {p.load_before:.1f} → {p.load_after:.1f} |"
        )
    return "\n".join(rows)


def best(points: list[Point]) -> dict[str, dict[str, Any]]:
    """Each setup's highest offered rate on schedule, with that point's figures."""
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        if p.on_schedule and p.offered_tokens_per_s > out.get(p.setup, {}).get("offered_tokens_per_s", -1):
            out[p.setup] = {
                "users": p.users,
                "offered_tokens_per_s": round(p.offered_tokens_per_s),
                "delivered_tokens_per_s": round(p.output_tokens_per_s or 0),
                "path_cpu_s_per_1k_tokens": p.cpu_s_per_1k_tokens.get("path"),
                "all_cpu_s_per_1k_tokens": p.cpu_s_per_1k_tokens.get("all"),
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setups", default="bare,router,direct,direct-haproxy", help=f"of {list(SETUPS)}")
    parser.add_argument("--users", default="16,32,64,128,192,256", help="closed-loop user counts, rising")
    parser.add_argument("--steady", type=float, default=15.0, help="measured seconds per point")
    parser.add_argument(
        "--warmup", type=float, help="seconds left out (and ramp); default one request's length"
    )
    parser.add_argument("--client-nice", type=int, default=5, help="nice increment of the load generator")
    parser.add_argument(
        "--keep-going", action="store_true", help="run every user count even after a setup misses one"
    )
    parser.add_argument(
        "--ray-worker-niceness",
        type=int,
        default=os.nice(0),
        help="nice value of Ray's workers (Ray's default is 15); default: this process's, as the bare server",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here (and a .md table beside it)")
    args = parser.parse_args()
    # A background job ignores SIGINT: let SIGTERM unwind too, so every server started here stops.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setups = [SETUPS[name] for name in args.setups.split(",")]
    users = [int(u) for u in args.users.split(",")]

    started = time.time()
    load_at_start = os.getloadavg()
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="di-ovh-") as tmp:
        for setup in setups:
            directory = Path(tmp) / setup.name
            directory.mkdir()
            try:
                cap = max(256, 2 * max(users))
                with (
                    server(setup, directory, cap, args.ray_worker_niceness) as (url, pid),
                    CpuSampler(pid) as cpu,
                ):
                    misses = 0
                    for count in users:
                        point = run_point(setup, url, cpu, count, args, directory)
                        points.append(point)
                        print(json.dumps(asdict(point)), flush=True)
                        misses = 0 if point.on_schedule else misses + 1
                        if (misses >= 2 or point.error) and not args.keep_going:
                            break
            except (RuntimeError, TimeoutError) as err:
                points.append(
                    Point(setup=setup.name, users=0, offered_tokens_per_s=0, error=str(err)[-1500:])
                )
                print(f"{setup.name}: {err}", file=sys.stderr, flush=True)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "started_unix": started,
            "wall_s": round(time.time() - started, 1),
        },
        "engine": {"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "max_tokens": MAX_TOKENS},
        "criteria": {
            "ttft_p50_within_of_truth": TTFT_TOL,
            "tpot_p50_within_of_truth": TPOT_TOL,
            "bench_valid": True,
            "no_failed_request": True,
        },
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "points": [asdict(p) for p in points],
        "best": best(points),
    }
    text = table(points)
    print(text)
    print(json.dumps(report["best"], indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
