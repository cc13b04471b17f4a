"""The serveConfigV2 the real `ray_service` role renders, with the code it ships, runs on Ray.

The role renders the RayService for the guide's inventory with the repository's own
files/models/synthetic.yaml as distinfer_models_file (replicas raised from the inventory). Its
serveConfigV2 is deployed with Ray's own `serve deploy` CLI on a private local Ray, started the way
the pods start theirs: with PYTHONPATH set to the wheel taken out of the rendered ConfigMap (the pods
mount it at the path the rendered PYTHONPATH names). Only the proxy's port 8000 becomes a free one.
The app must then answer /v1/models and a completion, and the wheel must be what Python imports
distinfer from.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from crd_schema import assert_valid
from helpers import REPO_ROOT, poweredge_inventory, render_roles
from test_render import KUBE_MINOR

from distinfer.serve.local_ray import free_ports
from ownray import BIN, ray_of_its_own

pytestmark = pytest.mark.ray

MODELS_FILE = REPO_ROOT / "files/models/synthetic.yaml"
MODEL = "synthetic"  # the one model that file declares


def _rendered(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The RayService and its serveConfigV2 as the role renders them; the shipped wheel, on disk."""
    inventory = poweredge_inventory(MODELS_FILE)
    # The models file says 1 replica; the inventory's override must win in the rendered config.
    inventory["all"]["vars"]["distinfer_replicas"] = {MODEL: 2}
    rendered = render_roles(tmp_path, inventory, ("ray_service",)).out  # the RayService and its code only
    rayservice = yaml.safe_load((rendered / "rayservice.yaml").read_text())
    assert_valid(rayservice, KUBE_MINOR)  # KubeRay's own CRDs (test_render.py)
    configmap = yaml.safe_load((rendered / "configmap-code.yaml").read_text())
    ((wheel_name, wheel_b64),) = configmap["binaryData"].items()
    wheel = tmp_path / "wheel" / wheel_name
    wheel.parent.mkdir()
    wheel.write_bytes(base64.b64decode(wheel_b64))
    return rayservice, yaml.safe_load(rayservice["spec"]["serveConfigV2"]), wheel


def test_rendered_serve_config_deployed_with_serve_deploy_answers(tmp_path: Path) -> None:
    rayservice, config, wheel = _rendered(tmp_path)
    (app,) = config["applications"]
    assert {d["name"]: d["num_replicas"] for d in app["deployments"]}[f"model-{MODEL}"] == 2
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    pythonpath = {e["name"]: e.get("value") for e in head["env"]}["PYTHONPATH"]
    assert pythonpath.endswith("/" + wheel.name)

    # The wheel alone carries the app: Python imports it from the zip, ahead of the installed package.
    probe = subprocess.run(
        [sys.executable, "-c", "import distinfer.serve.app as a; print(a.__file__)"],
        env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().startswith(str(wheel)), probe.stdout

    (port,) = free_ports(1)
    config["http_options"]["port"] = port
    config["http_options"]["host"] = "127.0.0.1"
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(yaml.safe_dump(config))

    with ray_of_its_own(num_cpus=4, extra_env={"PYTHONPATH": str(wheel)}) as own_ray:
        done = subprocess.run(
            [str(BIN / "serve"), "deploy", str(config_file), "-a", own_ray.dashboard_url],
            env={**os.environ, **own_ray.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        _answers(f"http://127.0.0.1:{port}")


def _answers(base: str) -> None:
    deadline = time.monotonic() + 240
    listed: list[str] = []
    while time.monotonic() < deadline and not listed:
        try:
            answer = httpx.get(f"{base}/v1/models", timeout=5)
            if answer.status_code == 200:
                listed = [m["id"] for m in answer.json()["data"]]
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert listed == [MODEL], "the rendered app never listed its model within 240 s"
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 5, "ignore_eos": True}
    answer = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 5
