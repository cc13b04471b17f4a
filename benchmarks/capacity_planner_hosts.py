"""The capacity planner checked on the local platform: predict three hosts from one and two, then measure.

In one run of this script: three test hosts (podman containers booting systemd, tests/cluster/
testhosts.py) and `site.yml` on the local platform (Ray across the hosts, one replica per host of a
synthetic model whose replicas have SLOTS slots and emit tokens on a fixed clock), run three times
as the cluster grows, one host, two, three (each run adds a host; nothing restarts). Each run's
benchmark (the loadtest role) has two scenarios:

- `capacity`: a capacity search (`distinfer bench capacity`) for the highest Poisson rate within the
  SLO below, to 5 %;
- `tokens`: closed loop at SLOTS users per replica, output tokens/s.

Then the planner (python/distinfer/capacity_plan.py) is fitted on the one- and two-host runs and
predicts the three-host capacity and tokens/s, which the third run measured; the prediction error is
the figure (aim: within 15 %). Also predicted: the replicas a target of twice the measured three-host
capacity needs.

Client and server: the load generator runs on this machine (the controller), the servers in the
containers; all share this machine's cores, so the script runs niced like everything else here and
records the load average. The models' rates are kept low (a few requests/s per replica) so that the
replicas, not the shared CPU, are what saturates.

    nice -n 10 .venv/bin/python benchmarks/capacity_planner_hosts.py \
        --out benchmarks/results/capacity_planner_hosts.json

Needs root, podman and debootstrap (`bash scripts/install-system-deps.sh`), like tests/cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "cluster"))

from playbook_runs import run_playbook  # noqa: E402
from testhosts import TestHosts, prune_stale_runs  # noqa: E402

from distinfer.capacity_plan import fit, markdown_table, predictions, series_from_runs  # noqa: E402

log = logging.getLogger("capacity_planner_hosts")

HOSTS = ("node1", "node2", "node3")
HTTP_PORT = 24800
SLOTS = 8
TTFT_MS, ITL_MS, TOKENS = 50, 50, 32  # a slot is held 50 + 31 x 50 = 1600 ms
SLO = {"name": "bench", "ttft_ms": 500, "tpot_ms": 75, "percentile": 95}
START_RATE_PER_REPLICA = 3.0

MODELS = {
    "models": [
        {
            "name": "synth",
            "engine": "synthetic",
            "ttft_ms": TTFT_MS,
            "itl_ms": ITL_MS,
            "num_cpus": 1.5,  # one replica per host: each offers Ray 2 CPUs
            "replicas": 1,
            "max_ongoing_requests": SLOTS,
            "max_queued_requests": 32,
        }
    ],
    "ingress": {"num_cpus": 0.1},
    "http": {"host": "0.0.0.0", "port": HTTP_PORT},
}


def scenarios(replicas: int) -> dict[str, Any]:
    return {
        "defaults": {"max_tokens": TOKENS, "api": "completions", "drain_timeout_s": 60},
        "scenarios": [
            {
                "name": "capacity",
                "duration_s": 12,
                "warmup_s": 4,
                "slo": SLO,
                "capacity": {
                    "start_rate": START_RATE_PER_REPLICA * replicas,
                    "tolerance": 0.05,
                    "min_rate": 0.5,
                    "max_steps": 10,
                    "invalid_retries": 1,
                },
            },
            {"name": "tokens", "users_per_replica": SLOTS, "duration_s": 40, "warmup_s": 8},
        ],
    }


def write_inventory(hosts: TestHosts, workdir: Path, names: list[str], run_id: str) -> Path:
    group_vars = {
        "distinfer_platform": "local",
        "distinfer_models_file": str(workdir / "models.yaml"),
        "distinfer_results_dir": str(workdir / "results"),
        "distinfer_run_id": run_id,
        "ray_local_num_cpus": 2,
        "ray_local_object_store_memory": 100 * 1024 * 1024,
        "distinfer_scenarios": scenarios(len(names)),
        "distinfer_chat": False,
    }
    return hosts.write_local_platform_inventory(workdir / f"inventory-{len(names)}.yml", names, group_vars)


def measure(workdir: Path, keep: bool) -> dict[str, Any]:
    prune_stale_runs()
    (workdir / "models.yaml").write_text(yaml.safe_dump(MODELS, sort_keys=False))
    runs: dict[int, dict[str, Any]] = {}
    with TestHosts(HOSTS, workdir / "testhosts") as hosts:
        try:
            for count in (1, 2, 3):
                names = list(HOSTS[:count])
                inventory = write_inventory(hosts, workdir, names, f"hosts-{count}")
                started, load = time.monotonic(), os.getloadavg()[0]
                log.info("site.yml on %d host(s)", count)
                run = run_playbook(
                    REPO / "site.yml", inventory, log=workdir / "logs" / f"hosts-{count}.log", timeout=5400
                )
                if run.returncode != 0:
                    raise SystemExit(f"site.yml on {count} host(s) failed:\n{run.describe()}")
                runs[count] = {
                    "wall_s": round(time.monotonic() - started, 1),
                    "load_before": load,
                    "load_after": os.getloadavg()[0],
                }
        finally:
            if not keep:
                for host in hosts.hosts:
                    hosts.ssh(
                        host.name, "systemctl stop --no-block distinfer-ray.service || true", check=False
                    )
    return runs


def evaluate(results: Path) -> dict[str, Any]:
    train = [results / "hosts-1", results / "hosts-2"]
    measured = {s.label: s for s in series_from_runs([results / "hosts-3"])}
    out: dict[str, Any] = {}
    for series in series_from_runs(train):
        model = fit(series.points)
        (prediction,) = predictions(model, [3], measured[series.label].points)
        entry = {
            "unit": series.unit,
            "fit": model.model_dump(mode="json"),
            "measured": {p.replicas: p.value for p in series.points},
            "predicted_3": prediction.predicted,
            "measured_3": prediction.measured,
            "error": prediction.error,
        }
        if series.quantity == "capacity" and prediction.measured:
            target = 2 * prediction.measured
            entry["target"] = {"rate": target, "replicas": model.replicas_for(target)}
        out[f"{series.quantity}: {series.label}"] = entry
    return out


def table(evaluation: dict[str, Any]) -> str:
    header = ("quantity", "1 host", "2 hosts", "fit", "predicted 3 hosts", "measured 3 hosts", "error")
    rows = [
        (
            f"{label} ({e['unit']})",
            f"{e['measured'][1]:,.2f}",
            f"{e['measured'][2]:,.2f}",
            f"{e['fit']['law']}, sigma {e['fit']['sigma']:.3f}",
            f"{e['predicted_3']:,.2f}",
            f"{e['measured_3']:,.2f}",
            f"{e['error']:+.1%}",
        )
        for label, e in evaluation.items()
    ]
    return "\n".join(markdown_table(header, "|---|---:|---:|---|---:|---:|---:|", rows))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="The figures (JSON).")
    parser.add_argument(
        "--workdir", type=Path, help="Keep results and logs here (default: a temporary folder)."
    )
    parser.add_argument("--keep", action="store_true", help="Leave Ray running on the hosts (debugging).")
    parser.add_argument("--evaluate-only", action="store_true", help="Only fit and predict from --workdir.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="capacity-planner-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs = {} if args.evaluate_only else measure(workdir, args.keep)
    evaluation = evaluate(workdir / "results")
    document = {
        "command": " ".join(sys.argv),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "slots_per_replica": SLOTS,
        "slot_time_ms": TTFT_MS + (TOKENS - 1) * ITL_MS,
        "slo": SLO,
        "runs": runs,
        "evaluation": evaluation,
        "workdir": str(workdir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(table(evaluation))


if __name__ == "__main__":
    main()
