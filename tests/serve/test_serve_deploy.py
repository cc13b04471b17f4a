"""`distinfer serve-config` output, deployed with Ray's own `serve deploy` CLI, answers requests.

This is the text a KubeRay RayService carries as serveConfigV2, so it is proven here the way an
operator uses it: the real CLI against the REST API of a private local Ray (its own ports, temp dir
and auth token; stopped at the end, also on failure). A Ray of its own, not the session's: a config
deploy takes over every application on a cluster, and the session's apps are deployed from Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from distinfer.serve.local_ray import LocalRay, free_ports
from ownray import ray_of_its_own

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def own_ray() -> Iterator[LocalRay]:
    with ray_of_its_own(num_cpus=4) as local:
        yield local


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_serve_config_deployed_with_serve_deploy_answers(
    own_ray: LocalRay, tiny_model_dir: Path, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    models = {
        "models": [
            {"name": "tiny", "engine": "hf", "model": str(tiny_model_dir), "max_model_len": 128},
            {"name": "syn", "engine": "synthetic", "vocabulary": ["one", "two"]},
        ],
        "http": {"host": "127.0.0.1", "port": port},
    }
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump(models))
    env = {**os.environ, **own_ray.env}
    text = _run(
        [str(BIN / "distinfer"), "serve-config", "--models", str(models_file), "--replicas", "syn=2"], env
    )
    config = yaml.safe_load(text)
    (app,) = config["applications"]
    replicas = {d["name"]: d["num_replicas"] for d in app["deployments"]}
    assert replicas == {"OpenAIIngress": 1, "model-tiny": 1, "model-syn": 2}
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(text)

    _run([str(BIN / "serve"), "deploy", str(config_file), "-a", own_ray.dashboard_url], env)

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    listed: list[str] = []
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{base}/v1/models", timeout=5)
            if answer.status_code == 200:
                listed = sorted(m["id"] for m in answer.json()["data"])
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert listed == ["syn", "tiny"], "the deployed app never listed its models within 180 s"

    for model in ("tiny", "syn"):
        body = {"model": model, "prompt": "Hello, how are you", "max_tokens": 5, "ignore_eos": True}
        reply = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        result = reply.json()
        assert result["model"] == model
        assert result["usage"]["completion_tokens"] == 5
        assert result["choices"][0]["text"]
    status = _run([str(BIN / "serve"), "status", "-a", own_ray.dashboard_url], env)
    assert "RUNNING" in status
