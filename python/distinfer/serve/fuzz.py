"""Property-based fuzzing of a running server from its own OpenAPI document (schemathesis, Hypothesis).

Needs the `dev` extra (schemathesis). For every operation of `/openapi.json`, `max_examples` cases
are generated from the document's schemas (positive: what the document says is valid) and as many
that break them (negative: a wrong type, a value out of range, an unknown field, a missing one),
sent over real HTTP, and each answer must hold these properties:

- every check schemathesis 4.32.5 has (what `schemathesis run --checks all` runs, `ALL_CHECKS`):
  no 5xx (`not_a_server_error`); the status, content type, headers and JSON body are as documented
  (`status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`); a request that breaks the schema is refused with a 4xx
  (`negative_data_rejection`) and one the document allows is accepted (`positive_data_acceptance`);
  an undocumented method is 405 with `Allow` (`unsupported_method`, `allow_header_conformance`);
  and the auth and resource checks, which have nothing to find here;
- every 4xx is in the OpenAI error shape and, for a refused field, `param` names it and the message
  says it (`openai_error_shape`, registered with schemathesis, so `--checks all` runs it too);
- after all of them, every served model still answers a normal request.

`schemathesis_cli` runs the schemathesis command itself as a user would (`schemathesis run --checks
all`: its coverage phase's boundary values as well as generated cases) with this module as its hooks.
Used by tests/serve/test_fuzz_api.py (bounded, deterministic cases in `make test`) and by
benchmarks/fuzz_api.py (a larger run with a random seed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Answers about a field of the request: `param` must name it and the message must say it.
_FIELD_STATUSES = {400, 404, 413, 415, 422}


class OpenAIErrorShapeViolation(AssertionError):
    pass


def names_field(message: str, param: str) -> bool:
    """`param` appears in `message` as a name of its own (`n` is not named by the `n` of "not")."""
    return re.search(rf"(?<![\w.]){re.escape(param)}(?!\w)", message) is not None


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx: `{"error": {"message", "type", "param", "code"}}`, naming the refused field."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        raise OpenAIErrorShapeViolation(
            f"{response.status_code} answer is not an OpenAI error object: {response.content[:300]!r}"
        ) from None
    message, kind, param = error.get("message"), error.get("type"), error.get("param")
    if not (isinstance(message, str) and message and isinstance(kind, str) and kind):
        raise OpenAIErrorShapeViolation(f"{response.status_code} error lacks a message or type: {error}")
    # A 404 names a field when it is about the model; an unknown path is OpenAI's "Invalid URL" (no param).
    if response.status_code in _FIELD_STATUSES and error.get("code") != "unknown_url":
        if not param:
            raise OpenAIErrorShapeViolation(f"{response.status_code} error names no field (param): {error}")
        if not names_field(message, param):
            raise OpenAIErrorShapeViolation(f"message does not name the field {param!r}: {message!r}")
    return None


load_all_checks()
# Every registered check: schemathesis's own (`--checks all`) and openai_error_shape above.
ALL_CHECKS = list(REGISTERED_CHECKS.get_all())


def _prompt_past_context(response: Any) -> bool:
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (
        response.status_code == 400
        and error.get("code") == "context_length_exceeded"
        and error.get("param") in ("prompt", "messages")
    )


def positive_data_acceptance_within_context(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, less the one refusal JSON Schema cannot state: a prompt whose tokens
    do not fit the model's context (documented in words). For servers whose context is kept short on
    purpose (vLLM on the CPU: 256 tokens), which the fuzzer's chat bodies outgrow."""
    if _prompt_past_context(response):
        return None
    return positive_data_acceptance(ctx, response, case)


@dataclass
class FuzzReport:
    base_url: str
    cases: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    normal_after: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "cases": self.cases,
            "statuses": dict(sorted(self.statuses.items())),
            "failures": self.failures,
            "normal_request_after": self.normal_after,
        }


def _run_operation(
    report: FuzzReport,
    operation: Any,
    mode: GenerationMode,
    max_examples: int,
    seed: int | None,
    headers: dict[str, str],
    checks: list[Any],
) -> None:
    label = f"{operation.method.upper()} {operation.path} ({mode.value})"

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        response = case.call(base_url=report.base_url, headers=headers, timeout=60)
        report.cases += 1
        report.statuses[f"{label}: {response.status_code}"] += 1
        case.validate_response(response, checks=checks, headers=headers)

    test: Callable[[], None] = one if seed is None else hypothesis_seed(seed)(one)
    try:
        test()
    except Unsatisfiable:
        report.statuses[f"{label}: nothing to break (no parameters or body)"] += 0
    except Exception as err:  # one operation's failure is reported; the others still run
        report.failures.append(f"{label}: {type(err).__name__}: {err}"[:4000])


@dataclass
class CliRun:
    command: list[str]
    returncode: int
    output: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and "No issues found" in self.output


def schemathesis_cli(base_url: str, max_examples: int | None = None, deterministic: bool = False) -> CliRun:
    """`schemathesis run --checks all` against the server's document, with openai_error_shape added
    through SCHEMATHESIS_HOOKS; not `deterministic`: a random seed, as a user's run from scratch."""
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", "--checks", "all"]
    command += ["--no-color"]
    if max_examples is not None:
        command += ["--max-examples", str(max_examples)]
    if deterministic:
        command.append("--generation-deterministic")
    command.append(f"{base_url}/openapi.json")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": __name__}
    # In a folder of its own: schemathesis keeps a crash cache under ./.schemathesis and replays it,
    # so a run in the working tree would neither start from scratch nor leave the tree clean.
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as folder:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=900, check=False, cwd=folder
        )
    return CliRun(command, done.returncode, done.stdout + done.stderr)


def normal_requests(base_url: str, models: list[str], headers: dict[str, str]) -> dict[str, int]:
    """The status of one ordinary completion per model (200 expected)."""
    out = {}
    for model in models:
        body = {"model": model, "prompt": "hello", "max_tokens": 2}
        out[model] = httpx.post(
            f"{base_url}/v1/completions", json=body, headers=headers, timeout=60
        ).status_code
    return out


def fuzz(
    base_url: str,
    max_examples: int,
    seed: int | None = None,
    headers: dict[str, str] | None = None,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    prompt_past_context: bool = False,
) -> FuzzReport:
    """Fuzz every operation of the server's OpenAPI document; `seed` None: the same cases every run.
    `prompt_past_context`: a prompt refused for the model's context is no finding (short contexts)."""
    headers = headers or {}
    checks = ALL_CHECKS
    if prompt_past_context:
        checks = [
            positive_data_acceptance_within_context if check is positive_data_acceptance else check
            for check in ALL_CHECKS
        ]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=headers)
    report = FuzzReport(base_url=base_url)
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            report.failures.append(f"the OpenAPI document has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        for mode in modes:
            _run_operation(report, operation, mode, max_examples, seed, headers, checks)
    models = [m["id"] for m in httpx.get(f"{base_url}/v1/models", headers=headers, timeout=30).json()["data"]]
    report.normal_after = normal_requests(base_url, models, headers)
    return report
