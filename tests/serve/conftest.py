"""The applications the serve tests talk to, deployed once on the session's Ray Serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distinfer.config import ModelsFile, parse_models

# Small enough for 2 shared cores; max_model_len small so "too long" inputs are cheap to send.
TINY_MAX_LEN = 128


def main_models(tiny_dir: Path) -> ModelsFile:
    return parse_models(
        {
            "models": [
                {
                    "name": "tiny",
                    "engine": "hf",
                    "model": str(tiny_dir),
                    "max_ongoing_requests": 32,
                    "max_model_len": TINY_MAX_LEN,
                    "num_cpus": 1,
                },
                {
                    "name": "syn",
                    "engine": "synthetic",
                    "vocabulary": ["alpha", "beta"],
                    "eos_after": 3,
                    "max_model_len": 64,
                },
                {
                    "name": "slow",
                    "engine": "synthetic",
                    "max_ongoing_requests": 1,
                    "max_queued_requests": 1,
                    "itl_ms": 50,
                },
            ]
        }
    )


@pytest.fixture(scope="session")
def main_app(ray_serve: Any, tiny_model_dir: Path) -> str:
    """Base URL of an app serving `tiny` (hf), `syn` and `slow` (synthetic) at once."""
    return ray_serve.deploy(main_models(tiny_model_dir), "main")


@pytest.fixture(scope="session")
def secured_app(ray_serve: Any) -> str:
    """Base URL of an app that asks for the API key in $DISTINFER_TEST_API_KEY."""
    models = parse_models(
        {"models": [{"name": "syn", "engine": "synthetic"}], "api_key_env": ray_serve.api_key_env}
    )
    return ray_serve.deploy(models, "secured")
