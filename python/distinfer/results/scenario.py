"""What a run asks for: one scenario (`scenario.json`), a scenarios file (files/scenarios/*.yaml) and
its validation, and what each worker process is told to do.

The plan (distinfer/plan.py) validates a benchmark's scenarios with these before anything runs; the
load driver (bench/) runs them; the report reads them back from each scenario's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distinfer.config import AutoscalingOptions, ConfigError, check_replicas_or_autoscaling
from distinfer.errors import entry_locator, format_validation_error
from distinfer.results.base import ResultsFile, Strict
from distinfer.results.slo import Slo
from distinfer.results.workload import LoadStep, Sessions, TraceReplay, check_steps

SCENARIO_FILE = "scenario.json"
# Closed loop without a known token rate: assume a fast server (10 ms between tokens per user).
ASSUMED_EVENTS_PER_USER = 100.0


class CapacitySearch(Strict):
    """A scenario's `capacity:`: search the highest Poisson arrival rate that meets its SLO
    (`distinfer bench capacity`, bench/capacity.py) instead of loading it at one size."""

    start_rate: float = Field(1.0, gt=0, description="First rate tried (requests/s).")
    min_rate: float = Field(0.01, gt=0, description="The search gives up below this rate.")
    max_rate: float = Field(10_000.0, gt=0, description="The search stops above this rate.")
    tolerance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Stop when the lowest failing rate is within this fraction above the highest passing.",
    )
    growth: float = Field(2.0, gt=1, description="Bracketing: the rate is multiplied (or divided) by this.")
    max_steps: int = Field(16, ge=1, le=100, description="Rates tried at most (retries not counted).")
    invalid_retries: int = Field(
        1, ge=0, le=10, description="Times a step the saturation guard marked INVALID is run again."
    )
    stop_early: bool = Field(True, description="Stop a step as soon as it has clearly missed the SLO.")
    min_tail_requests: int = Field(
        10,
        ge=0,
        le=10_000,
        description="Each step's steady window lasts long enough for this many requests beyond the SLO's "
        "percentile (at P99 and 10: 1000 requests), however short duration_s is; fewer make the verdict "
        "noise. 0: duration_s only.",
    )
    in_flight_cap: int | None = Field(
        None, ge=1, le=100_000, description="Each step's in-flight cap; default max(4 x users, 256)."
    )

    @model_validator(mode="after")
    def _check(self) -> CapacitySearch:
        if not self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(
                f"start_rate {self.start_rate:g} must lie between min_rate {self.min_rate:g} and max_rate "
                f"{self.max_rate:g}"
            )
        return self


class Deployment(Strict):
    """What a scenario ran on, typed: the deployment facts its `meta` labels carry.

    On disk they stay the scenario's `meta` strings (`scenario.json`, the plan's scenarios, a
    scenarios file's `meta:`, `distinfer bench run --meta KEY=VALUE`), so every file written before
    reads as it did; readers take them from here instead of parsing the strings by key. The keys
    the plan writes (plan.py) and a capacity search's steps (bench/capacity.py) are fields; any other
    label a user gave is kept in `labels`.
    """

    nodes: list[str] = Field(
        default_factory=list,
        description="`nodes`: the inventory hosts named for it (comma-separated): those its scenario "
        "names (`nodes:`, where the plan pins its replicas), else every host of the inventory. Where its "
        "replicas did run is `placement.json` (results/placement.py).",
    )
    devices: str | None = Field(default=None, description="`devices`: what the report calls the machines.")
    gpus: str | None = Field(
        default=None, description="`gpus`: their GPUs, a count or a label ('4xNVIDIA A100')."
    )
    replicas: int | None = Field(
        default=None, description="`replicas`: serving replicas (when a whole number)."
    )
    platform: str | None = Field(default=None, description="`platform`: kubernetes or local.")
    prometheus: str | None = Field(
        default=None, description="`prometheus`: where the report asks Prometheus."
    )
    users_per_replica: int | None = Field(
        default=None, description="`users_per_replica` (when a whole number)."
    )
    engine_stand_in: str | None = Field(
        default=None,
        description="`engine_stand_in`: set when a stand-in engine served (a rehearsal, no measurement).",
    )
    capacity_search: str | None = Field(
        default=None, description="`capacity_search`: the search a step belongs to."
    )
    capacity_step_rate: str | None = Field(
        default=None, description="`capacity_step_rate`: that step's rate."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Every other `meta` label, as given.")

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Deployment:
        """The typed facts of a scenario's `meta` (a count that is not a whole number reads as None)."""
        known = set(cls.model_fields) - {"labels"}
        return cls(
            nodes=[n.strip() for n in str(meta.get("nodes", "")).split(",") if n.strip()],
            devices=meta.get("devices"),
            gpus=meta.get("gpus"),
            replicas=_whole(meta.get("replicas")),
            platform=meta.get("platform"),
            prometheus=meta.get("prometheus"),
            users_per_replica=_whole(meta.get("users_per_replica")),
            engine_stand_in=meta.get("engine_stand_in"),
            capacity_search=meta.get("capacity_search"),
            capacity_step_rate=meta.get("capacity_step_rate"),
            labels={k: v for k, v in meta.items() if k not in known},
        )

    def to_meta(self) -> dict[str, str]:
        """The facts as `meta` strings, in field order (unset ones left out), then the other labels."""
        meta: dict[str, str] = {}
        for key, value in self.model_dump(exclude={"labels"}, exclude_none=True).items():
            if key == "nodes":
                if value:
                    meta[key] = ",".join(value)
            else:
                meta[key] = str(value)
        return {**meta, **self.labels}


def _whole(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


class Repetition(Strict):
    """Set on each of the runs a scenario's `repeat: N` makes."""

    of: str = Field(description="The scenario repeated (its name without -rep<k>).")
    index: int = Field(ge=1, description="Which run this is, 1..count.")
    count: int = Field(ge=2, description="How many runs the repeat makes.")


class ScenarioSpec(ResultsFile):
    """One load scenario. `users` is the closed loop's concurrency and the open loop's in-flight cap."""

    DEFAULT_FILE: ClassVar[str] = SCENARIO_FILE
    VERSIONED: ClassVar[bool] = False

    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    model: str
    url: str = Field(pattern=r"^https?://")
    users: int = Field(ge=1, le=100_000)
    replicas: int | None = Field(None, ge=1, description="Serving replicas behind the URL (report metadata).")
    users_per_replica: int | None = Field(None, ge=1, description="The guide's 'batch size per replica'.")
    duration_s: float = Field(gt=0, description="How long new requests are sent, warm-up included.")
    warmup_s: float = Field(0.0, ge=0)
    ramp_s: float | None = Field(
        None,
        ge=0,
        description="Closed loop: users start evenly spread over this many seconds (default: the "
        "warm-up); 0 starts them all at once, and with a fixed-length answer they stay in lockstep.",
    )
    drain_timeout_s: float = Field(300.0, ge=0, description="How long in-flight requests may finish after.")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0)
    api: Literal["chat", "completions"] = "chat"
    rate: float | None = Field(None, gt=0, description="Open loop: Poisson arrivals per second.")
    prompts: str | None = Field(None, description="Prompts file; the packaged set when unset.")
    seed: int = 0
    ignore_eos: bool = True
    watch_status: bool = Field(
        True,
        description="Sample the server's GET /status (every model's replicas) each second while the "
        "load runs, so a fault's course is in the summary; a server without it is asked once.",
    )
    timeout_s: float = Field(600.0, gt=0, description="Longest wait for any byte of a response.")
    workers: int | None = Field(
        None, ge=1, le=64, description="Load processes; sized from the load when unset."
    )
    slo: Slo | None = Field(
        None, description="The SLO goodput counts against: a preset's name or limits (results/slo.py)."
    )
    capacity: CapacitySearch | None = Field(
        None, description="Search the highest rate within the SLO instead (`distinfer bench capacity`)."
    )
    repeat: int = Field(
        1,
        ge=1,
        le=100,
        description="Run it this many times (as <name>-rep1..N); the report gives each headline figure "
        "with a 95 % confidence interval, and --compare says which differences exceed that noise.",
    )
    repetition: Repetition | None = Field(None, description="Which run of a repeat this is (set by it).")
    trace: TraceReplay | None = Field(
        None, description="Replay a published trace's window on its own clock, open loop (docs/traces.md)."
    )
    sessions: Sessions | None = Field(
        None, description="Multi-turn conversations, each turn sending the whole history (docs/traces.md)."
    )
    steps: list[LoadStep] | None = Field(
        None,
        description="A load that changes: from each step's at_s on, its users (closed loop) or rate (open "
        "loop), at once or over its ramp_s; `users` defaults to the peak (docs/autoscaling.md).",
    )
    autoscaling: AutoscalingOptions | None = Field(
        None,
        description="The model's Ray Serve autoscaling while it runs (the plan deploys it; a scenario run "
        "against what is deployed records it): the report's autoscaling figures (docs/autoscaling.md).",
    )
    peak_static_replicas: int | None = Field(
        None,
        ge=1,
        description="Autoscaling: the smallest fixed replica count that met the SLO at the peak, which the "
        "replica-seconds are compared with; unset: `peak_static_scenario`'s replicas, else the smallest "
        "static scenario of the run (same model) that met its SLO.",
    )
    peak_static_scenario: str | None = Field(
        None, description="Autoscaling: the static scenario of the same run whose replicas are that size."
    )
    meta: dict[str, str] = Field(
        default_factory=dict,
        description="Labels for the report: the deployment's facts (read them typed: `deployment`) and any "
        "other KEY=VALUE.",
    )

    @model_validator(mode="before")
    @classmethod
    def _trace_duration(cls, data: Any) -> Any:
        """A trace window's length sets duration_s when it is not given: length_s / time_scale."""
        if isinstance(data, dict) and isinstance(data.get("trace"), dict) and data.get("duration_s") is None:
            trace = data["trace"]
            if trace.get("length_s") is not None:
                return {**data, "duration_s": float(trace["length_s"]) / float(trace.get("time_scale", 1.0))}
        return data

    @model_validator(mode="before")
    @classmethod
    def _peak_users(cls, data: Any) -> Any:
        """Closed-loop steps set `users` when it is not given: the most users any step asks for."""
        if isinstance(data, dict) and isinstance(data.get("steps"), list) and data.get("users") is None:
            levels = [s.get("users") for s in data["steps"] if isinstance(s, dict)]
            whole = [u for u in levels if isinstance(u, int)]
            if whole and len(whole) == len(levels):
                return {**data, "users": max(max(whole), 1)}
        return data

    @model_validator(mode="after")
    def _check(self) -> ScenarioSpec:
        self._check_workload()
        self._check_steps()
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"warm-up ({self.warmup_s}s) must be shorter than duration ({self.duration_s}s): "
                "the steady window is what is left"
            )
        if self.ramp_s is not None and self.ramp_s >= self.duration_s:
            raise ValueError(
                f"ramp ({self.ramp_s}s) must be shorter than duration ({self.duration_s}s); "
                "ramp over the warm-up (the default) so the steady window sees every user"
            )
        if self.capacity is not None and self.slo is None:
            raise ValueError(
                "a capacity search needs an SLO to search against: add slo: (a preset such as "
                "mlperf-llama2-70b, or {ttft_ms: ..., tpot_ms: ...})"
            )
        if self.capacity is not None and self.repeat > 1:
            raise ValueError(
                f"repeat {self.repeat} with capacity: is not supported; a capacity search already measures "
                "each rate on enough requests for its percentile (min_tail_requests)"
            )
        if self.capacity is not None and self.rate is not None:
            raise ValueError(
                f"rate {self.rate:g} and capacity: both set; the capacity search chooses each step's rate "
                "(remove rate:, or remove capacity: to load at that one rate)"
            )
        return self

    def _check_steps(self) -> None:
        if self.steps is None:
            return
        check_steps(self.steps, self.duration_s)
        peak = max(step.users or 0 for step in self.steps)
        if self.steps[0].users is not None and peak > self.users:
            raise ValueError(
                f"steps ask for {peak} users but users is {self.users}; raise users to {peak} (or leave it "
                "out: it defaults to the steps' peak)"
            )
        if self.capacity is not None:
            raise ValueError("steps: and capacity: both set; a capacity search sets each step's rate itself")

    def _check_workload(self) -> None:
        chosen = [name for name in ("rate", "trace", "sessions", "steps") if getattr(self, name) is not None]
        if self.capacity is not None and (self.trace is not None or self.sessions is not None):
            chosen.append("capacity")
        if len(chosen) > 1:
            raise ValueError(
                f"{' and '.join(chosen)} are all set; a scenario sends one kind of load: a Poisson rate, a "
                "trace replay, multi-turn sessions, steps or a capacity search (keep one)"
            )
        trace = self.trace
        lasts = None if trace is None or trace.length_s is None else trace.length_s / trace.time_scale
        if trace is not None and lasts is not None and abs(lasts - self.duration_s) > 1e-6:
            raise ValueError(
                f"trace.length_s {trace.length_s:g} at time_scale {trace.time_scale:g} lasts {lasts:g} s "
                f"but duration_s is {self.duration_s:g}; drop one of the two (either sets the other)"
            )
        if self.sessions is not None and self.api != "chat":
            raise ValueError("sessions: send their history as chat messages; set api: chat (the default)")

    @property
    def ramp(self) -> float:
        """Seconds over which closed-loop users start (the warm-up unless set)."""
        return self.warmup_s if self.ramp_s is None else self.ramp_s

    @property
    def open_loop(self) -> bool:
        """Requests sent on a clock of their own (Poisson, a trace's, sessions'), not when one ends."""
        return self.rate is not None or self.trace is not None or self.sessions is not None or self.rate_steps

    @property
    def rate_steps(self) -> bool:
        """Open-loop steps: a Poisson rate that changes."""
        return self.steps is not None and self.steps[0].rate is not None

    @property
    def peak_rate(self) -> float | None:
        """The open loop's highest Poisson rate (its `rate`, or its steps' peak)."""
        if self.rate_steps:
            return max(step.rate or 0.0 for step in self.steps or [])
        return self.rate

    @property
    def deployment(self) -> Deployment:
        """What it ran on, typed from its `meta` labels."""
        return Deployment.from_meta(self.meta)


def target_events_per_s(spec: ScenarioSpec) -> float:
    """How many SSE events per second the client must read at most."""
    rate = spec.peak_rate
    if rate is not None:
        return rate * (spec.max_tokens + 2)
    return spec.users * ASSUMED_EVENTS_PER_USER


def expand_repeats(spec: ScenarioSpec) -> list[ScenarioSpec]:
    """A scenario with `repeat: N` as its N runs, `<name>-rep1` .. `<name>-repN`, each marked."""
    if spec.repeat == 1 or spec.repetition is not None:
        return [spec]
    return [
        ScenarioSpec.model_validate(
            {
                **spec.model_dump(mode="json"),
                "name": f"{spec.name}-rep{index}",
                "repetition": {"of": spec.name, "index": index, "count": spec.repeat},
            }
        )
        for index in range(1, spec.repeat + 1)
    ]


class WorkerPlan(Strict):
    """A worker's share of a scenario. The API key is passed in the environment, never in a file."""

    index: int
    scenario: ScenarioSpec
    users: int = Field(description="Closed loop: users here; open loop: in-flight cap here.")
    workers: int = Field(1, ge=1, description="How many workers share the scenario.")
    rate: float | None = None
    records: str
    stats: str
    positions: list[int] | None = Field(
        default=None,
        description="Load hosts: its users' places in the scenario's ramp (Locust's dispatcher dealt them; "
        "results/loadgen.py interleaves them); None: worker w's k-th user is k * workers + w.",
    )
    load_host: str | None = Field(
        default=None, description="Load hosts: the host it runs on (its records say so)."
    )

    def start_offset(self, local_user: int) -> float:
        """Seconds after the load start at which this worker's user `local_user` sends first.

        Users of all workers interleave (worker w's k-th user is user k * workers + w of the
        scenario, which `split` keeps below the total), evenly spread over the ramp.
        """
        if self.positions is not None:
            position = self.positions[min(local_user, len(self.positions) - 1)] if self.positions else 0
        else:
            position = local_user * self.workers + self.index
        return self.scenario.ramp * position / self.scenario.users


def parse_meta(items: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--meta {item!r} must be KEY=VALUE, e.g. --meta replicas=2")
        meta[key.strip()] = value.strip()
    return meta


# ---- a scenarios file -----------------------------------------------------------------------------


def host_names(value: Any) -> Any:
    """A scenario's `nodes:` as a list: a YAML list of host names, or one string of them separated by
    commas (as the older `meta: {nodes: "a,b"}` label wrote them). Anything else is left to the
    validator, which names what it got."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_host_names(hosts: list[str] | None) -> list[str] | None:
    if hosts is None:
        return None
    if not hosts:
        raise ValueError("name at least one inventory host, or leave nodes: out (replicas anywhere)")
    repeated = sorted({h for h in hosts if hosts.count(h) > 1})
    if repeated:
        raise ValueError(f"{repeated} named more than once; name each host once")
    return hosts


class SweepEntry(BaseModel):
    """One scenario of a sweep; unset fields come from the file's `defaults`."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, description="Default: `<replicas>r-<users_per_replica>u`.")
    replicas: int | None = Field(None, ge=1)
    users_per_replica: int | None = Field(None, ge=1)
    users: int | None = Field(None, ge=1)
    nodes: list[str] | None = Field(
        None,
        description="The inventory hosts its replicas run on (a list, or one comma-separated string): "
        "the plan pins them there and the benchmark checks where they ran (placement.json); unset: "
        "anywhere. A sweep without a plan (`distinfer bench sweep`) places nothing and only records "
        "them (meta `nodes`).",
    )

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: Any) -> Any:
        return host_names(value)

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, value: list[str] | None) -> list[str] | None:
        return check_host_names(value)


def scenario_nodes(data: dict[str, Any], where: str) -> list[str] | None:
    """Take a merged scenario's `nodes` (its entry's, or the file's `defaults`) out of `data`, checked.

    None when it names none. A `defaults:` value is not validated by SweepEntry, hence here too.
    """
    value = host_names(data.pop("nodes", None))
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        raise ConfigError(
            f"{where}: nodes is {value!r}; give a list of inventory host names, e.g. nodes: [xe9680, xe8545]"
        )
    try:
        return check_host_names(value)
    except ValueError as err:
        raise ConfigError(f"{where}: nodes: {err}") from None


class SweepFile(Strict):
    """A scenarios file (files/scenarios/*.yaml): the CLI's sweeps and the benchmark role read it."""

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
        """The scenarios as run against what is deployed (`distinfer bench sweep`): no plan places them,
        so a scenario's `nodes` are only recorded, as its meta `nodes` label."""
        specs = []
        for data in self.entries(overrides):
            nodes = scenario_nodes(data, f"scenario {data.get('name', '(unnamed)')!r}")
            if nodes:
                data["meta"].setdefault("nodes", ",".join(nodes))
            check_replicas_or_autoscaling(data, f"scenario {data.get('name', '(unnamed)')!r}: ")
            if data.get("users") is None and not data.get("steps"):  # closed-loop steps: their peak
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
