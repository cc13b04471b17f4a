"""An autoscaling scenario for real: a synthetic model on the session's Ray Serve with autoscaling
min 1 / max 3, a step from 1 to 6 closed-loop users sent by `distinfer bench run`, which samples the
replicas from Serve's REST API on the dashboard (with Ray's auth token) into replicas.jsonl.

The replicas grow, within [min, max]; the summary's scale-up time, SLO-violation seconds and
replica-seconds, and the report's, are computed again here from the recorded samples and records.
Serve's delays are short (upscale 1 s, metrics every 0.5 s over 1 s) so the whole test takes ~30 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from autoscale_figures import check_figures
from distinfer.bench.replicas import ReplicaSource
from distinfer.config import parse_models

APP = "autoscale"
MODEL = "as-syn"
STEP_AT_S = 4.0
DISTINFER = str(Path(sys.executable).parent / "distinfer")
DURATION_S = 16.0
SLO_TTFT_MS = 250.0


def _models() -> Any:
    # Two slots a replica, 0.4 s a request: six users queue on one replica (TTFT ~1 s, past the SLO)
    # and fit on three (six slots).
    return parse_models(
        {
            "models": [
                {
                    "name": MODEL,
                    "engine": "synthetic",
                    "itl_ms": 20,
                    "max_ongoing_requests": 2,
                    "max_queued_requests": 64,
                    "num_cpus": 0.1,
                    "autoscaling": {
                        "min_replicas": 1,
                        "max_replicas": 3,
                        "target_ongoing_requests": 2,
                        "upscale_delay_s": 1,
                        "downscale_delay_s": 600,
                        "look_back_period_s": 1,
                        "metrics_interval_s": 0.5,
                    },
                }
            ]
        }
    )


def _scenario(url: str) -> dict[str, Any]:
    return {
        "name": "step-1-to-6",
        "model": MODEL,
        "url": url,
        "duration_s": DURATION_S,
        "max_tokens": 20,
        "drain_timeout_s": 10,
        "steps": [{"at_s": 0, "users": 1}, {"at_s": STEP_AT_S, "users": 6}],
        "slo": {"name": "test", "ttft_ms": SLO_TTFT_MS, "percentile": 90},
        "autoscaling": _models().models[0].autoscaling.model_dump(exclude_none=True),
        "peak_static_replicas": 3,
        "workers": 1,
    }


def test_a_load_step_grows_the_replicas_and_the_figures_follow_from_the_samples(
    ray_serve: Any, tmp_path: Path
) -> None:
    url = ray_serve.deploy(_models(), APP)
    out = tmp_path / "run" / "scenarios" / "step-1-to-6"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_scenario(url)))
    args = [DISTINFER, "bench", "run", "--spec", str(spec), "--out", str(out)]
    args += ReplicaSource(ray_serve.local.dashboard_url, ray_serve.local.token_path, APP).cli_args()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    finally:
        ray_serve.delete(APP)
    assert done.returncode in (0, 4), done.stderr[-3000:]

    found = check_figures(
        out, bounds=(1, 3), step_at_s=STEP_AT_S, need=3, duration_s=DURATION_S, slo_ttft_ms=SLO_TTFT_MS
    )
    serving, total = found["serving_s"], found["reported_replica_seconds"]

    # The report says the same.
    report = tmp_path / "report"
    command = [DISTINFER, "report", str(tmp_path / "run"), "--out", str(report)]
    made = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    text = (report / "report.md").read_text()
    assert (report / "autoscaling.png").stat().st_size > 0  # replicas against the load, drawn
    assert "## Autoscaling" in text
    row = next(line for line in text.splitlines() if line.startswith("| step-1-to-6") and "1-3" in line)
    assert f"{total:.1f}" in row and f"{(1 - total / (3 * DURATION_S)) * 100:.1f} %" in row
    assert (
        f"serving after {serving:.1f} s" in text if serving is not None else "not serving by the end" in text
    )
