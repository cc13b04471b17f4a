"""A soak: steady load on the local platform for a long time; does anything grow or fail?

`distinfer serve` on a private local Ray (the local platform's serving path: HTTP proxy, ingress
replica, model replica; synthetic engine) takes `--users` closed-loop streams from `distinfer bench
run` for `--duration-min` minutes (30 by default). Every `--sample-s` seconds the script samples each
process of the server's tree (distinfer serve, Ray's GCS, raylet, dashboard, workers, Serve's
controller, proxy and replicas) and of the load client's tree: resident memory (RSS) and open file
descriptors. After the warm-up (`--warmup-min`), the first minute's medians are the baseline and the
last minute's medians the end:

- memory: the server's total RSS at the end is within 5 % of the baseline (each process is listed);
- files: no process holds more descriptors at the end than at the baseline;
- errors: the bench run's records hold no failed request, and it exits 0 (or 4, INVALID, when the
  load client fell behind on a busy machine: reported, not a failure of the server).

    nice -n 10 .venv/bin/python benchmarks/soak.py --out /tmp/soak/soak.json

Writes the samples and the verdict as JSON (`--out`) and prints the verdict; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from distinfer.serve.launch import DISTINFER, free_port, served, stop_process_group

MEMORY_GROWTH_LIMIT = 0.05


@dataclass
class Sample:
    t: float
    side: str  # "server" or "client"
    pid: int
    name: str
    rss: int
    fds: int


@dataclass
class ProcessFigures:
    side: str
    name: str
    pid: int
    rss_base_mib: float
    rss_end_mib: float
    rss_growth: float
    fds_base: float
    fds_end: float


@dataclass
class Verdict:
    server_rss_base_mib: float
    server_rss_end_mib: float
    server_rss_growth: float
    client_rss_base_mib: float
    client_rss_end_mib: float
    fd_growth: dict[str, float]
    failed_requests: int
    completed_requests: int
    bench_exit: int
    bench_invalid_reasons: list[str] = field(default_factory=list)
    processes: list[ProcessFigures] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def label(proc: psutil.Process) -> str:
    """Ray titles its workers (ray::ServeReplica:app:deployment); others by their command."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    if not cmd:
        return proc.name()
    first = cmd[0]
    if first.startswith("ray::"):
        return first.split()[0]
    words = [Path(w).name for w in cmd[:4] if not w.startswith("-")]
    return " ".join(words)[:60]


def tree(root: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample(roots: dict[str, int]) -> list[Sample]:
    now = time.time()
    out = []
    for side, root in roots.items():
        for proc in tree(root):
            try:
                with proc.oneshot():
                    out.append(
                        Sample(now, side, proc.pid, label(proc), proc.memory_info().rss, proc.num_fds())
                    )
            except psutil.Error:
                continue  # it ended between listing and sampling
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def analyse(samples: list[Sample], base: tuple[float, float], end: tuple[float, float]) -> Verdict:
    def window(lo: float, hi: float) -> list[Sample]:
        return [s for s in samples if lo <= s.t < hi]

    b, e = window(*base), window(*end)
    figures: list[ProcessFigures] = []
    fd_growth: dict[str, float] = {}
    for pid in sorted({s.pid for s in b} & {s.pid for s in e}):
        pb = [s for s in b if s.pid == pid]
        pe = [s for s in e if s.pid == pid]
        rb, re_ = _median([s.rss for s in pb]), _median([s.rss for s in pe])
        fb, fe = _median([s.fds for s in pb]), _median([s.fds for s in pe])
        figures.append(
            ProcessFigures(
                pb[0].side, pb[0].name, pid, rb / 2**20, re_ / 2**20, re_ / rb - 1 if rb else 0, fb, fe
            )
        )
        if fe > fb:
            fd_growth[f"{pb[0].name} ({pid})"] = fe - fb

    def total(side: str, part: list[Sample]) -> float:
        stamps = sorted({s.t for s in part})
        return _median([sum(s.rss for s in part if s.t == t and s.side == side) for t in stamps]) / 2**20

    server_base, server_end = total("server", b), total("server", e)
    return Verdict(
        server_rss_base_mib=server_base,
        server_rss_end_mib=server_end,
        server_rss_growth=server_end / server_base - 1 if server_base else 0.0,
        client_rss_base_mib=total("client", b),
        client_rss_end_mib=total("client", e),
        fd_growth=fd_growth,
        failed_requests=0,
        completed_requests=0,
        bench_exit=-1,
        processes=figures,
    )


def models_file(directory: Path, args: argparse.Namespace) -> Path:
    path = directory / "soak-models.yaml"
    spec = {
        "models": [
            {
                "name": "synthetic",
                "engine": "synthetic",
                "ttft_ms": args.ttft_ms,
                "itl_ms": args.itl_ms,
                "max_ongoing_requests": max(64, args.users),
                "max_queued_requests": max(64, args.users),
            }
        ]
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def bench_command(url: str, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        "nice", "-n", str(args.client_nice), DISTINFER, "bench", "run", "--url", url, "--model", "synthetic",
        "--users", str(args.users), "--duration", str(args.duration_min * 60), "--warmup",
        str(args.warmup_min * 60), "--max-tokens", str(args.max_tokens), "--api", "completions",
        "--scenario", "soak", "--out", str(out),
    ]  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> tuple[Verdict, list[Sample]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    samples: list[Sample] = []
    with served(models_file(work, args), port, work / "serve.log", bare=False) as server:
        out = work / "bench"
        with (work / "bench.log").open("wb") as log:
            client = subprocess.Popen(
                bench_command(url, out, args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        start = time.time()
        try:
            while client.poll() is None:
                samples.extend(sample({"server": server.pid, "client": client.pid}))
                elapsed = (time.time() - start) / 60
                print(f"\r{elapsed:5.1f} min, {len(samples)} samples", end="", file=sys.stderr, flush=True)
                time.sleep(args.sample_s)
        finally:
            if client.poll() is None:
                stop_process_group(client)  # type: ignore[arg-type]
        print(file=sys.stderr)
    load_end = start + args.duration_min * 60
    warm = start + args.warmup_min * 60
    verdict = analyse(samples, (warm, warm + 60), (load_end - 60, load_end))
    verdict.bench_exit = client.returncode
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        metrics = summary["metrics"]
        verdict.bench_invalid_reasons = summary["invalid_reasons"]
        verdict.completed_requests, verdict.failed_requests = metrics["completed"], metrics["failed"]
    all_failed = sum(1 for line in (out / "records.jsonl").read_text().splitlines() if '"ok":false' in line)
    verdict.failed_requests = max(verdict.failed_requests, all_failed)
    judge(verdict)
    return verdict, samples


def judge(v: Verdict) -> None:
    if v.server_rss_growth > MEMORY_GROWTH_LIMIT:
        v.problems.append(
            f"server RSS grew {v.server_rss_growth:+.1%} after warm-up (limit {MEMORY_GROWTH_LIMIT:.0%})"
        )
    if v.fd_growth:
        v.problems.append(f"open files grew: {v.fd_growth}")
    if v.failed_requests:
        v.problems.append(f"{v.failed_requests} failed requests")
    # 4 (INVALID) says the load client fell behind on a busy machine (bench_invalid_reasons says
    # how); the server's figures stand. Any other non-zero status is a failure of the soak.
    if v.bench_exit not in (0, 4):
        v.problems.append(f"distinfer bench run exited {v.bench_exit}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-min", type=float, default=30.0, help="minutes of load, warm-up included")
    parser.add_argument("--warmup-min", type=float, default=5.0, help="minutes before the baseline")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--users", type=int, default=16, help="closed-loop streams")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--client-nice", type=int, default=5, help="extra niceness of the load client")
    parser.add_argument("--out", type=Path, help="write samples and verdict as JSON here")
    args = parser.parse_args()
    if args.duration_min - args.warmup_min < 2:
        parser.error("--duration-min must exceed --warmup-min by at least 2 (a baseline and an end minute)")
    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="di-soak-") as tmp:
        verdict, samples = run(args, Path(tmp))
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "started_unix": started,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "verdict": asdict(verdict),
        "samples": [asdict(s) for s in samples],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in asdict(verdict).items() if k != "processes"}, indent=2))
    for p in sorted(verdict.processes, key=lambda p: -p.rss_end_mib):
        print(
            f"{p.side:6} {p.name[:44]:44} rss {p.rss_base_mib:7.1f} -> {p.rss_end_mib:7.1f} MiB "
            f"({p.rss_growth:+.1%})  fds {p.fds_base:.0f} -> {p.fds_end:.0f}"
        )
    print("PASS" if not verdict.problems else "FAIL: " + "; ".join(verdict.problems))
    return 0 if not verdict.problems else 1


if __name__ == "__main__":
    sys.exit(main())
