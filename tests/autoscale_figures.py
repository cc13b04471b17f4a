"""The autoscaling figures computed again from what a run recorded, for the tests that run an autoscaling
scenario for real (tests/serve/test_serve_autoscaling.py on the session's Ray Serve, and
tests/cluster/test_local_platform.py through `site.yml` on the local platform): the replicas within
[min, max], the scale-up time of one step, the seconds past a TTFT SLO while scaling and over the load,
and the replica-seconds, from `replicas.jsonl` (the samples) and `records.jsonl` (the requests)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_figures(
    folder: Path,
    *,
    bounds: tuple[int, int],
    step_at_s: float,
    need: int,
    duration_s: float,
    slo_ttft_ms: float,
) -> dict[str, Any]:
    """Assert the scenario folder's summary.json autoscaling figures are the recorded samples' and
    records'; returns what was recomputed (`serving_s`: None when the replicas needed never ran,
    `replica_seconds`, and the summary's own as the report prints it: `reported_replica_seconds`)."""
    summary = json.loads((folder / "summary.json").read_text())
    figures = summary["autoscaling"]
    samples = _jsonl(folder / "replicas.jsonl")
    records = _jsonl(folder / "records.jsonl")
    start = summary["started"]
    low, high = bounds
    during = [s for s in samples if start <= s["t"] <= start + duration_s]

    # Grew, and only within [min, max].
    assert figures["source"] == "replicas.jsonl", figures
    assert all(low <= s["running"] <= high and low <= s["target"] <= high for s in during), during
    assert max(s["running"] for s in during) > low, during
    assert figures["within_bounds"] is True, figures

    # Scale-up to serving: the first sample at or after the step with `need` RUNNING. (On a loaded machine
    # the last replica may come after the load: then none, and the scaling window runs to the end.)
    change = start + step_at_s
    before = [s for s in samples if s["t"] <= change]
    had = (before[-1] if before else samples[0])["running"]
    assert had < need, f"{had} replicas RUNNING at the step already: nothing to scale up to ({samples})"
    serving = next((s["t"] - change for s in samples if s["t"] >= change and s["running"] >= need), None)
    (up,) = figures["scale_ups"]
    assert (up["need"], up["replicas_before"]) == (need, had), up
    if serving is None:
        assert up["serving_s"] is None, up
    else:
        assert math.isclose(up["serving_s"], round(serving, 3), abs_tol=1e-3), (up, serving)
    scaled_s = step_at_s + serving if serving is not None else duration_s

    # SLO-violation seconds while scaling: whole seconds after the start, from the step until serving,
    # in which a request ended failed or with its TTFT past the limit.
    def violated(r: dict[str, Any]) -> bool:
        if not r["ok"]:
            return r.get("error_kind") != "cancelled"
        return r["first_token"] is None or (r["first_token"] - r["sent"]) * 1000 > slo_ttft_ms

    seconds = {int(r["end"] - start) for r in records if violated(r) and r["end"] >= start}
    scaling = [k for k in seconds if k + 1 > step_at_s and k < scaled_s]
    assert up["slo_violated_s"] == len(scaling), (up, sorted(seconds))
    assert figures["slo_violated_s"] == len([k for k in seconds if k < duration_s]), (
        figures,
        sorted(seconds),
    )

    # Replica-seconds: each sample's RUNNING held until the next, over the load.
    ordered = sorted(samples, key=lambda s: s["t"])
    total = 0.0
    for i, s in enumerate(ordered):
        begin = start if i == 0 else max(start, s["t"])
        end = start + duration_s if i + 1 == len(ordered) else min(start + duration_s, ordered[i + 1]["t"])
        total += s["running"] * max(0.0, end - begin)
    assert math.isclose(figures["replica_seconds"], round(total, 3), abs_tol=1e-3), (figures, total)
    assert total < high * duration_s  # fewer than the static peak size, which runs `high` all along
    # The report prints the summary's (rounded) figure: compare its text with that one, or a value on a
    # rounding boundary (37.25 %) prints differently from the exact one.
    return {
        "serving_s": serving,
        "replica_seconds": total,
        "reported_replica_seconds": figures["replica_seconds"],
    }
