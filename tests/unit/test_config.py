"""Models files: every shipped example validates; wrong files are refused naming the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from distinfer.config import (
    ConfigError,
    VllmModel,
    deployment_name,
    load_models_file,
    parse_models,
    serve_config,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "files" / "models").glob("*.yaml")) + sorted(
    (REPO / "inventory" / "local" / "models").glob("*.yaml")
)


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"llama2-70b-tp4.yaml", "cpu-two-models.yaml", "synthetic.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_models_file_validates(path: Path) -> None:
    models = load_models_file(path)
    config = serve_config(models)
    deployments = config["applications"][0]["deployments"]
    if models.direct:  # one model: its replicas serve HTTP themselves
        assert [d["name"] for d in deployments] == [deployment_name(models.models[0].name)]
    else:
        assert len(deployments) == len(models.models) + 1  # the ingress and one per model


def test_guide_example_is_llama2_70b_tp4_with_batch_32() -> None:
    (spec,) = load_models_file(REPO / "files" / "models" / "llama2-70b-tp4.yaml").models
    assert isinstance(spec, VllmModel)
    assert (spec.tensor_parallel_size, spec.max_ongoing_requests, spec.dtype) == (4, 32, "bfloat16")


def test_cpu_example_serves_smollm2_on_vllm_and_tiny_on_hf_from_var_lib() -> None:
    models = load_models_file(REPO / "files" / "models" / "cpu-two-models.yaml").models
    assert {m.name: m.engine for m in models} == {"smollm2": "vllm", "tiny": "hf"}
    for spec in models:
        assert spec.model.startswith("/var/lib/distinfer/models/")  # type: ignore[union-attr]
        assert spec.gpus_per_replica == 0  # CPU only: vllm with device cpu, hf on the cpu device


def test_demo_models_file_is_smollm2_on_vllm_for_cpus_and_the_hf_one_the_same_model() -> None:
    (vllm,) = load_models_file(REPO / "files" / "models" / "smollm2.yaml").models
    (hf,) = load_models_file(REPO / "files" / "models" / "smollm2-hf.yaml").models
    assert isinstance(vllm, VllmModel)
    assert (vllm.engine, vllm.device, vllm.gpus_per_replica) == ("vllm", "cpu", 0)
    assert (hf.engine, hf.name, hf.model) == ("hf", vllm.name, vllm.model)


def refused(data: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_models(data, "bad.yaml")
    return str(err.value)


def entry(**fields: Any) -> dict[str, Any]:
    return {"name": "m", "engine": "hf", "model": "/models/m", **fields}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"models": [entry(engine="tensorrt")]},
            ["models[0] ('m')", "'tensorrt'", "fix: set engine to one of: vllm, hf, synthetic"],
            id="bad-engine",
        ),
        pytest.param(
            {"models": [entry(engine="vllm", tensor_parallel_size=0)]},
            ["models[0] ('m').tensor_parallel_size", "(got 0)", "fix: use a value >= 1"],
            id="tp-zero",
        ),
        pytest.param(
            {"models": [{"name": "m", "engine": "vllm"}]},
            ["models[0] ('m').model: Field required", "fix: add `model:`"],
            id="missing-model",
        ),
        pytest.param(
            {"models": [entry(devise="cpu")]},
            ["models[0] ('m').devise", "(got 'cpu')", "fix: remove `devise` or fix its spelling", "device"],
            id="unknown-field",
        ),
        pytest.param(
            {"models": [entry(), {"name": "m", "engine": "synthetic"}]},
            ["models[1].name 'm' repeats models[0].name", "give each entry its own name"],
            id="duplicate-names",
        ),
        pytest.param(
            {"models": [{"name": "m"}]},
            ["models[0] ('m')", "fix: add `engine:` (one of: vllm, hf, synthetic)"],
            id="missing-engine",
        ),
        pytest.param(
            {"models": [entry()], "http": {"prot": 8000}},
            ["http.prot", "allowed here: host, port"],
            id="unknown-http-field",
        ),
        pytest.param(
            {"models": [entry(replicas=-1)]},
            ["models[0] ('m').replicas", "(got -1)", "fix: use a value >= 1"],
            id="negative-replicas",
        ),
        pytest.param({"models": []}, ["models: List should have at least 1 item"], id="no-models"),
        pytest.param(None, ["the file must be a YAML mapping with a `models:` list"], id="empty-file"),
    ],
)
def test_wrong_files_name_the_field_and_the_fix(data: Any, expected: list[str]) -> None:
    message = refused(data)
    assert message.startswith("bad.yaml is not a valid models file:")
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read models file .*pass an existing YAML file"):
        load_models_file(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_models_file(bad)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"models": [entry(replicas=0), entry(name="n", colour="red")]}))
    with pytest.raises(ConfigError) as err:
        load_models_file(path)
    assert "models[0] ('m').replicas" in str(err.value)
    assert "models[1] ('n').colour" in str(err.value)


def synthetic(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "engine": "synthetic", **fields}


def test_one_model_is_served_by_its_own_replicas_by_default() -> None:
    # Layout `auto`: one model -> `direct` (Serve's proxy -> model replica), no router deployment.
    models = parse_models({"models": [synthetic("m", max_ongoing_requests=8, max_queued_requests=3)]})
    assert models.direct
    (app,) = serve_config(models)["applications"]
    (deployment,) = app["deployments"]
    assert deployment["name"] == "model-m"
    # Serve lets a replica hold (and its proxy keep) twice cap + queue: the replica's gate answers 503.
    assert deployment["max_ongoing_requests"] == deployment["max_queued_requests"] == 2 * (8 + 3)
    assert app["args"]["models"][0]["max_ongoing_requests"] == 8  # the cap the gate and engine use
    assert app["args"]["ingress"]["layout"] == "auto"


def test_several_models_keep_the_routing_ingress() -> None:
    models = parse_models({"models": [synthetic("a"), synthetic("b")]})
    assert not models.direct
    names = [d["name"] for d in serve_config(models)["applications"][0]["deployments"]]
    assert names == ["OpenAIIngress", "model-a", "model-b"]


def test_router_layout_can_be_asked_for_one_model() -> None:
    models = parse_models({"models": [synthetic("a")], "ingress": {"layout": "router"}})
    assert not models.direct
    names = [d["name"] for d in serve_config(models)["applications"][0]["deployments"]]
    assert names == ["OpenAIIngress", "model-a"]


def test_direct_layout_refuses_several_models() -> None:
    message = refused({"models": [synthetic("a"), synthetic("b")], "ingress": {"layout": "direct"}})
    assert "layout 'direct' serves one model" in message and "'router'" in message
