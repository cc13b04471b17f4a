"""Autoscaling scenarios without a server: the `autoscaling:` block and load `steps:` refused with the
field and the fix named, rendered into Serve's config and planned; the figures (scale-up time, SLO
seconds while scaling, replica-seconds, cost saved) on hand-made samples and records; the replica
sample from Serve's REST answer; and the samples read back from status.jsonl where there is no
replicas.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from distinfer.bench.replicas import replica_sample
from distinfer.config import ConfigError, parse_models, serve_config
from distinfer.plan import PlanRequest, build_plan
from distinfer.results.autoscaling import (
    ReplicaSample,
    autoscaling_figures,
    cost_saved,
    read_replicas,
    replica_seconds,
    replicas_needed,
)
from distinfer.results.records import RequestRecord
from distinfer.results.scenario import ScenarioSpec, validate_scenario
from distinfer.results.workload import LoadStep, level_at, mean_level

SCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2, "upscale_delay_s": 1}


def _models(**entry: Any) -> dict[str, Any]:
    return {"models": [{"name": "syn", "engine": "synthetic", "max_ongoing_requests": 4, **entry}]}


def _refused_models(**entry: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_models(_models(**entry))
    return str(err.value)


def test_the_block_becomes_serves_autoscaling_config_without_a_replica_count() -> None:
    models = parse_models(_models(autoscaling=SCALING))
    (deployment,) = serve_config(models)["applications"][0]["deployments"]
    assert "num_replicas" not in deployment
    assert deployment["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2.0,
        "upscale_delay_s": 1.0,
        "downscale_delay_s": 600.0,
    }
    # A dump reads back as the same entry (no fixed `replicas` written beside the block).
    again = parse_models(models.model_dump(mode="json", exclude_none=True))
    assert again == models
    from ray.serve.schema import DeploymentSchema

    schema = DeploymentSchema.model_validate(deployment)  # Serve's own schema of a config's deployment
    assert schema.autoscaling_config is not None and schema.autoscaling_config["max_replicas"] == 3


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"replicas": 2, "autoscaling": SCALING}, "replicas 2 and autoscaling: both set"),
        ({"autoscaling": {**SCALING, "min_replicas": 4}}, "min_replicas 4 exceeds max_replicas 3"),
        ({"autoscaling": {**SCALING, "initial_replicas": 5}}, "initial_replicas 5 is outside"),
        ({"autoscaling": {**SCALING, "target_ongoing_requests": 8}}, "exceeds max_ongoing_requests 4"),
        ({"autoscaling": {**SCALING, "max_replica": 3}}, "max_replica"),
        ({"autoscaling": {"min_replicas": 1}}, "max_replicas"),
    ],
)
def test_a_wrong_block_is_refused_naming_the_field_and_the_fix(entry: dict[str, Any], says: str) -> None:
    message = _refused_models(**entry)
    assert "models[0] ('syn')" in message and says in message, message


def _scenario(**fields: Any) -> dict[str, Any]:
    return {"name": "s", "model": "syn", "url": "http://127.0.0.1:1", "duration_s": 20, **fields}


def _refused_scenario(**fields: Any) -> str:
    with pytest.raises(ConfigError) as err:
        validate_scenario(_scenario(**fields), "scenario 's'")
    return str(err.value)


def test_steps_set_the_users_to_their_peak_and_the_level_follows_them() -> None:
    spec = validate_scenario(
        _scenario(steps=[{"at_s": 0, "users": 2}, {"at_s": 5, "users": 8, "ramp_s": 4}]), "s"
    )
    assert spec.users == 8 and not spec.open_loop
    steps = spec.steps or []
    assert [level_at(steps, t) for t in (0, 4.9, 5, 7, 9, 19)] == [2, 2, 2, 5, 8, 8]
    assert mean_level(steps, 0, 10) == pytest.approx((2 * 5 + (2 + 8) / 2 * 4 + 8) / 10, rel=1e-3)
    rates = validate_scenario(
        _scenario(users=64, steps=[{"at_s": 0, "rate": 1}, {"at_s": 10, "rate": 5}]), "s"
    )
    assert rates.open_loop and rates.rate_steps and rates.peak_rate == 5


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"steps": [{"at_s": 1, "users": 2}]}, "start the steps at at_s 0"),
        ({"steps": [{"at_s": 0, "users": 2}, {"at_s": 0, "users": 3}]}, "list the steps in time order"),
        (
            {"steps": [{"at_s": 0, "users": 2, "ramp_s": 5}, {"at_s": 3, "users": 3}]},
            "after the last one's ramp",
        ),
        (
            {"users": 4, "steps": [{"at_s": 0, "users": 2}, {"at_s": 5, "rate": 3}]},
            "steps mix users and rate",
        ),
        ({"steps": [{"at_s": 0, "users": 2, "rate": 1}]}, "both users and rate"),
        ({"users": 4, "steps": [{"at_s": 0, "users": 8}]}, "raise users to 8"),
        ({"steps": [{"at_s": 0, "users": 2}, {"at_s": 25, "users": 4}]}, "not before duration_s 20"),
        ({"users": 4, "rate": 2, "steps": [{"at_s": 0, "rate": 1}]}, "rate and steps are all set"),
    ],
)
def test_wrong_steps_are_refused_naming_the_fix(fields: dict[str, Any], says: str) -> None:
    message = _refused_scenario(**fields)
    assert says in message, message


def _plan(tmp_path: Path, models: dict[str, Any], scenarios: dict[str, Any] | None, **changes: Any) -> Any:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(models))
    data: dict[str, Any] = {
        "platform": "local",
        "models_file": str(path),
        "hosts": [{"name": "local", "address": "127.0.0.1", "gpus": 0, "gpu_vendor": "nvidia"}],
        "head": "local",
        "scenarios": scenarios,
        **changes,
    }
    return build_plan(PlanRequest.model_validate(data))


def test_a_scenarios_autoscaling_is_deployed_for_it_alone(tmp_path: Path) -> None:
    scenarios = {
        "defaults": {"duration_s": 20, "model": "syn"},
        "scenarios": [
            {"name": "static-3", "replicas": 3, "users": 6},
            {
                "name": "auto",
                "autoscaling": SCALING,
                "steps": [{"at_s": 0, "users": 1}, {"at_s": 5, "users": 6}],
            },
        ],
    }
    plan = _plan(tmp_path, _models(), scenarios)
    static, auto = plan.scenarios
    assert plan.autoscaling is True
    (fixed,) = static.serve_config["applications"][0]["deployments"]
    (scaled,) = auto.serve_config["applications"][0]["deployments"]
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert "num_replicas" not in scaled and scaled["autoscaling_config"]["max_replicas"] == 3
    assert auto.replicas == 3 and auto.spec["autoscaling"]["min_replicas"] == 1 and auto.users == 6


def test_replicas_beside_autoscaling_are_refused_in_a_scenario_and_in_distinfer_replicas(
    tmp_path: Path,
) -> None:
    both = {
        "scenarios": [{"name": "x", "model": "syn", "duration_s": 5, "replicas": 2, "autoscaling": SCALING}]
    }
    with pytest.raises(ConfigError, match="scenario 'x': replicas 2 and autoscaling: both set"):
        _plan(tmp_path, _models(), both)
    with pytest.raises(ConfigError, match=r"distinfer_replicas.syn is set .* autoscaling"):
        _plan(tmp_path, _models(autoscaling=SCALING), None, replicas={"syn": 2})


# ---- the figures ------------------------------------------------------------------------------------

START = 1000.0


def _record(sent: float, ttft_s: float, ok: bool = True) -> RequestRecord:
    at = START + sent
    return RequestRecord(
        request_id=f"r{sent}",
        worker=0,
        seq=1,
        user=0,
        scheduled=at,
        sent=at,
        first_token=at + ttft_s if ok else None,
        last_token=at + ttft_s + 0.1 if ok else None,
        end=at + ttft_s + 0.1,
        status=200 if ok else 503,
        ok=ok,
        error_kind=None if ok else "http",
        completion_tokens=10 if ok else None,
        max_tokens=10,
    )


def _sample(t: float, running: int, target: int | None = None, starting: int = 0) -> ReplicaSample:
    return ReplicaSample(t=START + t, running=running, starting=starting, target=target)


def test_the_figures_of_a_step_from_hand_made_samples_and_records() -> None:
    spec = ScenarioSpec.model_validate(
        _scenario(
            duration_s=10,
            steps=[{"at_s": 0, "users": 2}, {"at_s": 4, "users": 6}],
            autoscaling=SCALING,
            slo={"ttft_ms": 500},
        )
    )
    # 1 replica until 6.5 s, the target rises at 5.0 s, 2 running at 6.5 s, 3 at 7.5 s.
    samples = [_sample(t, 1, 1) for t in (0, 1, 2, 3, 4)] + [_sample(5, 1, 3, 2), _sample(6.5, 2, 3, 1)]
    samples += [_sample(t, 3, 3) for t in (7.5, 8.5, 9.5)]
    # Slow first tokens end in seconds 4, 5 and 8 (after scaling: not counted while scaling), a failure
    # in 6; the rest within the SLO.
    records = [_record(t, 0.1) for t in (0.5, 1.5, 2.5, 3.5)]
    records += [_record(4.0, 0.8), _record(4.9, 0.9), _record(6.2, 0.1, ok=False), _record(8.0, 0.7)]
    figures = autoscaling_figures(spec, records, samples, START)
    (up,) = figures.scale_ups
    assert (up.replicas_before, up.need, up.decided_s, up.serving_s) == (1, 3, 1.0, 3.5)
    assert up.slo_violated_s == 3  # seconds 4, 5, 6 (the 8.8 s end is after serving at 7.5 s)
    assert figures.slo_violated_s == 4 and figures.slo_violated_scaling_s == 3
    assert figures.within_bounds is True and (figures.lowest_running, figures.highest_running) == (1, 3)
    # 1 x 6.5 s + 2 x 1 s + 3 x 2.5 s
    assert figures.replica_seconds == pytest.approx(6.5 + 2 + 7.5)
    assert cost_saved(16.0, 3, 10.0) == pytest.approx(1 - 16 / 30)


def test_replica_seconds_hold_each_sample_until_the_next_within_the_window() -> None:
    samples = [_sample(-2, 4), _sample(1, 1), _sample(3, 2)]
    assert replica_seconds(samples, START, START + 5) == pytest.approx(4 * 1 + 1 * 2 + 2 * 2)
    assert replica_seconds([], START, START + 5) is None


def test_replicas_needed_stays_within_the_bounds() -> None:
    assert [replicas_needed(u, 2, 1, 3) for u in (0, 1, 2, 3, 4, 6, 9)] == [1, 1, 1, 2, 2, 3, 3]


def test_an_increase_already_served_and_one_never_served() -> None:
    spec = ScenarioSpec.model_validate(
        _scenario(
            duration_s=10,
            steps=[{"at_s": 0, "users": 1}, {"at_s": 3, "users": 2}, {"at_s": 6, "users": 6}],
            autoscaling=SCALING,
        )
    )
    samples = [_sample(t, 1, 1) for t in range(10)]
    first, second = autoscaling_figures(spec, [], samples, START).scale_ups
    assert first.need == 1 and first.serving_s == 0.0
    assert second.need == 3 and second.serving_s is None and second.decided_s is None
    assert second.slo_violated_s is None  # no SLO


def test_a_sample_from_serves_rest_answer() -> None:
    details = {
        "applications": {
            "other": {"deployments": {}},
            "autoscale": {
                "deployments": {
                    "model-syn": {
                        "target_num_replicas": 3,
                        "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}, {"state": "STARTING"}],
                    }
                }
            },
        }
    }
    sample = replica_sample(details, "model-syn", "autoscale", 5.0)
    assert (sample.running, sample.starting, sample.target) == (1, 2, 3)
    assert replica_sample(details, "model-syn", None, 5.0) == sample
    with pytest.raises(LookupError, match="no deployment 'model-x'"):
        replica_sample(details, "model-x", None, 5.0)


def test_without_replicas_jsonl_the_samples_come_from_status_jsonl(tmp_path: Path) -> None:
    lines = [
        {
            "time": 1.0,
            "ok": True,
            "models": [{"name": "syn", "running_replicas": 1, "replica_states": {"RUNNING": 1}}],
        },
        {"time": 2.0, "ok": False, "error": "timeout"},
        {
            "time": 3.0,
            "ok": True,
            "models": [
                {"name": "syn", "running_replicas": 1, "replica_states": {"RUNNING": 1, "STARTING": 2}}
            ],
        },
    ]
    (tmp_path / "status.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    samples, source = read_replicas(tmp_path, "syn")
    assert source == "status.jsonl"
    assert [(s.t, s.running, s.starting, s.target) for s in samples] == [(1.0, 1, 0, None), (3.0, 1, 2, None)]
    (tmp_path / "replicas.jsonl").write_text('{"t": 4.0, "running": 2, "starting": 0, "target": 2}\n{"t": 5')
    samples, source = read_replicas(tmp_path, "syn")
    assert source == "replicas.jsonl" and [s.running for s in samples] == [2]  # the cut line passed over


def test_a_load_step_level_is_one_of_users_or_rate() -> None:
    assert LoadStep(at_s=0, users=3).level == 3.0
    assert LoadStep(at_s=0, rate=2.5).level == 2.5


def test_a_sweep_without_a_plan_takes_steps_for_users_and_refuses_replicas_beside_autoscaling(
    tmp_path: Path,
) -> None:
    from distinfer.results.scenario import load_sweep

    path = tmp_path / "sweep.yaml"
    base = {
        "name": "a",
        "model": "syn",
        "duration_s": 10,
        "steps": [{"at_s": 0, "users": 1}, {"at_s": 5, "users": 4}],
    }
    path.write_text(yaml.safe_dump({"scenarios": [base]}))
    (spec,) = load_sweep(path, {"url": "http://127.0.0.1:1"})
    assert spec.users == 4
    path.write_text(yaml.safe_dump({"scenarios": [{**base, "replicas": 2, "autoscaling": SCALING}]}))
    with pytest.raises(ConfigError, match="scenario 'a': replicas 2 and autoscaling: both set"):
        load_sweep(path, {"url": "http://127.0.0.1:1"})
