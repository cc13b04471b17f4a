"""An autoscaling scenario for real: a synthetic model on the session's Ray Serve with autoscaling
min 1 / max 3, a step from 1 to 6 closed-loop users sent by `distinfer bench run`, which samples the
replicas from Serve's REST API on the dashboard (with Ray's auth token) into replicas.jsonl.

The replicas grow, within [min, max]; the summary's scale-up time, SLO-violation seconds and
replica-seconds, and the report's, are computed again here from the recorded samples and records.
Serve's delays are short (upscale 1 s, metrics every 0.5 s over 1 s) so the whole test takes ~30 s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

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

    summary = json.loads((out / "summary.json").read_text())
    figures = summary["autoscaling"]
    samples = [json.loads(line) for line in (out / "replicas.jsonl").read_text().splitlines()]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    start = summary["started"]
    during = [s for s in samples if start <= s["t"] <= start + DURATION_S]

    # Grew, and only within [min, max].
    assert figures["source"] == "replicas.jsonl"
    assert all(1 <= s["running"] <= 3 and 1 <= s["target"] <= 3 for s in during), during
    assert max(s["running"] for s in during) > 1, during
    assert figures["within_bounds"] is True

    # Scale-up to serving: the first sample at or after the step with 3 RUNNING (6 users / 2 per replica).
    change = start + STEP_AT_S
    # (On a loaded machine the third replica may come after the load: then none, and the scaling
    # window runs to the end.)
    serving = next((s["t"] - change for s in samples if s["t"] >= change and s["running"] >= 3), None)
    (up,) = figures["scale_ups"]
    assert up["need"] == 3
    if serving is None:
        assert up["serving_s"] is None
    else:
        assert math.isclose(up["serving_s"], round(serving, 3), abs_tol=1e-3)
    scaled_s = STEP_AT_S + serving if serving is not None else DURATION_S

    # SLO-violation seconds while scaling: whole seconds after the start, from the step until serving,
    # in which a request ended failed or with its TTFT past the limit.
    def violated(r: dict[str, Any]) -> bool:
        if not r["ok"]:
            return r.get("error_kind") != "cancelled"
        return r["first_token"] is None or (r["first_token"] - r["sent"]) * 1000 > SLO_TTFT_MS

    seconds = {int(r["end"] - start) for r in records if violated(r) and r["end"] >= start}
    scaling = [k for k in seconds if k + 1 > STEP_AT_S and k < scaled_s]
    assert up["slo_violated_s"] == len(scaling)
    assert figures["slo_violated_s"] == len([k for k in seconds if k < DURATION_S])

    # Replica-seconds: each sample's RUNNING held until the next, over the load.
    ordered = sorted(samples, key=lambda s: s["t"])
    total = 0.0
    for i, s in enumerate(ordered):
        begin = start if i == 0 else max(start, s["t"])
        end = start + DURATION_S if i + 1 == len(ordered) else min(start + DURATION_S, ordered[i + 1]["t"])
        total += s["running"] * max(0.0, end - begin)
    assert math.isclose(figures["replica_seconds"], round(total, 3), abs_tol=1e-3)
    assert total < 3 * DURATION_S  # fewer than the static peak size, which ran 3 all along

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
