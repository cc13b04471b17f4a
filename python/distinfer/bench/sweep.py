"""A list of scenarios run one after another into `DIR/scenarios/<name>/`, resumable.

A scenario whose `summary.json` exists is finished and skipped on a re-run; one interrupted
half-way is run again from the start (its old records are kept aside by the runner).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distinfer.bench.capacity import capacity_finished, run_capacity
from distinfer.bench.progress import View
from distinfer.bench.provenance import collect_provenance
from distinfer.bench.runner import run_scenario
from distinfer.bench.scenario import SUMMARY_FILE, ScenarioSpec, expand_repeats, write_json_atomic
from distinfer.bench.status import capacity_status, scenario_status
from distinfer.bench.storage import FREE_FLOOR_BYTES, check_results_dir
from distinfer.config import ConfigError
from distinfer.errors import entry_locator, format_validation_error

log = logging.getLogger(__name__)


class SweepEntry(BaseModel):
    """One scenario of a sweep; unset fields come from the file's `defaults`."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, description="Default: `<replicas>r-<users_per_replica>u`.")
    replicas: int | None = Field(None, ge=1)
    users_per_replica: int | None = Field(None, ge=1)
    users: int | None = Field(None, ge=1)


class SweepFile(BaseModel):
    """A scenarios file (files/scenarios/*.yaml): the CLI's sweeps and the benchmark role read it."""

    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    scenarios: list[SweepEntry] = Field(min_length=1)

    def entries(self, overrides: dict[str, Any]) -> list[dict[str, Any]]:
        """Each scenario's fields: the file's defaults, then the entry, then `overrides`.

        Not validated yet: the caller fills in what only it knows (the URL, a replica count) and
        validates the result as a ScenarioSpec.
        """
        merged = []
        for entry in self.scenarios:
            data = {**self.defaults, **entry.model_dump(exclude_none=True), **overrides}
            meta = {**self.defaults.get("meta", {}), **(entry.model_extra or {}).get("meta", {})}
            data["meta"] = {k: str(v) for k, v in {**meta, **overrides.get("meta", {})}.items()}
            merged.append(data)
        return merged

    def specs(self, overrides: dict[str, Any]) -> list[ScenarioSpec]:
        specs = []
        for data in self.entries(overrides):
            if data.get("users") is None:
                if data.get("replicas") is None or data.get("users_per_replica") is None:
                    raise ValueError(
                        f"scenario {data.get('name', '(unnamed)')!r} needs users, or replicas and "
                        "users_per_replica"
                    )
                data["users"] = data["replicas"] * data["users_per_replica"]
            data.setdefault("name", default_scenario_name(data))
            specs += expand_repeats(validate_scenario(data, f"scenario {data['name']!r}"))
        check_unique_names([s.name for s in specs])
        return specs


def default_scenario_name(data: dict[str, Any], prefix: str = "") -> str:
    """`<prefix><replicas>r-<users_per_replica>u` (or `<users>u`): what a run calls an unnamed scenario."""
    if data.get("users_per_replica") is not None:
        return f"{prefix}{data.get('replicas', 1)}r-{data['users_per_replica']}u"
    return f"{prefix}{data.get('users')}u"


def check_unique_names(names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"scenario names must be unique; {repeated} repeat (give each scenario a name:)")


def read_sweep(path: Path) -> SweepFile:
    """Parse a scenarios file, with a message that names the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read scenarios file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_sweep(data, str(path))


def parse_sweep(data: Any, source: str) -> SweepFile:
    try:
        return SweepFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_sweep_error(err, source, data)) from None


# What to give instead, by field, where the error alone does not say it.
SCENARIO_ADVICE = {
    "users_per_replica": "a whole number >= 1: the per-replica cap on requests in flight",
    "replicas": "a whole number >= 1, at most what the inventory's GPUs hold",
    "users": "a whole number >= 1",
    "slo": "a preset (mlperf-llama2-70b, mlperf-llama2-70b-interactive, mlperf-llama3.1-8b, "
    "mlperf-llama3.1-8b-interactive) or {ttft_ms: ..., tpot_ms: ..., percentile: 99}",
}
EXAMPLES = "files/scenarios/*.yaml"


def format_sweep_error(err: ValidationError, source: str, data: Any) -> str:
    """One line per problem: which scenario, which field, what was given and what to give."""
    locate = entry_locator("scenarios", SweepFile, SweepEntry)
    return format_validation_error(
        err,
        source,
        "a valid scenarios file",
        data=data,
        examples=EXAMPLES,
        locate=locate,
        advice=SCENARIO_ADVICE,
    )


def validate_scenario(data: dict[str, Any], source: str) -> ScenarioSpec:
    """One scenario's merged fields as a ScenarioSpec, or a ConfigError naming each problem."""
    try:
        return ScenarioSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(
                err,
                source,
                "a valid scenario",
                data=data,
                examples=EXAMPLES,
                locate=entry_locator(None, ScenarioSpec, None),
                advice=SCENARIO_ADVICE,
            )
        ) from None


def load_sweep(path: Path, overrides: dict[str, Any]) -> list[ScenarioSpec]:
    sweep = read_sweep(path)
    try:
        return sweep.specs(overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except ValueError as err:
        raise ConfigError(
            f"{path} is not a valid scenarios file: {err}; see {EXAMPLES} for examples"
        ) from None


def run_sweep(
    specs: list[ScenarioSpec], out: Path, api_key: str | None = None, view: View | None = None
) -> dict[str, int]:
    """Run every unfinished scenario (a capacity search into `out/capacity/<name>`); return the exit
    status of each run this time, by name. Progress counts every scenario of the file (a finished one
    skipped is still "i of n")."""
    check_results_dir(out, FREE_FLOOR_BYTES)
    if not (out / "run.json").exists():
        write_json_atomic(out / "run.json", collect_provenance().model_dump(mode="json"))
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
