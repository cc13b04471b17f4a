"""The Ray Serve application: one deployment per model, and an OpenAI ingress routing by `model`.

`build_app(args)` is the import path a Serve config names (`distinfer.serve.app:build_app`); its
args are the models file itself, validated on the first line, so `serve deploy`, a RayService and
`distinfer serve` all run the same checked description.

Admission control is Ray Serve's own: each model deployment has `max_ongoing_requests` (requests
in flight per replica, the guide's "batch size per replica") and `max_queued_requests` (requests
the ingress's handle lets wait once all replicas are full). Past that the handle raises
BackPressureError at once, and the ingress answers 503 with Retry-After: no unbounded queue.

Streaming and Serve's chunk batching (what we set and why): core Ray Serve 2.60 does not batch
streamed chunks on a timer. A replica's ASGI messages go through a `MessageQueue`; the replica
forwards whatever is queued each time its loop wakes (`fetch_messages_from_queue` in
ray/serve/_private/http_util.py) and the proxy writes each batch out as it arrives, so a token the
engine yields reaches the client within one event-loop turn. The timer-based batching lives in
Ray Serve LLM (`experimental_configs.stream_batching_interval_ms`, default
`RAYLLM_MODEL_RESPONSE_BATCH_TIMEOUT_MS=50`), which coalesces tokens into 50 ms chunks and would
blur per-token latency; we do not use Serve LLM's server. Between our model replica and the
ingress, each streamed item is a Ray object, so the replica sends lists of events with a zero
interval (serve/coalesce.py): the first waiting token goes out at once with whatever else is
already queued, never waiting for more; a non-streamed request gets its verdict and then one
merged delta. We also keep the defaults RAY_SERVE_ENABLE_HA_PROXY=0 (no extra proxy hop) and
RAY_SERVE_THROUGHPUT_OPTIMIZED=0 (it moves user code onto the replica's main loop and buffers
request-path logs; throughput settings, not needed for per-token timing).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from collections.abc import AsyncGenerator
from typing import Any, cast

from fastapi import FastAPI
from pydantic import TypeAdapter
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from distinfer.config import (
    ModelSpec,
    TelemetryOptions,
    app_args,
    ingress_deployment_options,
    model_deployment_options,
    parse_models,
)
from distinfer.engines import build_engine
from distinfer.serve.api import Overloaded, create_app
from distinfer.serve.coalesce import coalesce_ready, whole_answer
from distinfer.serve.engine_metrics import EngineMetrics
from distinfer.serve.model_server import Event, ModelServer, OpenAIRequest
from distinfer.serve.protocol import ModelCard
from distinfer.serve.settings import resolve_api_key

log = logging.getLogger(__name__)

_SPEC = TypeAdapter(ModelSpec)


class ModelDeployment:
    """One replica of one model: its engine, the model server around it and the engine's metrics."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self, spec: dict[str, Any], telemetry: dict[str, Any] | None = None
    ) -> None:
        model = _SPEC.validate_python(spec)
        options = TelemetryOptions.model_validate(telemetry or {})
        engine = build_engine(model)
        self.metrics: EngineMetrics | None = None
        if options.engine_metrics and not engine.exports_own_metrics:
            self.metrics = EngineMetrics(model.name, engine)
        self.server = ModelServer(
            model.name,
            engine,
            server_timing=options.server_timing,
            on_finished=self.metrics.finished if self.metrics else None,
        )
        await self.server.engine.start()
        if self.metrics is not None:
            self.metrics.start()
        log.info("model %s ready (%s engine)", model.name, model.engine)

    async def generate(self, request_id: str, request: OpenAIRequest) -> AsyncGenerator[list[Event], None]:
        # Lists of events: see serve/coalesce.py. Cancelling this generator (client gone) closes
        # ModelServer.stream, whose cleanup aborts the request in the engine.
        events = self.server.stream(request_id, request)
        batches = coalesce_ready(events) if request.stream else whole_answer(events)
        async for batch in batches:
            yield batch

    async def check_health(self) -> None:
        await self.server.engine.check_health()

    async def stats(self, count_objects: bool = False) -> dict[str, Any]:
        """This replica's process and its engine's activity (tests: the disconnect storm).

        `count_objects` adds the Python objects alive after a full collection: a leak of per-request
        state shows there long before the allocator hands memory back or asks for more.
        """
        stats = self.server.engine.stats()
        out: dict[str, Any] = {"pid": os.getpid(), **(dataclasses.asdict(stats) if stats else {})}
        if count_objects:
            gc.collect()
            out["python_objects"] = len(gc.get_objects())
        return out

    async def __del__(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        await self.server.engine.shutdown()


class ServeBackend:
    """The ingress's view of the models: one streaming deployment handle each."""

    def __init__(self, cards: list[ModelCard], handles: dict[str, DeploymentHandle]) -> None:
        self._cards = cards
        self._handles = {name: h.options(stream=True) for name, h in handles.items()}

    def model_cards(self) -> list[ModelCard]:
        return self._cards

    async def stream(
        self, model: str, request_id: str, request: OpenAIRequest
    ) -> AsyncGenerator[list[Event], None]:
        response: DeploymentResponseGenerator | None = None
        finished = False
        try:
            # The handle may refuse at once (queue full) or on the first item: both are backpressure.
            call = self._handles[model].generate.remote(request_id, request)
            response = cast(DeploymentResponseGenerator, call)
            async for batch in response:
                yield batch
            finished = True
        except BackPressureError as err:
            # Never assigned to a replica: nothing to cancel. (Ray Serve's cancel() re-raises the
            # stored BackPressureError, which would replace our 503 with Serve's plain-text one.)
            finished = True
            raise Overloaded(model, err.retry_after_s or 1.0) from None
        finally:
            if not finished and response is not None:
                # Client gone: cancel the replica call so the engine aborts and frees the slot.
                # Best effort: cancel() may re-raise the call's own failure, already handled above.
                try:
                    response.cancel()
                except Exception as err:
                    log.debug("cancel of %s after it ended: %r", request_id, err)

    async def health(self) -> dict[str, Any]:
        return {"models": [card.id for card in self._cards]}


@serve.ingress()
class OpenAIIngress:
    """The HTTP entry: the FastAPI app of serve/api.py over the model deployments' handles."""

    def __init__(self, models_args: dict[str, Any], handles: dict[str, DeploymentHandle]) -> None:
        models = parse_models(models_args, "serve application args")
        cards = [
            ModelCard(id=m.name, engine=models.engine_label(m), max_model_len=m.max_model_len)
            for m in models.models
        ]
        self._backend = ServeBackend(cards, handles)
        self._api_key = resolve_api_key(models)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._backend, api_key=self._api_key)


def _deployment(cls: type) -> serve.Deployment:
    return cast(serve.Deployment, serve.deployment(cls))


def build_app(args: dict[str, Any]) -> serve.Application:
    """The Serve application for a models file (given as a dict: the Serve config's `args`)."""
    models = parse_models(args, "serve application args")
    # Deployment options (replicas, cap, GPU placement) always come from the entry itself; a
    # rehearsal's stand-in only swaps the engine the replica runs.
    handles = {
        spec.name: _deployment(ModelDeployment)
        .options(**model_deployment_options(spec))
        .bind(models.engine_spec(spec).model_dump(mode="json"), models.telemetry.model_dump())
        for spec in models.models
    }
    ingress = _deployment(OpenAIIngress).options(**ingress_deployment_options(models))
    return ingress.bind(app_args(models), handles)
