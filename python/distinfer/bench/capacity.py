"""`distinfer bench capacity`: the highest Poisson arrival rate a deployment serves within its SLO.

MLPerf Inference's server scenario scores a system by the highest rate of Poisson arrivals whose
P99 TTFT and TPOT stay within fixed limits. The search here finds it for one deployment:

1. **bracket**: from `start_rate`, multiply the rate by `growth` while steps pass (up to
   `max_rate`), divide it while they fail (down to `min_rate`);
2. **bisect** between the highest passing rate and the lowest failing one (at their geometric mean)
   until the failing one is at most `tolerance` above the passing one. The capacity is the highest
   passing rate: within the tolerance of the true one, below it.

Each step is an open-loop scenario (the base scenario at one rate) measured over its steady window
after the warm-up, long enough for `min_tail_requests` requests beyond the SLO's percentile (a P99
judged on 100 requests is one request's luck), and judged against the SLO (results/slo.py):
- **pass**: the SLO met, and the saturation guard found the load generator kept up;
- **fail**: the SLO missed. A step that has clearly missed it (one limit already missed by more
  requests than twice what the whole window may miss, plus 10) is stopped early;
- **invalid**: the guard found the load generator itself fell behind, so its latencies say nothing
  about the server. It is run again (`invalid_retries`), and if still invalid taken as *not a pass*:
  the search goes lower and the result says the load generator bounded it.

Each step draws its own Poisson arrivals (`step_seed`: the scenario's seed and the step's number),
so the capacity does not rest on one realisation replayed at every rate. Every step keeps its
records and summary in `DIR/steps/<NN>-<rate>rps/`. The search is resumable:
it is a pure function of the steps' outcomes, so a re-run reads the finished steps back (their
`summary.json`) and runs only what is missing. `DIR/capacity.json` holds the result (rewritten after
every step; `finished` says whether the search is over; its model: results/capacity.py).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

from distinfer.bench.progress import RecordTail, View
from distinfer.bench.provenance import collect_provenance
from distinfer.bench.runner import run_scenario
from distinfer.bench.storage import FREE_FLOOR_BYTES, check_results_dir
from distinfer.config import ConfigError
from distinfer.results.base import write_json_atomic
from distinfer.results.capacity import CapacityResult, CapacityStep, Outcome
from distinfer.results.metrics import request_latencies
from distinfer.results.records import RECORDS_FILE
from distinfer.results.run import Provenance
from distinfer.results.scenario import CapacitySearch, Deployment, ScenarioSpec
from distinfer.results.slo import Slo
from distinfer.results.summary import Summary

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
# A step is clearly failing once one limit is missed by more than this many times the requests the
# whole window may miss, plus EARLY_STOP_MARGIN (so a handful of misses never stops a step).
EARLY_STOP_FACTOR = 2.0
EARLY_STOP_MARGIN = 10
DEFAULT_MIN_IN_FLIGHT_CAP = 256


def step_window_s(base: ScenarioSpec, rate: float) -> float:
    """The steady window of a step at `rate`: duration_s's, or long enough for `min_tail_requests`
    requests beyond the SLO's percentile (at P99, 100 times as many requests due)."""
    search = base.capacity or CapacitySearch.model_validate({})
    window = base.duration_s - base.warmup_s
    if base.slo is None or search.min_tail_requests == 0:
        return window
    tail_share = 1.0 - base.slo.percentile / 100.0
    needed = search.min_tail_requests / tail_share if tail_share > 0 else 0.0
    return max(window, needed / rate)


def step_seed(base: ScenarioSpec, index: int) -> int:
    """Step `index`'s seed: each step draws its own arrival times and prompts, so a capacity does not
    rest on one Poisson realisation replayed at every rate (scaled), and a retry of an invalid step
    is a new draw; the same base seed gives the same steps, so a resumed search is the same search."""
    return base.seed * 1_000_003 + index


def step_spec(base: ScenarioSpec, rate: float, name: str, index: int) -> ScenarioSpec:
    """The base scenario as one open-loop step at `rate` (step `index`: its seed, `step_seed`)."""
    search = base.capacity or CapacitySearch.model_validate({})
    cap = search.in_flight_cap or max(4 * base.users, DEFAULT_MIN_IN_FLIGHT_CAP)
    data = base.model_dump(mode="json", exclude={"capacity"})
    step = Deployment(capacity_search=base.name, capacity_step_rate=f"{rate:g}")
    meta = {**base.meta, **step.to_meta()}
    duration = base.warmup_s + step_window_s(base, rate)
    return ScenarioSpec.model_validate(
        {**data, "name": name, "rate": rate, "users": cap, "duration_s": duration, "meta": meta,
         "seed": step_seed(base, index)}
    )  # fmt: skip


def step_name(index: int, rate: float) -> str:
    return f"{index:02d}-{rate:.6g}rps"


class ClearlyFailing:
    """`stop_when` for a step: a reason once one limit is missed far beyond what the window allows."""

    def __init__(self, spec: ScenarioSpec, slo: Slo, folder: Path) -> None:
        self.spec = spec
        self.slo = slo
        self.tail = RecordTail(folder / RECORDS_FILE)
        self.missed: dict[str, int] = dict.fromkeys(slo.limits(), 0)
        self.expected = (spec.rate or 0.0) * (spec.duration_s - spec.warmup_s)
        self.allowed = (1.0 - slo.percentile / 100.0) * self.expected
        self.threshold = EARLY_STOP_FACTOR * self.allowed + EARLY_STOP_MARGIN

    def __call__(self, start: float) -> str | None:
        w0, w1 = start + self.spec.warmup_s, start + self.spec.duration_s
        for record in self.tail.new_records():
            if w0 <= record.scheduled < w1:
                for key in self.slo.missed(record.ok, request_latencies(record)):
                    self.missed[key] += 1
        key, count = max(self.missed.items(), key=lambda item: item[1])
        if count > self.threshold:
            return (
                f"clearly missing the SLO: {count} requests of the steady window already beyond its "
                f"{key.upper()} limit, where the whole window may have about {self.allowed:.0f} "
                f"({100 - self.slo.percentile:g} % of the ~{self.expected:.0f} due)"
            )
        return None


def classify(summary: Summary) -> Outcome:
    """pass / fail / invalid, from a step's summary (see the module's docstring)."""
    if summary.stopped_early is not None or summary.metrics.completed == 0:
        return "fail"  # clearly failing, or the server failed every request
    if not summary.valid:
        return "invalid"
    verdict = summary.metrics.slo_result
    return "pass" if verdict is not None and verdict.passed else "fail"


def to_step(index: int, rate: float, name: str, retry: int, summary: Summary) -> CapacityStep:
    metrics = summary.metrics
    verdict = metrics.slo_result
    return CapacityStep(
        index=index,
        rate=rate,
        name=name,
        retry=retry,
        outcome=classify(summary),
        requests=metrics.requests_scheduled,
        share_meeting=None if verdict is None else verdict.share_meeting,
        at_percentile_ms={} if verdict is None else dict(verdict.at_percentile_ms),
        request_goodput=None if verdict is None else verdict.request_goodput,
        output_goodput=None if verdict is None else verdict.output_goodput,
        request_throughput=metrics.request_throughput,
        output_throughput=metrics.output_throughput,
        achieved_send_rate=metrics.achieved_send_rate,
        valid=summary.valid,
        invalid_reasons=list(summary.invalid_reasons),
        stopped_early=None if summary.stopped_early is None else summary.stopped_early.reason,
    )


# ---- the search itself: a pure function of the steps' outcomes -----------------------------------


class Bracket:
    """What the steps so far say: the highest passing rate and the lowest one that did not pass."""

    def __init__(self, search: CapacitySearch) -> None:
        self.search = search
        self.passing: float | None = None
        self.failing: float | None = None
        self.failing_invalid = False

    def record(self, rate: float, passed: bool, invalid: bool) -> None:
        if passed:
            self.passing = rate if self.passing is None else max(self.passing, rate)
        elif self.failing is None or rate < self.failing:
            self.failing, self.failing_invalid = rate, invalid
        elif rate == self.failing:
            self.failing_invalid = self.failing_invalid and invalid

    @property
    def converged(self) -> bool:
        lo, hi = self.passing, self.failing
        return lo is not None and hi is not None and hi <= lo * (1.0 + self.search.tolerance)

    def next_rate(self) -> float | None:
        """The rate to measure next, or None when the search is over."""
        lo, hi, s = self.passing, self.failing, self.search
        if lo is not None and hi is not None:
            return None if self.converged else math.sqrt(lo * hi)
        if lo is not None:
            return None if lo >= s.max_rate else min(lo * s.growth, s.max_rate)
        if hi is not None:
            return None if hi <= s.min_rate else max(hi / s.growth, s.min_rate)
        return s.start_rate

    def note(self, finished: bool = True) -> str:
        lo, hi, s = self.passing, self.failing, self.search
        if self.converged:
            return (
                f"capacity {lo:.4g} req/s: it passed and {hi:.4g} req/s did not, within the tolerance "
                f"of {s.tolerance:.0%}"
            )
        if lo is not None and hi is None and lo >= s.max_rate:
            return f"still passing at max_rate {s.max_rate:g} req/s: the capacity is at least that"
        if hi is not None and lo is None and hi <= s.min_rate:
            return f"not passing even at min_rate {s.min_rate:g} req/s"
        if finished:
            return f"stopped after max_steps {s.max_steps} rates, not bracketed to the tolerance"
        return "the search is under way"


Measure = Callable[[float], tuple[bool, bool]]


def search(settings: CapacitySearch, measure: Measure) -> Bracket:
    """Bracket, then bisect. `measure(rate)` gives (passed, invalid) for one rate, retries included."""
    bracket = Bracket(settings)
    for _ in range(settings.max_steps):
        rate = bracket.next_rate()
        if rate is None:
            break
        passed, invalid = measure(rate)
        bracket.record(rate, passed, invalid)
    return bracket


# ---- running it ------------------------------------------------------------------------------------


class CapacityRun:
    def __init__(self, base: ScenarioSpec, out: Path, api_key: str | None, view: View | None) -> None:
        if base.capacity is None or base.slo is None:
            raise ConfigError(f"scenario {base.name} has no capacity: search (and slo:) to run")
        self.base = base
        self.settings = base.capacity
        self.slo = base.slo
        self.out = out
        self.api_key = api_key
        self.view = view
        self.steps: list[CapacityStep] = []

    def prepare(self) -> None:
        """Check the folder, and that a search already in it was started with this very scenario."""
        check_results_dir(self.out, FREE_FLOOR_BYTES)
        saved = self.out / SEARCH_FILE
        wanted = self.base.model_dump(mode="json")
        if saved.exists():
            if json.loads(saved.read_text()) != wanted:
                raise ConfigError(
                    f"{self.out} holds a capacity search of another scenario or other settings "
                    f"({saved}); choose another --out, or remove that folder to start over"
                )
        else:
            write_json_atomic(saved, wanted)
        run_dir = self.out.parent.parent
        if self.out.parent.name == "capacity" and not Provenance.file_in(run_dir).exists():
            collect_provenance().save_file(run_dir)

    def measure(self, rate: float) -> tuple[bool, bool]:
        """One rate, run again while the guard leaves it invalid (up to `invalid_retries`)."""
        for retry in range(self.settings.invalid_retries + 1):
            step = self.step(rate, retry)
            self.steps.append(step)
            if step.outcome != "invalid":
                return step.outcome == "pass", False
            log.warning("step at %g req/s is INVALID: %s", rate, "; ".join(step.invalid_reasons))
        return False, True

    def step(self, rate: float, retry: int) -> CapacityStep:
        index = len(self.steps) + 1
        name = step_name(index, rate)
        folder = self.out / "steps" / name
        spec = step_spec(self.base, rate, f"{self.base.name}-{name}", index)
        summary = Summary.load_file(folder)
        if summary is not None:
            log.info("step %s finished in an earlier run; read back", name)
        else:
            stop = ClearlyFailing(spec, self.slo, folder) if self.settings.stop_early else None
            position = (index, self.settings.max_steps)
            summary = run_scenario(spec, folder, self.api_key, self.view, position, stop_when=stop)
        step = to_step(index, rate, name, retry, summary)
        log.info(
            "step %s: %s (share meeting the SLO %s)",
            name,
            step.outcome.upper(),
            "-" if step.share_meeting is None else f"{step.share_meeting:.2%}",
        )
        return step

    def result(self, bracket: Bracket) -> CapacityResult:
        at = [s for s in self.steps if s.outcome == "pass" and s.rate == bracket.passing]
        return CapacityResult(
            # What was searched, as the base scenario names it.
            **self.base.model_dump(include={"name", "model", "url", "replicas", "users_per_replica"}),
            slo=self.slo,
            search=self.settings,
            converged=bracket.converged,
            capacity_rate=bracket.passing,
            lowest_failing_rate=bracket.failing,
            limited_by_load_generator=bracket.failing is not None and bracket.failing_invalid,
            at_capacity=at[-1] if at else None,
            note=bracket.note(finished=True),
            steps=self.steps,
        )


def capacity_finished(folder: Path) -> bool:
    """A search over: its result is written."""
    return CapacityResult.file_in(folder).exists()


def run_capacity(
    base: ScenarioSpec, out: Path, api_key: str | None = None, view: View | None = None
) -> CapacityResult:
    """Search `base`'s capacity into `out`; finished steps found there are read back, not run again."""
    run = CapacityRun(base, out, api_key, view)
    run.prepare()
    result = run.result(search(run.settings, run.measure))
    result.save_file(out)
    return result
