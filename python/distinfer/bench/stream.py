"""Send one streaming OpenAI request and time what arrives, chunk by chunk.

The body is read with geventhttpclient's `readline`, which returns as soon as a line is in the
socket buffer. Reading with a fixed block size instead (`iter_content(1024)`, `read(4096)`) waits
until that many bytes have arrived, which holds the first token back by several tokens' worth of
time: the mistake the guide's readers would otherwise repeat. Only gevent-cooperative code here;
it runs inside a Locust worker process.

After `data: [DONE]` the rest of the response (the chunked body's terminator, which the server
sends in a write of its own) is read too: geventhttpclient closes a connection whose response was
not read to its end, and every next request would then pay for a new TCP connection in its TTFT.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

from distinfer.results.scenario import ScenarioSpec


@dataclass
class RequestSpec:
    """The constant part of every request a run sends."""

    url: str
    model: str
    api: str  # "chat" | "completions"
    max_tokens: int
    temperature: float
    ignore_eos: bool
    api_key: str | None = None
    timeout_s: float = 600.0

    @classmethod
    def of(cls, scenario: ScenarioSpec, api_key: str | None) -> RequestSpec:
        """What every request of `scenario` carries: its URL, model, API and sampling (each field but
        the key is the scenario's own of that name), and the key."""
        own = {f.name: getattr(scenario, f.name) for f in fields(cls) if f.name != "api_key"}
        return cls(api_key=api_key, **own)

    @property
    def path(self) -> str:
        base = URL(self.url).path.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        return base + ("/v1/chat/completions" if self.api == "chat" else "/v1/completions")

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",  # a compressed stream could not be timed per chunk
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(
        self, prompt: str, max_tokens: int | None = None, messages: list[dict[str, str]] | None = None
    ) -> bytes:
        """The request's JSON; a trace row or a session turn gives its own `max_tokens` (and a session its
        whole history as `messages`)."""
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            payload["ignore_eos"] = True  # vLLM's extension: exactly max_tokens, as the guide measured
        if messages is not None:
            payload["messages"] = messages
        elif self.api == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        return json.dumps(payload).encode()


def make_client(spec: RequestSpec, connections: int) -> HTTPClient:
    return HTTPClient.from_url(
        spec.url,
        concurrency=connections,
        connection_timeout=min(30.0, spec.timeout_s),
        network_timeout=spec.timeout_s,
        headers={"Connection": "keep-alive"},
    )


class StreamError(Exception):
    def __init__(self, kind: str, message: str, status: int = 0, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.get("retry-after"))
    except (TypeError, ValueError):
        return None


@dataclass
class StreamResult:
    """Times are taken from `time.perf_counter()`; the caller anchors them to the wall clock."""

    status: int = 0
    first_byte: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    chunks: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done: bool = False
    done_at: float | None = None  # when `data: [DONE]` arrived: the request's end, whatever follows
    server_timing: dict[str, Any] | None = None  # the final chunk's `server_timing`, when sent
    text: list[str] | None = None  # the answer's text, kept only when a list is given (sessions)


def _text_of(event: dict[str, Any]) -> str:
    choices = event.get("choices") or ()
    if not choices:
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    if delta is not None:
        return delta.get("content") or ""
    return choice.get("text") or ""


def stream_request(
    client: HTTPClient,
    spec: RequestSpec,
    prompt: str,
    result: StreamResult,
    request_id: str,
    payload: bytes | None = None,
) -> None:
    """Fill `result` as the stream arrives (so a caller that is interrupted still has the partial).
    `payload`: the request's own JSON (a trace row's, a session turn's) instead of `spec.body(prompt)`."""
    clock = time.perf_counter
    headers = spec.headers()
    headers["X-Request-Id"] = request_id
    response = client.request("POST", spec.path, body=payload or spec.body(prompt), headers=headers)
    try:
        result.status = response.status_code
        if result.status >= 300:
            body = response.read()[:300].decode(errors="replace")
            raise StreamError("http", body, result.status, _retry_after(response))
        while True:
            line = response.readline(b"\n")
            now = clock()
            if not line:
                break
            if result.first_byte is None:
                result.first_byte = now
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            data = line[5:].strip()
            if data == b"[DONE]":
                result.done, result.done_at = True, now
                _read_to_end(response)
                break
            _handle_event(json.loads(data), now, result)
    finally:
        response.release()
    if not result.done or result.completion_tokens is None:
        missing = "[DONE]" if not result.done else "usage"
        raise StreamError("incomplete", f"stream ended without {missing}", result.status)


# How long the end of a response may take after [DONE] before its connection is given up.
END_OF_BODY_TIMEOUT_S = 5.0


def _read_to_end(response: Any) -> None:
    """Consume what follows [DONE] so the keep-alive connection can carry the next request."""
    with gevent.Timeout(END_OF_BODY_TIMEOUT_S, False):
        while response.readline(b"\n"):
            pass


def _handle_event(event: dict[str, Any], now: float, result: StreamResult) -> None:
    if "error" in event:
        raise StreamError("server_error", json.dumps(event["error"])[:300], result.status)
    text = _text_of(event)
    if text:
        if result.text is not None:
            result.text.append(text)
        if result.last_token is not None:
            result.gaps_ms.append(round((now - result.last_token) * 1000.0, 3))
        else:
            result.first_token = now
        result.last_token = now
        result.chunks += 1
    usage = event.get("usage")
    if usage:
        result.prompt_tokens = usage.get("prompt_tokens")
        result.completion_tokens = usage.get("completion_tokens")
    timing = event.get("server_timing")
    if isinstance(timing, dict):
        result.server_timing = timing
