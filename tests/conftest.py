"""Shared fixtures: one private local Ray + Serve per session, the tiny model made once, and a
headless Chromium for the page tests (`browser`, see tests/browser.py).

`ray_serve` starts a single-node Ray of its own (free ports, its own temp dir and auth token, see
distinfer.serve.local_ray) and Serve's HTTP proxy on a free port, shared by every test that needs
it, and stops exactly that Ray at the end (also after failures). `ray_serve.deploy(models, name)`
deploys a ModelsFile as its own application under `/<name>` and returns that app's base URL.

Ray is imported inside the fixtures only: importing it before locust breaks gevent's ssl patching
in the load-generator tests that share this session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distinfer.config import ModelsFile, app_args
from distinfer.serve.local_ray import LocalRay
from distinfer.serve.runner import serve_on_private_ray

# Exported into the Ray processes so the API-key tests have a key to ask for.
TEST_API_KEY_ENV = "DISTINFER_TEST_API_KEY"
TEST_API_KEY = "test-key-" + os.urandom(6).hex()


@dataclass
class RayServe:
    local: LocalRay
    http_port: int
    # An API key exported into every Ray process, for apps whose models file names `api_key_env`.
    api_key_env: str = TEST_API_KEY_ENV
    api_key: str = TEST_API_KEY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment a subprocess needs to talk to this Ray (`serve deploy`, `ray status`)."""
        return {**os.environ, **self.local.env, TEST_API_KEY_ENV: TEST_API_KEY}

    def deploy(self, models: ModelsFile, name: str, timeout_s: float = 120) -> str:
        """Deploy `models` as application `name` under route /name; returns its base URL once healthy."""
        from ray import serve

        from distinfer.serve.app import build_app

        serve.run(build_app(app_args(models)), name=name, route_prefix=f"/{name}", blocking=False)
        base = f"{self.url}/{name}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = serve.status().applications.get(name)
            if status is not None and status.status == "RUNNING":
                return base
            if status is not None and status.status == "DEPLOY_FAILED":
                raise RuntimeError(f"application {name} failed to deploy: {status.message}")
            time.sleep(0.5)
        raise TimeoutError(f"application {name} not running after {timeout_s}s")

    def delete(self, name: str) -> None:
        from ray import serve

        serve.delete(name)


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[RayServe]:
    """A private local Ray with Serve's HTTP proxy on a free port, for the whole session."""
    # Metrics handed to the export port every 2 s (Ray's default 10 s): the Prometheus tests' short
    # windows then hold several exports.
    extra_env = {TEST_API_KEY_ENV: TEST_API_KEY, "RAY_metrics_report_interval_ms": "2000"}
    with serve_on_private_ray(num_cpus=8, extra_env=extra_env) as (local, port):
        yield RayServe(local, port)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama + tokenizer (distinfer model make-tiny), made once per session."""
    from distinfer.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 exported once per session (distinfer model smollm2; the GGUF conversion takes ~30 s)."""
    from distinfer.models.smollm2 import export_smollm2

    directory = tmp_path_factory.mktemp("smollm2") / "smollm2"
    export_smollm2(directory)
    return directory


@pytest.fixture(scope="session")
def vllm_app(ray_serve: RayServe, smollm2_dir: Path) -> str:
    """Base URL of an app serving `smollm2` (vLLM on the CPU) and `syn` (synthetic) on the session's Ray."""
    from distinfer.config import parse_models
    from vllmapp import VLLM_APP, need_vllm, vllm_models

    need_vllm()
    return ray_serve.deploy(parse_models(vllm_models(smollm2_dir)), VLLM_APP, timeout_s=300)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's, through chromium-driver) for the page tests: tests/browser.py."""
    from browser import chromium

    with chromium() as running:
        yield running
