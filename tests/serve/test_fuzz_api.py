"""Property-based fuzzing of every endpoint from the app's own OpenAPI document (schemathesis).

The same two models, `syn` (synthetic) and `tiny` (hf, random tiny Llama), behind the bare server
(`distinfer serve --bare`, one uvicorn process) and behind the session's real Ray Serve. For each
operation of `/openapi.json`, FUZZ_EXAMPLES cases valid by the document and FUZZ_EXAMPLES that break
it (distinfer.serve.fuzz: no 5xx, statuses / content types / bodies as documented, schema-breaking
requests refused with a 4xx, every 4xx in the OpenAI error shape naming the field), then a normal
request to each model. Hypothesis is derandomized: the same cases every run (benchmarks/fuzz_api.py
runs a larger, seeded one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from distinfer.config import parse_models
from distinfer.serve.fuzz import FuzzReport, fuzz
from distinfer.serve.launch import free_port, served

pytestmark = pytest.mark.ray

# Per operation and per mode (valid / schema-breaking): 2 POST operations x 2 modes x 25, plus the
# two GETs, is at most 102 requests per server.
FUZZ_EXAMPLES = 25


def fuzz_models(tiny_dir: Path) -> dict[str, Any]:
    # max_model_len bounds every answer: the fuzzer's max_tokens go up to 1e6.
    return {
        "models": [
            {"name": "syn", "engine": "synthetic", "max_model_len": 64, "vocabulary": ["alpha", "beta"]},
            {"name": "tiny", "engine": "hf", "model": str(tiny_dir), "max_model_len": 128, "num_cpus": 1},
        ]
    }


@pytest.fixture(scope="module")
def bare_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("fuzz-bare")
    models = work / "models.yaml"
    models.write_text(yaml.safe_dump(fuzz_models(tiny_model_dir)))
    port = free_port()
    with served(models, port, work / "serve.log", bare=True, timeout_s=120):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def ray_url(ray_serve: Any, tiny_model_dir: Path) -> Iterator[str]:
    url = ray_serve.deploy(parse_models(fuzz_models(tiny_model_dir)), "fuzz")
    yield url
    ray_serve.delete("fuzz")


def assert_fuzz_held(report: FuzzReport) -> None:
    assert not report.failures, "\n\n".join(report.failures)
    statuses = {key.rsplit(": ", 1)[1] for key in report.statuses}
    assert {"200", "400"} <= statuses, report.statuses  # it reached both answers and refusals
    assert report.cases >= 60, report.as_dict()
    assert report.normal_after == {"syn": 200, "tiny": 200}


def test_fuzz_the_bare_server(bare_url: str) -> None:
    assert_fuzz_held(fuzz(bare_url, FUZZ_EXAMPLES))


def test_fuzz_ray_serve(ray_url: str) -> None:
    assert_fuzz_held(fuzz(ray_url, FUZZ_EXAMPLES))
