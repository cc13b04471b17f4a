"""The app's OpenAPI document: both request bodies, the served models, and every answer we give.

The routes read their bodies themselves (serve/api.py: size limit, content type and OpenAI-shaped
errors come before validation), so FastAPI cannot see them; this module writes into the document
what the routes accept (the pydantic request models of serve/protocol.py, with `model` limited to
the names served and `max_tokens` to each model's context: one variant of the body per context
length, `oneOf` when the models differ) and what they answer: 200 as JSON or as an SSE stream, and
400/401/404/413/415/422/503 in the OpenAI error shape. Clients and fuzzers generated from it (tests/serve/
test_fuzz_api.py) learn the real contract: every body the document allows is answered 200 (an
integral number is an integer, an empty prompt a prompt), except what JSON Schema cannot count, a
prompt's tokens past the model's context (400 `context_length_exceeded`, said in `prompt`'s and
`messages`' descriptions).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from distinfer.serve.protocol import (
    MAX_TOKENS_CEILING,
    UNSUPPORTED_FIELDS,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DeploymentStatus,
    ErrorBody,
    HealthStatus,
    ModelCard,
    ModelList,
)

_REF = "#/components/schemas/{model}"

_ERRORS = {
    "400": "The body is not a JSON object, a field is out of its type or range (`param` names it), "
    "max_tokens is past the model's context, or the prompt's tokens leave no room in it (`code`: "
    "context_length_exceeded).",
    "401": "Missing or wrong API key (`Authorization: Bearer <key>`), when the server asks for one.",
    "404": "The model is not served here (`code`: model_not_found); GET /v1/models lists them.",
    "413": "The body is over {max_body} bytes; refused before it is read or reaches an engine.",
    "415": "The Content-Type is not JSON.",
    "422": "An OpenAI field this server does not implement, with a value that would change the answer "
    "(`code`: unsupported_parameter; `param` names it): " + ", ".join(sorted(UNSUPPORTED_FIELDS)) + ".",
    "503": "Every replica of the model is busy and its queue is full (`code`: overloaded); retry after "
    "the Retry-After header's seconds.",
}

# Before OpenAPI 3.2, a text/event-stream `schema` describes each event.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "description": "A JSON chunk, or `[DONE]` last."}},
}

_POSTS: dict[str, tuple[type[BaseModel], type[BaseModel], str]] = {
    "/v1/completions": (CompletionRequest, CompletionResponse, "Text completion of one prompt."),
    "/v1/chat/completions": (ChatCompletionRequest, ChatCompletionResponse, "Chat completion."),
}


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    """A $ref to the model's schema, its own definitions put into the components."""
    schema = model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


_LIMITED = ("max_tokens", "max_completion_tokens")


def _limit_to(schema: dict[str, Any], names: list[str], limit: int) -> dict[str, Any]:
    """The request schema for the models `names`, whose context is `limit` tokens."""
    schema["properties"]["model"]["enum"] = names
    for field in _LIMITED:
        if field in schema["properties"]:
            for member in schema["properties"][field].get("anyOf", [schema["properties"][field]]):
                if member.get("type") == "integer":
                    member["maximum"] = limit
    return schema


def _per_context(name: str, components: dict[str, Any], cards: list[ModelCard]) -> dict[str, Any]:
    """The body's schema: `name`'s own with each model's max_tokens maximum, one variant per context."""
    names_of: dict[int, list[str]] = defaultdict(list)
    for card in cards:
        names_of[card.max_model_len or MAX_TOKENS_CEILING].append(card.id)
    if len(names_of) <= 1:
        limit, names = next(iter(names_of.items()), (MAX_TOKENS_CEILING, []))
        _limit_to(components[name], names, limit)
        return {"$ref": _REF.format(model=name)}
    variants = []
    for limit, names in sorted(names_of.items()):
        variant = _limit_to(copy.deepcopy(components[name]), names, limit)
        variant["title"] = f"{name} for models of a {limit}-token context"
        components[f"{name}Context{limit}"] = variant
        variants.append({"$ref": _REF.format(model=f"{name}Context{limit}")})
    del components[name]
    return {"oneOf": variants}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
    }


def build_document(app: FastAPI, cards: list[ModelCard], max_body: int, api_key: bool) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    _schema(ErrorBody, components, "serialization")
    key_answers = {"401": _error(_ERRORS["401"])} if api_key else {}
    for path, (request_model, response_model, summary) in _POSTS.items():
        _schema(request_model, components, "validation")
        request_ref = _per_context(request_model.__name__, components, cards)
        operation = doc["paths"][path]["post"]
        operation["summary"] = summary
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": request_ref}},
        }
        answers = {
            "200": {
                "description": "The answer: JSON, or with `stream: true` an SSE stream of chunks ending in "
                "`data: [DONE]`.",
                "content": {
                    "application/json": {"schema": _schema(response_model, components, "serialization")},
                    "text/event-stream": {"schema": _SSE_EVENT},
                },
            },
            **{
                code: _error(text.format(max_body=max_body))
                for code, text in _ERRORS.items()
                if code != "401"
            },
            **key_answers,
        }
        operation["responses"] = dict(sorted(answers.items()))
    models_op = doc["paths"]["/v1/models"]["get"]
    models_op["responses"] = {
        "200": {
            "description": "The models served here.",
            "content": {"application/json": {"schema": _schema(ModelList, components, "serialization")}},
        },
        **key_answers,
    }
    doc["paths"]["/status"]["get"]["responses"] = {
        "200": {
            "description": "Every model's replicas as the orchestrator (Ray Serve) sees them now.",
            "content": {
                "application/json": {"schema": _schema(DeploymentStatus, components, "serialization")}
            },
        },
        "503": _error("The orchestrator did not answer."),
        **key_answers,
    }
    doc["paths"]["/health"]["get"]["responses"] = {
        "200": {
            "description": "Every engine can serve (no API key needed).",
            "content": {"application/json": {"schema": _schema(HealthStatus, components, "serialization")}},
        },
        "503": _error("An engine cannot serve."),
    }
    if api_key:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in (*_POSTS, "/v1/models", "/status"):
            for operation in doc["paths"][path].values():
                operation["security"] = [{"bearer": []}]
    return doc


def describe(
    app: FastAPI, cards: Callable[[], Awaitable[list[ModelCard]]], max_body: int, api_key: bool
) -> None:
    """Serve `build_document`'s document at /openapi.json, made on its first request from `cards`,
    the served models as their running engines report them (their context included)."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        if app.openapi_schema is None:
            document = build_document(app, await cards(), max_body, api_key)
            # Under a route prefix (a Serve application at /<name>), the paths are below it: say so,
            # as FastAPI's own document does, so a client built from the document finds them.
            if root := request.scope.get("root_path"):
                document["servers"] = [{"url": root}]
            app.openapi_schema = document
        return JSONResponse(app.openapi_schema)
