"""Ray Serve autoscaling against a static deployment of the peak size, under the same changing load.

One private local Ray (its own ports, temp dir and auth token; stopped at the end), Serve's HTTP proxy
on a free port, and the synthetic engine (ttft 50 ms, itl 20 ms, 32 tokens with ignore_eos: ~0.67 s
a request), 4 requests in flight per replica. Two deployments in turn, each loaded by `distinfer bench
run` with the same closed-loop steps (2 users, 12 from 20 s, 2 again from 70 s, 100 s in all) and the
same SLO (TTFT <= 300 ms at P90):

  static-3   3 fixed replicas: the smallest size that holds 12 users within the SLO (12 / 4 slots);
  auto-1-3   autoscaling 1..3 replicas, target 4 ongoing requests per replica, upscale after 5 s,
             downscale after 10 s, metrics each second over 5 s.

The autoscaling run samples its replicas from Serve's REST API on the dashboard into replicas.jsonl;
`distinfer report` then gives the autoscaling section (scale-up time, SLO seconds while scaling,
replica-seconds against static-3's). Both scenarios go into one run folder (`--run-dir`); the figures
into `--out` as JSON.

The load client runs under `nice -n 10` beside the server (the 2 cores are shared): the server keeps
the cores first, so the client's lateness (the summaries' loop lag and send lag) shows rather than
the server's being starved by it.

    .venv/bin/python benchmarks/autoscaling.py --run-dir /tmp/autoscaling/run \
        --out benchmarks/results/autoscaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distinfer.bench.replicas import ReplicaSource
from distinfer.config import parse_models
from distinfer.serve.runner import serve_on_private_ray

BIN = Path(sys.executable).parent
DISTINFER = str(BIN / "distinfer")
STEPS = [{"at_s": 0, "users": 2}, {"at_s": 20, "users": 12}, {"at_s": 70, "users": 2}]
DURATION_S = 100.0
SLO = {"name": "ttft-300-p90", "ttft_ms": 300, "percentile": 90}
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 4,
    "upscale_delay_s": 5,
    "downscale_delay_s": 10,
    "look_back_period_s": 5,
    "metrics_interval_s": 1,
}


def models(name: str, scaling: dict[str, Any] | None) -> Any:
    entry: dict[str, Any] = {
        "name": name,
        "engine": "synthetic",
        "ttft_ms": 50,
        "itl_ms": 20,
        "max_ongoing_requests": 4,
        "max_queued_requests": 64,
        "num_cpus": 0.1,
    }
    entry |= {"autoscaling": scaling} if scaling else {"replicas": 3}
    return parse_models({"models": [entry]})


def deploy(name: str, scaling: dict[str, Any] | None, base: str) -> str:
    from ray import serve

    from distinfer.serve.app import build_app

    # The whole file as args: app_args leave a fixed count to a Serve config's `deployments`, which
    # serve.run has none of (static-3 would get one replica).
    args = models(name, scaling).model_dump(mode="json", exclude_none=True)
    serve.run(build_app(args), name=name, route_prefix=f"/{name}", blocking=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return f"{base}/{name}"
        time.sleep(0.5)
    raise TimeoutError(f"{name} not running")


def bench(scenario: dict[str, Any], out: Path, source: ReplicaSource | None) -> int:
    """`distinfer bench run` of one scenario under `nice -n 10`, sampling replicas from `source`."""
    spec = out.parent / f"{scenario['name']}.spec.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(scenario))
    command = ["nice", "-n", "10", DISTINFER, "bench", "run", "--spec", str(spec), "--out", str(out)]
    return subprocess.run(command + (source.cli_args() if source else []), check=False).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scenarios = args.run_dir / "scenarios"
    began, load_before = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), os.getloadavg()
    common = {"duration_s": DURATION_S, "max_tokens": 32, "steps": STEPS, "slo": SLO, "workers": 1}
    codes = {}
    with serve_on_private_ray(num_cpus=8) as (local, port):
        from ray import serve

        base = f"http://127.0.0.1:{port}"
        for name, scaling in (("static-3", None), ("auto-1-3", AUTOSCALING)):
            url = deploy(name, scaling, base)
            scenario = {**common, "name": name, "model": name, "url": url}
            if scaling:
                scenario |= {"autoscaling": scaling, "peak_static_scenario": "static-3"}
            else:
                scenario["meta"] = {"replicas": "3"}
            source = ReplicaSource(local.dashboard_url, local.token_path, name) if scaling else None
            codes[name] = bench(scenario, scenarios / name, source)
            serve.delete(name)
    subprocess.run([DISTINFER, "report", str(args.run_dir)], check=True)
    result: dict[str, Any] = {
        "began": began,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "exit_codes": codes,
        "steps": STEPS,
        "slo": SLO,
        "autoscaling": AUTOSCALING,
    }
    for name in codes:
        summary = json.loads((scenarios / name / "summary.json").read_text())
        result[name] = {
            "valid": summary["valid"],
            "invalid_reasons": summary["invalid_reasons"],
            "slo_result": summary["metrics"]["slo_result"],
            "ttft_ms": summary["metrics"]["ttft_ms"],
            "availability": summary["availability"],
            "autoscaling": summary.get("autoscaling"),
            "client": summary["client"],
        }
    report = (args.run_dir / "report" / "report.md").read_text()
    start = report.find("## Autoscaling")
    result["report_section"] = report[start : report.find("\n## ", start + 1)]
    args.out.write_text(json.dumps(result, indent=2))
    print(result["report_section"])


if __name__ == "__main__":
    main()
