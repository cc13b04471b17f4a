"""A list of scenarios run one after another into `DIR/scenarios/<name>/`, resumable.

A scenario whose `summary.json` exists is finished and skipped on a re-run; one interrupted
half-way is run again from the start (its old records are kept aside by the runner). The scenarios
file itself, and its validation, is results/scenario.py's (the plan reads it without the driver).
"""

from __future__ import annotations

import logging
from pathlib import Path

from distinfer.bench.capacity import capacity_finished, run_capacity
from distinfer.bench.progress import View
from distinfer.bench.provenance import collect_provenance
from distinfer.bench.runner import run_scenario
from distinfer.bench.status import capacity_status, scenario_status
from distinfer.bench.storage import FREE_FLOOR_BYTES, check_results_dir
from distinfer.results.run import RUN_FILE
from distinfer.results.scenario import ScenarioSpec
from distinfer.results.summary import SUMMARY_FILE

log = logging.getLogger(__name__)


def run_sweep(
    specs: list[ScenarioSpec], out: Path, api_key: str | None = None, view: View | None = None
) -> dict[str, int]:
    """Run every unfinished scenario (a capacity search into `out/capacity/<name>`); return the exit
    status of each run this time, by name. Progress counts every scenario of the file (a finished one
    skipped is still "i of n")."""
    check_results_dir(out, FREE_FLOOR_BYTES)
    if not (out / RUN_FILE).exists():
        collect_provenance().save_file(out)
    ran: dict[str, int] = {}
    for index, spec in enumerate(specs, start=1):
        if spec.capacity is not None:
            folder = out / "capacity" / spec.name
            if capacity_finished(folder):
                log.info("capacity search %d/%d %s already finished; skipping", index, len(specs), spec.name)
                continue
            ran[spec.name] = capacity_status(run_capacity(spec, folder, api_key, view))
            continue
        target = out / "scenarios" / spec.name
        if (target / SUMMARY_FILE).exists():
            log.info("scenario %d/%d %s already finished; skipping", index, len(specs), spec.name)
            continue
        summary = run_scenario(spec, target, api_key, view, (index, len(specs)))
        ran[spec.name] = scenario_status(summary)
        lost = None if summary.availability is None else summary.availability.endpoint_lost_at_s
        if lost is not None:
            log.error(
                "scenario %s: the server stopped answering %.1f s into the load and did not come back; "
                "the sweep stops here (finished scenarios are kept; run it again to resume)",
                spec.name,
                lost,
            )
            break
    return ran
