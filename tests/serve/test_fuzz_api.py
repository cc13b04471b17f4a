"""Property-based fuzzing of every endpoint from the app's own OpenAPI document (schemathesis).

The same two models, `syn` (synthetic) and `tiny` (hf, random tiny Llama), behind the bare server
(`distinfer serve --bare`, one uvicorn process) and behind the session's real Ray Serve. For each
operation of `/openapi.json`, FUZZ_EXAMPLES cases valid by the document and FUZZ_EXAMPLES that break
it (distinfer.serve.fuzz: no 5xx, statuses / content types / bodies as documented, schema-breaking
requests refused with a 4xx, every 4xx in the OpenAI error shape naming the field), then a normal
request to each model. Hypothesis is derandomized: the same cases every run (benchmarks/fuzz_api.py
runs a larger, seeded one). Every check `schemathesis run --checks all` runs is among them
(positive_data_acceptance: every body the document allows is answered 200), and the schemathesis
command itself runs against each server as a user would run it (`--checks all`, its coverage phase's
boundary values included), deterministic, with the project's openai_error_shape check as its hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from distinfer.config import parse_models
from distinfer.serve.fuzz import FuzzReport, fuzz, schemathesis_cli
from distinfer.serve.launch import free_port, served

pytestmark = pytest.mark.ray

# Per operation and per mode (valid / schema-breaking): 2 POST operations x 2 modes x 25, plus the
# two GETs, is at most 102 requests per server.
FUZZ_EXAMPLES = 25


# The models' context, which the document states as max_tokens' maximum. A prompt's tokens are the one
# limit JSON Schema cannot state (the document says it in words): schemathesis's bodies reached 870
# tokens of the tiny model's byte-level tokenizer in a run from scratch, so the context is well above.
FUZZ_CONTEXT = 2048


@pytest.fixture(scope="module")
def fuzz_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a 2048-token context (the session's has 512)."""
    from distinfer.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny-2k", max_len=FUZZ_CONTEXT)


def fuzz_models(tiny_dir: Path) -> dict[str, Any]:
    # The hf model's context is its own (2048): the document's maximum is what the engine reports.
    return {
        "models": [
            {"name": "syn", "engine": "synthetic", "max_model_len": FUZZ_CONTEXT, "vocabulary": ["a", "b"]},
            {"name": "tiny", "engine": "hf", "model": str(tiny_dir), "num_cpus": 1},
        ]
    }


@pytest.fixture(scope="module")
def bare_url(fuzz_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("fuzz-bare")
    models = work / "models.yaml"
    models.write_text(yaml.safe_dump(fuzz_models(fuzz_tiny_dir)))
    port = free_port()
    with served(models, port, work / "serve.log", bare=True, timeout_s=120):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def ray_url(ray_serve: Any, fuzz_tiny_dir: Path) -> Iterator[str]:
    url = ray_serve.deploy(parse_models(fuzz_models(fuzz_tiny_dir)), "fuzz")
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


def assert_document_limits(url: str) -> None:
    """The document's max_tokens maximum per model is the context the running engine reports."""
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    (request,) = (v for k, v in schemas.items() if k.startswith("CompletionRequest"))
    assert request["properties"]["model"]["enum"] == ["syn", "tiny"]
    assert request["properties"]["max_tokens"]["anyOf"][0]["maximum"] == FUZZ_CONTEXT
    cards = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert {c["id"]: c["max_model_len"] for c in cards} == {"syn": FUZZ_CONTEXT, "tiny": FUZZ_CONTEXT}


@pytest.mark.parametrize("server", ["bare", "ray"])
def test_schemathesis_run_with_all_checks_finds_nothing(server: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(f"{server}_url")
    assert_document_limits(url)
    run = schemathesis_cli(url, max_examples=FUZZ_EXAMPLES, deterministic=True)
    assert run.passed, f"{' '.join(run.command)}\n{run.output[-6000:]}"
