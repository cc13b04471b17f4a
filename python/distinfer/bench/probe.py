"""One request before any load: is the server there, does it serve the model, does it take the key?

A benchmark pointed at the wrong place must say so at once, not fire thousands of failing requests
and call the result a measurement. The probe sends one request shaped like the run's (same API, the
longest prompt of the set, the run's `max_tokens`, streamed) and stops reading at the first token:
it costs one time-to-first-token, and it still meets every refusal a real request would (URL, API
key, model name, context length), because the server decides those before it streams anything.
Each failure is a `ProbeError` naming the problem, what the server said and the fix.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

import httpx

from distinfer.bench.stream import RequestSpec
from distinfer.config import ConfigError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# A server at capacity (a previous run still draining) answers 503: wait this long for a slot.
BUSY_WAIT_S = 30.0


class ProbeError(ConfigError):
    """The server cannot serve this run as configured; nothing was loaded."""


@dataclass(frozen=True)
class ProbeResult:
    status: int
    first_token_s: float


def _error_of(response: httpx.Response) -> tuple[str, str | None, str | None]:
    """(message, code, param) of an OpenAI-style error body, or the start of whatever came."""
    text = response.text[:300]
    try:
        error = json.loads(response.text)["error"]
        return str(error.get("message") or text), error.get("code"), error.get("param")
    except (ValueError, KeyError, TypeError):
        return text or "(empty body)", None, None


def _served_models(client: httpx.Client, spec: RequestSpec) -> str:
    try:
        answer = client.get(spec.path.rsplit("/v1/", 1)[0] + "/v1/models", headers=spec.headers())
        return ", ".join(repr(m["id"]) for m in answer.json()["data"]) or "none"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return "(could not list them)"


def _explain(response: httpx.Response, spec: RequestSpec, client: httpx.Client) -> ProbeError:
    status = response.status_code
    message, code, param = _error_of(response)
    where = f"{spec.url.rstrip('/')} (POST {spec.path})"
    if status in (401, 403):
        sent = "the key sent" if spec.api_key else "no key (none was given)"
        return ProbeError(
            f"{where} refused the API key: HTTP {status}, {sent}; the server said: {message}. "
            "Pass the server's key with --api-key or the DISTINFER_API_KEY environment variable"
        )
    if status == 404 and (code == "model_not_found" or param == "model"):
        return ProbeError(
            f"model {spec.model!r} is not served at {spec.url}; it serves {_served_models(client, spec)}. "
            "Fix --model (the server's GET /v1/models lists the names)"
        )
    if status in (404, 405):
        return ProbeError(
            f"{where} answered HTTP {status}: no OpenAI API at that path ({message}). Fix --url: give "
            "the server's base URL, e.g. http://HOST:PORT or http://HOST:PORT/APP, without /v1/..."
        )
    if 400 <= status < 500:
        named = f" (field {param!r})" if param else ""
        return ProbeError(
            f"{where} refused a request shaped like the run's (the longest prompt, max_tokens="
            f"{spec.max_tokens}, api {spec.api!r}): HTTP {status}{named}: {message}. Fix the option it "
            "names (--max-tokens, --prompts, --api) or the server's model settings"
        )
    return ProbeError(f"{where} answered HTTP {status} to the probe request: {message}")


def _first_token(response: httpx.Response) -> bool:
    """Read the SSE stream until a data event arrives; False if the stream ends without one."""
    for line in response.iter_lines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            event = json.loads(line[5:])
            if "error" in event:
                raise ProbeError(f"{response.url} streamed an error to the probe request: {event['error']}")
            return True
    return False


def probe(spec: RequestSpec, prompt: str, busy_wait_s: float = BUSY_WAIT_S) -> ProbeResult:
    """Send one request like the run's; raise ProbeError naming the problem and the fix."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request INFO line says nothing new
    timeout = httpx.Timeout(min(spec.timeout_s, 120.0), connect=CONNECT_TIMEOUT_S)
    headers = {**spec.headers(), "X-Request-Id": f"probe-{uuid.uuid4().hex[:12]}"}
    base = spec.url.rstrip("/")
    # spec.path already holds the URL's own path (an app under a route prefix: /APP/v1/...); the
    # client's base is the origin only, or the prefix would be sent twice.
    origin = str(httpx.URL(base).copy_with(path="/", query=None, fragment=None))
    deadline = time.monotonic() + busy_wait_s
    wait = 0.5
    with httpx.Client(base_url=origin, timeout=timeout, trust_env=False) as client:
        while True:
            started = time.monotonic()
            try:
                with client.stream("POST", spec.path, content=spec.body(prompt), headers=headers) as answer:
                    if answer.status_code == 503 and time.monotonic() + wait < deadline:
                        log.info("probe: %s is at capacity (503); trying again in %.1fs", base, wait)
                    elif answer.status_code >= 300:
                        answer.read()
                        raise _explain(answer, spec, client)
                    elif not _first_token(answer):
                        raise ProbeError(
                            f"{base} answered the probe with HTTP {answer.status_code} but no streamed "
                            "token (is it an OpenAI-compatible server? check --url and --api)"
                        )
                    else:
                        return ProbeResult(answer.status_code, time.monotonic() - started)
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                raise ProbeError(
                    f"cannot reach {base}: {err}. Is the server running and listening there? Fix --url "
                    "(the address `distinfer serve` prints, e.g. http://127.0.0.1:8000)"
                ) from None
            except httpx.TimeoutException as err:
                raise ProbeError(
                    f"{base} did not answer the probe request in time ({type(err).__name__}: {err}); "
                    "check --url, or that the server is not stuck (its /health), or raise --timeout"
                ) from None
            except (httpx.HTTPError, ValueError) as err:
                raise ProbeError(f"the probe request to {base} failed: {type(err).__name__}: {err}") from None
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
