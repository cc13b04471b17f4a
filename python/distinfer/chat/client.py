"""The chat page's only way to the app: its OpenAI API over HTTP, like any other client.

`list_models` reads `/v1/models`; `stream_chat` posts to `/v1/chat/completions` with
`stream: true` and yields the text of each SSE chunk as it arrives. Every failure becomes an
`ApiError` whose message is meant for a person reading the page: the status, the app's own
OpenAI-style error message, and what to do (an overloaded app, 503, says to retry and when).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

# Seconds without a byte before a request is given up (a cold hf model can take a while to start).
READ_TIMEOUT_S = 120.0


class ApiError(Exception):
    """Something the page shows instead of an answer; str() is the sentence to show."""


class ChatRequest(BaseModel):
    """What the page sends: the conversation so far and the sampling settings."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[dict[str, str]] = Field(min_length=1)
    temperature: float = Field(ge=0.0, le=2.0)
    max_tokens: int = Field(ge=1)


@dataclass(frozen=True)
class ApiTarget:
    """The app's base URL (with or without the trailing /v1) and its API key, if it asks for one."""

    url: str
    api_key: str | None = None

    @property
    def v1(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/v1") else f"{base}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def list_models(target: ApiTarget, timeout_s: float = 10.0) -> list[str]:
    """The ids `/v1/models` lists, in its order."""
    try:
        response = httpx.get(f"{target.v1}/models", headers=target.headers, timeout=timeout_s)
    except httpx.HTTPError as err:
        raise ApiError(_unreachable(target, err)) from None
    if response.status_code != 200:
        raise ApiError(describe_failure(response.status_code, response.text, response.headers))
    try:
        return [str(card["id"]) for card in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise ApiError(
            f"{target.v1}/models did not answer an OpenAI model list (got {response.text[:200]!r}); "
            "check that --url points at the distinfer app"
        ) from None


def stream_chat(target: ApiTarget, request: ChatRequest) -> Iterator[str]:
    """The answer's text pieces, each as soon as its SSE chunk arrives."""
    body = {**request.model_dump(), "stream": True}
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("POST", f"{target.v1}/chat/completions", json=body, headers=target.headers) as r,
        ):
            if r.status_code != 200:
                raise ApiError(describe_failure(r.status_code, r.read().decode(errors="replace"), r.headers))
            yield from _deltas(r.iter_lines())
    except httpx.HTTPError as err:
        raise ApiError(_unreachable(target, err)) from None


def _deltas(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            shown = data[:120]
            raise ApiError(f"the app sent a chunk that is not JSON ({shown!r}); is --url the app?") from None
        if "error" in chunk:
            raise ApiError(f"the app stopped the answer: {_error_message(chunk) or data[:200]}")
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield text
    raise ApiError("the answer ended without `data: [DONE]`: the connection to the app was cut; try again")


def describe_failure(status: int, body: str, headers: httpx.Headers | dict[str, str]) -> str:
    """One sentence for a non-200 answer: what happened, the app's own message, what to do."""
    try:
        detail = _error_message(json.loads(body))
    except ValueError:
        detail = None
    detail = detail or body.strip()[:300] or "no message"
    if status == 503:
        retry = headers.get("retry-after") or headers.get("Retry-After")
        wait = f"Try again in {retry} s." if retry else "Try again in a moment."
        return f"The app is overloaded (503): {detail}. {wait}"
    if status == 401:
        return f"The app refused the API key (401): {detail}. Start the page with --api-key-file."
    if status == 404:
        return f"Not found (404): {detail}. Pick another model or press Refresh models."
    if 400 <= status < 500:
        return f"The app rejected the request ({status}): {detail}"
    return f"The app failed ({status}): {detail}. See the app's logs; try again."


def _error_message(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
        return str(message) if message else None
    return None


def _unreachable(target: ApiTarget, err: httpx.HTTPError) -> str:
    log.debug("request to %s failed: %r", target.v1, err)
    return (
        f"Cannot reach the app at {target.v1} ({type(err).__name__}: {err}). "
        "Is it running? Check the URL given to `distinfer chat --url`."
    )
