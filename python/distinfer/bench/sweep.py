"""A list of scenarios run one after another into `DIR/scenarios/<name>/`, resumable.

A scenario whose `summary.json` exists is finished and skipped on a re-run; one interrupted
half-way is run again from the start (its old records are kept aside by the runner).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distinfer.bench.provenance import collect_provenance
from distinfer.bench.runner import run_scenario
from distinfer.bench.scenario import SUMMARY_FILE, ScenarioSpec, write_json_atomic
from distinfer.bench.storage import FREE_FLOOR_BYTES, check_results_dir
from distinfer.config import ConfigError

log = logging.getLogger(__name__)


class SweepEntry(BaseModel):
    """One scenario of a sweep; unset fields come from the file's `defaults`."""

    model_config = ConfigDict(extra="allow")

    name: str
    replicas: int | None = Field(None, ge=1)
    users_per_replica: int | None = Field(None, ge=1)
    users: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _users(self) -> SweepEntry:
        if self.users is None and (self.replicas is None or self.users_per_replica is None):
            raise ValueError(f"scenario {self.name!r} needs users, or replicas and users_per_replica")
        return self


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    scenarios: list[SweepEntry] = Field(min_length=1)

    def specs(self, overrides: dict[str, Any]) -> list[ScenarioSpec]:
        specs = []
        for entry in self.scenarios:
            data = {**self.defaults, **entry.model_dump(exclude_none=True), **overrides}
            if entry.users is None:
                data["users"] = (entry.replicas or 1) * (entry.users_per_replica or 1)
            meta = {**self.defaults.get("meta", {}), **(entry.model_extra or {}).get("meta", {})}
            data["meta"] = {k: str(v) for k, v in meta.items()}
            specs.append(ScenarioSpec.model_validate(data))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"scenario names must be unique; got {names}")
        return specs


def load_sweep(path: Path, overrides: dict[str, Any]) -> list[ScenarioSpec]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read scenarios file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    try:
        return SweepFile.model_validate(data).specs(overrides)
    except (ValidationError, ValueError) as err:
        raise ConfigError(
            f"{path} is not a valid scenarios file: {err}\nSee files/scenarios/*.yaml for examples"
        ) from None


def run_sweep(specs: list[ScenarioSpec], out: Path, api_key: str | None = None) -> dict[str, dict[str, Any]]:
    """Run every unfinished scenario; return the summaries of those run this time, by name."""
    check_results_dir(out, FREE_FLOOR_BYTES)
    if not (out / "run.json").exists():
        write_json_atomic(out / "run.json", collect_provenance())
    ran: dict[str, dict[str, Any]] = {}
    for spec in specs:
        target = out / "scenarios" / spec.name
        if (target / SUMMARY_FILE).exists():
            log.info("scenario %s already finished; skipping", spec.name)
            continue
        ran[spec.name] = run_scenario(spec, target, api_key)
    return ran
