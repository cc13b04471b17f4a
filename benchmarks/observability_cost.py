"""What the observability costs: the demo's tokens/s with and without it, same run, same machine.

"With" is what `make demo` runs: each request's server timing on its final chunk (and joined to the
load generator's records), the hf engine's vLLM-named metrics exported through Ray, Ray handing its
metrics to the export port every 5 s, and Debian's Prometheus scraping that port and a node exporter
every 5 s. "Without": the app's `telemetry` switched off (no server timing, no engine metrics), Ray at its
default 10 s, no Prometheus, no node exporter. Ray Serve's own metrics exist either way (Ray has no
switch for them).

The parts (`--arms`): `app` is the app's telemetry alone (server timing and engine metrics, nothing
scraping), `scraping` is Prometheus and the node exporter alone (the app's telemetry off); `with` is
both, `without` neither.

One private Ray on this machine (free ports; its own temp dir), the demo's model (SmolLM2-135M on the
CPU, hf engine, 8 slots) and the demo's second scenario (8 closed-loop users, 32 output tokens,
temperature 1, chat): the arms run in turn, forwards then backwards (ABBA for two arms; `--pairs`
rounds), so a drift of the machine's load falls on every arm alike; each phase redeploys the app, then
runs `distinfer bench run` for `--duration` seconds (warm-up excluded from its figures). Tokens/s is
the summary's output_throughput.

    nice -n 10 .venv/bin/python benchmarks/observability_cost.py --out /tmp/obs/cost.json
    nice -n 10 .venv/bin/python benchmarks/observability_cost.py --arms without,app,scraping,with \
        --pairs 2 --out /tmp/obs/parts.json

Prints each phase and the verdict; writes everything as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from distinfer.config import app_args, parse_models
from distinfer.serve.launch import DISTINFER, child_process
from distinfer.serve.local_ray import LocalRay, env_vars, free_ports

PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
AIM = 0.02  # the issue's: under 2 % fewer tokens/s with everything on
# What each arm turns on: (the app's server timing and engine metrics, Prometheus + node exporter).
ARMS = {"without": (False, False), "app": (True, False), "scraping": (False, True), "with": (True, True)}


@dataclass
class Phase:
    index: int
    arm: str
    started: float
    output_tokens_per_s: float
    request_throughput: float
    ttft_p50_ms: float | None
    tpot_p50_ms: float | None
    completed: int
    valid: bool
    invalid_reasons: list[str]
    records_with_timing: int
    load_1min_before: float
    load_1min_after: float


@dataclass
class Result:
    machine: dict[str, Any]
    settings: dict[str, Any]
    phases: list[Phase] = field(default_factory=list)
    arm_means: dict[str, float] = field(default_factory=dict)  # output tokens/s
    arm_costs: dict[str, float] = field(default_factory=dict)  # 1 - arm / without
    with_mean: float = 0.0
    without_mean: float = 0.0
    cost: float = 0.0  # 1 - with / without
    pair_costs: list[float] = field(default_factory=list)
    verdict: str = ""


def models(model_dir: Path, observed: bool) -> dict[str, Any]:
    return app_args(
        parse_models(
            {
                "models": [
                    {
                        "name": "smollm2", "engine": "hf", "model": str(model_dir), "device": "cpu",
                        "dtype": "float32", "max_ongoing_requests": 8, "max_queued_requests": 64,
                        "num_cpus": 1,
                    }
                ],
                "telemetry": {"server_timing": observed, "engine_metrics": observed},
            },
            "observability_cost",
        )
    )  # fmt: skip


def deploy(args: dict[str, Any], name: str, base: str) -> None:
    from ray import serve

    from distinfer.serve.app import build_app

    serve.run(build_app(args), name=name, route_prefix="/", blocking=False)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                    return
        time.sleep(1)
    raise TimeoutError("the app did not come up in 10 minutes")


@contextlib.contextmanager
def scraping(work: Path, metrics_port: int, interval_s: int) -> Iterator[None]:
    """Debian's node exporter and Prometheus scraping it and Ray's export port, as prometheus_local does."""
    node_port, prom_port = free_ports(2)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    targets = {"ray": metrics_port, "node": node_port}
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{interval_s}s"},
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                    for job, port in targets.items()
                ],
            }
        )
    )
    node = [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{node_port}"]
    prom = [
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]  # fmt: skip
    with child_process(node, work / "node-exporter.log"), child_process(prom, work / "prometheus.log"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield


def bench(base: str, out: Path, a: argparse.Namespace) -> dict[str, Any]:
    argv = [
        DISTINFER, "bench", "run", "--url", base, "--model", "smollm2", "--users", str(a.users),
        "--duration", str(a.duration), "--warmup", str(a.warmup), "--max-tokens", str(a.max_tokens),
        "--temperature", "1", "--api", "chat", "--scenario", out.name, "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=a.duration + 900)
    if result.returncode not in (0, 4):
        raise RuntimeError(f"bench run failed ({result.returncode}): {result.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def run_phase(index: int, arm: str, base: str, local: LocalRay, work: Path, a: argparse.Namespace) -> Phase:
    telemetry, scraped = ARMS[arm]
    deploy(models(a.model_dir, telemetry), "demo", base)
    out = work / f"phase-{index}-{arm}"
    load_before = os.getloadavg()[0]
    started = time.time()
    if scraped:
        with scraping(work / out.name, local.ports["--metrics-export-port"], 5):
            summary = bench(base, out, a)
    else:
        summary = bench(base, out, a)
    m = summary["metrics"]
    timed = sum(1 for line in (out / "records.jsonl").read_text().splitlines() if '"server":{' in line)
    return Phase(
        index=index,
        arm=arm,
        started=started,
        output_tokens_per_s=m["output_throughput"],
        request_throughput=m["request_throughput"],
        ttft_p50_ms=m["ttft_ms"]["p50"],
        tpot_p50_ms=m["tpot_ms"]["p50"],
        completed=m["completed"],
        valid=summary["valid"],
        invalid_reasons=summary["invalid_reasons"],
        records_with_timing=timed,
        load_1min_before=load_before,
        load_1min_after=os.getloadavg()[0],
    )


def describe(p: Phase) -> str:
    return (
        f"phase {p.index} {p.arm:8}: {p.output_tokens_per_s:7.1f} tok/s, "
        f"TTFT P50 {p.ttft_p50_ms or 0:6.1f} ms, {p.completed} done, {p.records_with_timing} timed, "
        f"load {p.load_1min_before:.1f}->{p.load_1min_after:.1f}"
    )


def order(arms: list[str], pairs: int) -> list[str]:
    """Forwards, then backwards, `pairs` rounds: for two arms ABBA (without, with, with, without, ...)."""
    out: list[str] = []
    for i in range(pairs):
        out += arms if i % 2 == 0 else arms[::-1]
    return out


def arm_list(text: str) -> list[str]:
    arms = [arm.strip() for arm in text.split(",") if arm.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or "without" not in arms or len(set(arms)) != len(arms):
        raise argparse.ArgumentTypeError(
            f"--arms {text!r}: each of {', '.join(ARMS)} at most once, `without` (the baseline) included"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return arms


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/var/lib/distinfer/models/smollm2"))
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--duration", type=float, default=70.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the arms (forwards, backwards)")
    parser.add_argument("--arms", type=arm_list, default=["without", "with"], help=", ".join(ARMS))
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    for binary in (PROMETHEUS, NODE_EXPORTER):
        if not Path(binary).exists():
            sys.exit(f"{binary} is missing: bash scripts/install-system-deps.sh")
    if not (a.model_dir / "config.json").exists():
        subprocess.run([DISTINFER, "model", "smollm2", str(a.model_dir)], check=True)
    work = Path(tempfile.mkdtemp(prefix="obs-cost-"))
    result = Result(
        machine={
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        },
        settings={k: str(v) for k, v in vars(a).items()},
    )
    # Ray's own export cadence is a process setting: "with" runs at the ray_local role's 5 s for the
    # whole run (the stricter case for "without"), so the phases differ only in what the switches touch.
    local = LocalRay.start(num_cpus=4, extra_env={"RAY_metrics_report_interval_ms": "5000"})
    try:
        with env_vars(local.env):
            import ray
            from ray import serve

            ray.init(address=local.address, _node_ip_address="127.0.0.1", logging_level="WARNING")
            (port,) = free_ports(1)
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            base = f"http://127.0.0.1:{port}"
            for index, arm in enumerate(order(a.arms, a.pairs)):
                phase = run_phase(index, arm, base, local, work, a)
                result.phases.append(phase)
                print(describe(phase), flush=True)
            serve.shutdown()
    finally:
        # The driver first: a driver whose Ray is gone aborts the process (the error unprinted).
        with contextlib.suppress(Exception):
            ray.shutdown()
        local.stop()
    by_arm = {arm: [p.output_tokens_per_s for p in result.phases if p.arm == arm] for arm in a.arms}
    result.arm_means = {arm: statistics.mean(values) for arm, values in by_arm.items()}
    result.without_mean = result.arm_means["without"]
    result.arm_costs = {arm: 1 - mean / result.without_mean for arm, mean in result.arm_means.items()}
    for arm in a.arms:
        if arm != "without":
            cost = result.arm_costs[arm]
            print(f"{arm}: {result.arm_means[arm]:.1f} tok/s, cost {cost:+.2%} against without")
    if "with" in by_arm:
        result.with_mean, result.cost = result.arm_means["with"], result.arm_costs["with"]
        result.pair_costs = [1 - w / wo for w, wo in zip(by_arm["with"], by_arm["without"], strict=True)]
        met = "met" if result.cost < AIM else "NOT met"
        pairs = ", ".join(f"{c:+.2%}" for c in result.pair_costs)
        result.verdict = (
            f"with {result.with_mean:.1f} tok/s, without {result.without_mean:.1f} tok/s: cost "
            f"{result.cost:+.2%} (rounds {pairs}); aim < {AIM:.0%}: {met}"
        )
        print(result.verdict)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
