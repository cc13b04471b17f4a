"""One load host against two on the same target, with Locust's distributed mode (issue 24).

For each point (users, itl_ms) the script starts one synthetic `distinfer serve --bare` with a truth
log (bench/fidelity.py's truth server: ttft 50 ms, the point's itl, 64 tokens per request), then, one
after the other against it, the same closed-loop scenario driven

  1 host    by one load-host agent (`distinfer bench loadhost --share 1`) and the Locust master
            (`distinfer bench run --load-host lg1`),
  2 hosts   by two agents (`--share 2` each; `--load-host lg1 --load-host lg2`),

then `distinfer bench merge` on the fetched folders (here: copied, the agents run on this machine) and
the truth joined to the merged records by request id (TTFT and TPOT error, as the certificate does).
The "hosts" are processes of this machine: both configurations share its cores, so this measures
the distributed path's overhead and exactness, not what a second machine adds (benchmarks/README.md).

    .venv/bin/python benchmarks/loadhosts.py --out /tmp/lh-bench --points 32:10,128:10

Writes DIR/results.json and prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distinfer.bench.fidelity import compare_to_truth, read_truth, steady_successes, truth_server
from distinfer.results.certificate import event_rate
from distinfer.results.summary import Summary

BIN = Path(sys.executable).parent
TOKENS = 64
TTFT_MS = 50.0


def run_point(
    out: Path, url: str, truth: Path, users: int, itl_ms: float, hosts: int, port: int
) -> dict[str, Any]:
    name = f"u{users}-itl{itl_ms:g}-{hosts}h"
    folder = out / "run" / "scenarios" / name
    one_request_s = (TTFT_MS + (TOKENS - 1) * itl_ms) / 1000.0
    spec = {
        "name": name, "model": "synthetic", "url": url, "users": users, "api": "completions",
        "duration_s": round(one_request_s, 1) + 15.0, "warmup_s": round(one_request_s, 1),
        "max_tokens": TOKENS, "drain_timeout_s": 30,
    }  # fmt: skip
    names = [f"lg{k + 1}" for k in range(hosts)]
    spec_file = out / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    truth_from = len(read_truth(truth))
    agents = [
        subprocess.Popen(
            [str(BIN / "distinfer"), "bench", "loadhost", "--master", f"127.0.0.1:{port}", "--name", host,
             "--dir", str(out / "hosts" / name / host), "--spec", str(spec_file), "--share", str(hosts)],
        )
        for host in names
    ]  # fmt: skip
    master = [str(BIN / "distinfer"), "bench", "run", "--spec", str(spec_file), "--out", str(folder)]
    master += [f"--load-host={h}" for h in names] + ["--master-port", str(port)]
    subprocess.run(master, check=True)
    for agent in agents:
        agent.wait(timeout=120)
    for host in names:
        shutil.copytree(out / "hosts" / name / host, folder / "hosts" / host, dirs_exist_ok=True)
    subprocess.run([str(BIN / "distinfer"), "bench", "merge", "--out", str(folder)], check=False)
    summary = Summary.load_file(folder)
    assert summary is not None
    time.sleep(0.5)
    fidelity = compare_to_truth(steady_successes(folder, summary), read_truth(truth, truth_from))
    m = summary.metrics
    return {
        "point": name, "users": users, "itl_ms": itl_ms, "load_hosts": hosts, "valid": summary.valid,
        "invalid_reasons": summary.invalid_reasons,
        "events_per_s": event_rate(m.output_throughput, m.request_throughput),
        "ttft_p50_ms": m.ttft_ms.p50, "ttft_p99_ms": m.ttft_ms.p99, "tpot_p50_ms": m.tpot_ms.p50,
        "ttft_error": fidelity.error("ttft"), "tpot_error": fidelity.error("tpot"),
        "achieved_concurrency": m.achieved_concurrency,
        "per_host": [
            {"host": h.host, "workers": h.workers, "users": h.users, "events_per_s": h.events_per_s,
             "loop_lag_p99_ms": h.client.loop_lag_ms_p99 if h.client else None,
             "worker_cpu_mean": h.client.worker_cpu_percent_mean if h.client else None,
             "start_offset_ms": h.start_offset_ms, "valid": h.valid}
            for h in summary.load_hosts or []
        ],
        "load_1min": os.getloadavg()[0],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--points", default="32:10,128:10", help="users:itl_ms, comma separated")
    parser.add_argument("--port", type=int, default=24857, help="the Locust master's port")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for point in args.points.split(","):
        users, itl = point.split(":")
        with truth_server(
            args.out / f"server-{point.replace(':', '-')}", TTFT_MS, float(itl), int(users)
        ) as (
            url,
            truth,
            _pid,
        ):
            for hosts in (1, 2):
                row = run_point(args.out, url, truth, int(users), float(itl), hosts, args.port)
                results.append(row)
                (args.out / "results.json").write_text(json.dumps(results, indent=2))
                ttft, tpot = row["ttft_p50_ms"], row["tpot_p50_ms"]
                print(
                    f"{row['point']}: {row['events_per_s']:,.0f} events/s, TTFT P50 {ttft:.2f} ms "
                    f"({row['ttft_error']:+.2%}), TPOT P50 {tpot:.3f} ms ({row['tpot_error']:+.2%}), "
                    f"valid {row['valid']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
