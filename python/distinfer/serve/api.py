"""The OpenAI-compatible FastAPI app, independent of where the models run.

`create_app(backend)` serves `/v1/completions`, `/v1/chat/completions` (SSE with `stream: true`,
ending in `data: [DONE]`; `usage` in the answer, or in a last chunk with
`stream_options.include_usage`), `/v1/models` and `/health`. The backend is either the models in
this process (serve/bare.py) or Ray Serve deployment handles (serve/app.py): the HTTP behaviour,
errors included, is this one module's.

Every bad request gets a 4xx with an OpenAI-style body `{"error": {"message", "type", "param",
"code"}}` whose message names the field (`param`), the value received and the fix; nothing a client
sends can produce a 5xx or stop the server. In the order checked: a body over MAX_BODY_BYTES is
413 before it is read (and before any engine sees it), a non-JSON content type 415, a body that is
not a JSON object (malformed, not UTF-8, nested too deeply) 400, an unsupported OpenAI field with a
value that would change the answer 422, a field out of its type or range 400, an unknown model
404, a prompt past the model's context 400, and no free slot 503. The OpenAPI document
(`/openapi.json`) describes both request bodies, the served model names and every one of these
answers (serve/openapi.py).

Server timing: the final SSE chunk (the usage chunk when `stream_options.include_usage` asks for
one, else the chunk with `finish_reason`) and a whole answer's body carry `server_timing`, a field
OpenAI clients ignore: when this app received the request, when a model replica admitted it, when the
engine started it and when its first token left the engine (results/records.py, ServerTiming). Nothing a
client must parse: headers and every other field are as OpenAI's.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import reprlib
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from distinfer.engines.base import TokenDelta
from distinfer.serve.model_server import Accepted, Event, OpenAIRequest, Rejected, ReplicaTiming
from distinfer.serve.openapi import describe
from distinfer.serve.protocol import (
    MAX_BODY_BYTES,
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeploymentStatus,
    ErrorBody,
    ErrorDetail,
    HealthStatus,
    ModelCard,
    ModelList,
    ModelStatus,
    Usage,
    drop_neutral_unsupported,
    find_unsupported,
    overloaded_body,
)

log = logging.getLogger(__name__)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HOSTNAME = socket.gethostname()


def server_timing(timing: ReplicaTiming, ingress: float) -> dict[str, Any]:
    """The `server_timing` field: the ingress's time and the replica's (results/records.py, ServerTiming)."""
    return {
        "ingress": ingress,
        "replica": timing.replica,
        "engine_start": timing.engine_start,
        "first_token": timing.first_token,
        "engine": timing.engine,
        "engine_version": timing.engine_version,
        "engine_start_source": timing.engine_start_source,
        "ingress_host": HOSTNAME,
        "replica_host": timing.replica_host,
    }


class Overloaded(Exception):
    """Every replica of a model is at its cap and its queue is full."""

    def __init__(self, model: str, retry_after_s: float = 1.0) -> None:
        super().__init__(model)
        self.model = model
        self.retry_after_s = retry_after_s


class Backend(Protocol):
    def model_cards(self) -> list[ModelCard]: ...

    async def running_cards(self) -> list[ModelCard]:
        """The model cards with what only the running engines know: each model's context
        (max_model_len), which bounds max_tokens in the OpenAPI document."""
        ...

    def stream(
        self, model: str, request_id: str, request: OpenAIRequest
    ) -> AsyncGenerator[list[Event], None]:
        """The model server's events in lists of those ready together (serve/coalesce.py); the first
        list starts with the verdict. Raises Overloaded on the first step when no slot is free."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def status(self) -> list[ModelStatus]:
        """Every model's replicas as the orchestrator sees them now."""
        ...


def error_response(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_SHORT = reprlib.Repr()  # a received value, shortened (and safe however deeply it nests)
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist = 2, 60, 60, 4
# Union members pydantic adds to an error's location (`stop.list[str]`): not fields.
_UNION_TAG = re.compile(
    r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-\w+\[.*\]|[A-Z]\w*)$"
)


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if isinstance(p, int) or not _UNION_TAG.match(p)) or "body"


def describe_validation_error(err: ValidationError) -> tuple[str, str | None]:
    parts, first_param = [], None
    for item in err.errors()[:5]:
        where = _field_path(item["loc"])
        first_param = first_param or where
        got = item.get("input")
        shown = "" if item["type"] == "missing" or isinstance(got, dict) else f" (got {_SHORT.repr(got)})"
        parts.append(f"{where}: {item['msg']}{shown}")
    return "invalid request: " + "; ".join(parts), first_param


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (before reading it) one whose Content-Length is over the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked, or a Content-Length that lied
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _unencodable_field(data: dict[str, Any]) -> str | None:
    """The first top-level field holding a lone UTF-16 surrogate (valid JSON, not valid Unicode)."""
    for key, value in data.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return key
    return None


async def _parse(request: Request, model_cls: type[BaseModel], max_body: int) -> BaseModel | JSONResponse:
    try:
        raw = await _read_body(request, max_body)
    except _TooLarge:
        return error_response(
            413,
            f"the body is over {max_body} bytes ({max_body // 1024 // 1024} MiB), the most this server "
            "reads; shorten the prompt",
            param="body",
            code="request_too_large",
            headers={"Connection": "close"},
        )
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        return error_response(
            415,
            f"the body's Content-Type is {kind!r}; send JSON with `Content-Type: application/json`",
            param="body",
            code="unsupported_media_type",
        )
    try:
        data = json.loads(raw)
    except ValueError as err:  # malformed, not UTF-8, or a number past Python's digit limit
        return error_response(400, f"the body is not valid JSON ({err}); send a JSON object", param="body")
    except RecursionError:
        return error_response(
            400, "the body is JSON nested too deeply; send a flat JSON object", param="body"
        )
    if not isinstance(data, dict):
        return error_response(400, f"the body must be a JSON object, got {type(data).__name__}", param="body")
    if (field := _unencodable_field(data)) is not None:
        return error_response(
            400,
            f"{field}: holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape that is not part of a "
            "pair), which is not valid Unicode; send valid UTF-8 text",
            param=field,
        )
    if (unsupported := find_unsupported(data)) is not None:
        field, message = unsupported
        return error_response(422, message, param=field, code="unsupported_parameter")
    try:
        return model_cls.model_validate(drop_neutral_unsupported(data, set(model_cls.model_fields)))
    except ValidationError as err:
        message, param = describe_validation_error(err)
        return error_response(400, message, param=param)
    except RecursionError:
        return error_response(
            400, "the body is JSON nested too deeply; send a flat JSON object", param="body"
        )


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class _Exchange:
    """One request's journey: open the model stream, then answer whole or as SSE."""

    def __init__(self, backend: Backend, known: Callable[[], list[str]]) -> None:
        self.backend = backend
        self.known = known

    async def handle(self, request: Request, body: OpenAIRequest, received: float) -> Response:
        if body.model not in self.known():
            return error_response(
                404,
                f"model {body.model!r} is not served here; known models: {self.known()}",
                param="model",
                code="model_not_found",
            )
        request_id = _request_id(request)
        stream = self.backend.stream(body.model, request_id, body)
        try:
            first, *ready = await stream.__anext__()
        except Overloaded as err:
            await stream.aclose()
            return JSONResponse(
                overloaded_body(err.model).model_dump(),
                status_code=503,
                headers={"Retry-After": str(max(1, round(err.retry_after_s)))},
            )
        if isinstance(first, Rejected):
            await stream.aclose()
            return error_response(first.status, first.message, param=first.param, code=first.code)
        assert isinstance(first, Accepted)
        headers = {"X-Request-Id": request_id}
        if body.stream:
            return StreamingResponse(
                self._sse_stream(stream, body, request_id, first, ready, received),
                media_type="text/event-stream",
                headers={**SSE_HEADERS, **headers},
            )
        return await self._whole(stream, body, request_id, first, ready, headers, received)

    async def _whole(
        self,
        stream: AsyncGenerator[list[Event], None],
        body: OpenAIRequest,
        request_id: str,
        accepted: Accepted,
        ready: list[Event],
        headers: dict[str, str],
        received: float,
    ) -> Response:
        texts: list[str] = []
        completion_tokens, finish = 0, None
        timing: ReplicaTiming | None = None
        async for event in _flat(ready, stream):
            if isinstance(event, ReplicaTiming):
                timing = event
                continue
            texts.append(event.text)
            completion_tokens, finish = event.completion_tokens, event.finish_reason
        usage = Usage.of(accepted.prompt_tokens, completion_tokens)
        text = "".join(texts)
        answer: BaseModel
        if isinstance(body, CompletionRequest):
            answer = CompletionResponse(
                id=f"cmpl-{request_id}",
                model=body.model,
                choices=[CompletionChoice(text=text, finish_reason=finish)],
                usage=usage,
            )
        else:
            answer = ChatCompletionResponse(
                id=f"chatcmpl-{request_id}",
                model=body.model,
                choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=finish)],
                usage=usage,
            )
        payload = answer.model_dump()
        if timing is not None:
            payload["server_timing"] = server_timing(timing, received)
        return JSONResponse(payload, headers=headers)

    async def _sse_stream(
        self,
        stream: AsyncGenerator[list[Event], None],
        body: OpenAIRequest,
        request_id: str,
        accepted: Accepted,
        ready: list[Event],
        received: float,
    ) -> AsyncIterator[bytes]:
        chat = isinstance(body, ChatCompletionRequest)
        base: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{request_id}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.model,
        }
        completion_tokens, first = 0, True
        timing: ReplicaTiming | None = None
        try:
            # One body write per list of deltas that arrived together: each delta is still its own
            # SSE event, and nothing waits for a list to fill (per-token timing is kept).
            async for batch in _batches(ready, stream):
                out = bytearray()
                for event in batch:
                    if isinstance(event, ReplicaTiming):  # comes just before the last delta
                        timing = event
                        continue
                    assert isinstance(event, TokenDelta)
                    completion_tokens = event.completion_tokens
                    chunk = {**base, "choices": [_stream_choice(event, chat, first)]}
                    if timing is not None and event.finish_reason is not None and not body.include_usage:
                        chunk["server_timing"] = server_timing(timing, received)
                    out += _sse(chunk)
                    first = False
                if out:
                    yield bytes(out)
            if body.include_usage:
                usage = Usage.of(accepted.prompt_tokens, completion_tokens).model_dump()
                chunk = {**base, "choices": [], "usage": usage}
                if timing is not None:
                    chunk["server_timing"] = server_timing(timing, received)
                yield _sse(chunk)
            yield b"data: [DONE]\n\n"
        finally:
            await stream.aclose()


def _stream_choice(event: TokenDelta, chat: bool, first: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": event.finish_reason, "logprobs": None}
    if chat:
        choice["delta"] = {"role": "assistant", "content": event.text} if first else {"content": event.text}
    else:
        choice["text"] = event.text
    return choice


async def _batches(
    ready: list[Event], stream: AsyncGenerator[list[Event], None]
) -> AsyncGenerator[list[Event], None]:
    """The events that came with the verdict, then the stream's lists."""
    if ready:
        yield ready
    async for batch in stream:
        yield batch


async def _flat(
    ready: list[Event], stream: AsyncGenerator[list[Event], None]
) -> AsyncGenerator[TokenDelta | ReplicaTiming, None]:
    async for batch in _batches(ready, stream):
        for event in batch:
            assert isinstance(event, TokenDelta | ReplicaTiming)
            yield event


def create_app(
    backend: Backend, api_key: str | None = None, lifespan: Any = None, max_body: int = MAX_BODY_BYTES
) -> FastAPI:
    app = FastAPI(
        title="distinfer",
        description="OpenAI-compatible LLM serving",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by openapi.describe, from the running engines' model cards
        lifespan=lifespan,
    )

    def known() -> list[str]:
        return [card.id for card in backend.model_cards()]

    exchange = _Exchange(backend, known)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own answers (an unknown path, a method a path does not take) in the OpenAI shape,
        # as OpenAI answers them ("Invalid URL"); a 405 keeps its Allow header.
        headers = dict(exc.headers or {})
        message = f"{exc.detail}: {request.method} {request.url.path}"
        if exc.status_code == 405:
            message += f"; this path takes {headers.get('allow') or headers.get('Allow', '')}"
        code = "unknown_url" if exc.status_code == 404 else None
        return error_response(exc.status_code, message, code=code, headers=headers or None)

    expected_authorization = f"Bearer {api_key}".encode() if api_key else b""

    def refuse_without_key(request: Request) -> JSONResponse | None:
        # A plain check, not middleware: BaseHTTPMiddleware would wrap every streamed chunk. The header's
        # bytes as sent (Starlette decodes them as latin-1) against the key's, in constant time: how
        # long a wrong key takes to refuse says nothing about how much of it was right.
        sent = request.headers.get("authorization", "").encode("latin-1")
        if api_key and not hmac.compare_digest(sent, expected_authorization):
            return error_response(
                401,
                "missing or wrong API key; send the header `Authorization: Bearer <key>`",
                kind="authentication_error",
                code="invalid_api_key",
            )
        return None

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            status = HealthStatus(**(await backend.health()))
        except Exception as err:  # an engine that cannot serve: say so, as a load balancer expects
            log.warning("health check failed: %r", err)
            return error_response(503, f"not healthy: {err}", kind="unhealthy", code="unhealthy")
        return JSONResponse(status.model_dump())

    @app.get("/status")
    async def deployment_status(request: Request) -> JSONResponse:
        if refused := refuse_without_key(request):
            return refused
        try:
            models = await backend.status()
        except Exception as err:  # the orchestrator did not answer: say so, do not guess
            log.warning("deployment status failed: %r", err)
            message = f"deployment status unknown: {err}"
            return error_response(503, message, kind="unhealthy", code="unhealthy")
        return JSONResponse(DeploymentStatus(time=time.time(), models=models).model_dump())

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        if refused := refuse_without_key(request):
            return refused
        return JSONResponse(ModelList(data=await backend.running_cards()).model_dump())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        received = time.time()  # the ingress's part of the server timing: before anything is read
        if refused := refuse_without_key(request):
            return refused
        body = await _parse(request, CompletionRequest, max_body)
        if isinstance(body, JSONResponse):
            return body
        return await exchange.handle(request, body, received)  # type: ignore[arg-type]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        received = time.time()
        if refused := refuse_without_key(request):
            return refused
        body = await _parse(request, ChatCompletionRequest, max_body)
        if isinstance(body, JSONResponse):
            return body
        return await exchange.handle(request, body, received)  # type: ignore[arg-type]

    describe(app, backend.running_cards, max_body=max_body, api_key=bool(api_key))
    return app
