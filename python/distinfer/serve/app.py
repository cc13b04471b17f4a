"""The Ray Serve application: one deployment per model, and where HTTP ends (`ingress.layout`).

Two layouts (config.ModelsFile.direct; `auto`, the default, picks `direct` for one model):

- `direct`: the model's own replicas serve the OpenAI API (`DirectModel`: the FastAPI app of
  serve/api.py over the engine in the replica's process, the bare server's admission gate sized for
  one replica). A token crosses Serve's proxy -> replica, one actor hop; behind HAProxy (Serve's
  direct ingress, `distinfer serve --haproxy`), none.
- `router`: an `OpenAIIngress` deployment routes by `model` to one `ModelDeployment` per model:
  proxy -> ingress replica -> model replica, two actor hops a token; any number of models at one URL.
  Each hop costs Ray Serve a few tenths of a ms of CPU per streamed item (benchmarks/serve_overhead.md).

`build_app(args)` is the import path a Serve config names (`distinfer.serve.app:build_app`); its
args are the models file itself, validated on the first line, so `serve deploy`, a RayService and
`distinfer serve` all run the same checked description.

Admission control, router layout: Ray Serve's own. Each model deployment has `max_ongoing_requests`
(requests in flight per replica, the guide's "batch size per replica") and `max_queued_requests`
(requests the ingress's handle lets wait once all replicas are full). Past that the handle raises
BackPressureError at once, and the ingress answers 503 with Retry-After: no unbounded queue. Direct
layout: the replica's own gate admits `max_ongoing_requests`, lets `max_queued_requests` wait in
that replica and answers the same 503 past that (config.direct_deployment_options).

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
merged delta. In the direct layout the events reach the SSE writer in-process, as on the bare
server. Serve's direct ingress behind HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1) adds no batching either:
the replica's uvicorn writes each body chunk, HAProxy forwards it at once (`http-no-delay`).
RAY_SERVE_THROUGHPUT_OPTIMIZED stays off (benchmarks/serve_overhead.md). A vLLM replica runs its code on
Serve's own event loop (RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 in its runtime_env,
config.VLLM_REPLICA_ENV): vLLM computes in its own processes, and the hop between threads per item cost
it up to a tenth of its output tokens/s in a paired run on the 2-core CPU machine (benchmarks/README.md);
the hf engine, which computes in the replica, keeps the second thread.
"""

from __future__ import annotations

import asyncio
import collections
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
    ModelsFile,
    ModelSpec,
    TelemetryOptions,
    app_args,
    deployment_name,
    direct_deployment_options,
    ingress_deployment_options,
    model_deployment_options,
    parse_models,
)
from distinfer.engines import build_engine
from distinfer.engines.base import Engine
from distinfer.serve.api import Overloaded, create_app
from distinfer.serve.bare import LocalBackend
from distinfer.serve.coalesce import coalesce_ready, whole_answer
from distinfer.serve.engine_metrics import EngineMetrics
from distinfer.serve.model_server import Event, ModelServer, OpenAIRequest
from distinfer.serve.protocol import ModelCard, ModelStatus
from distinfer.serve.settings import resolve_api_key

log = logging.getLogger(__name__)

_SPEC = TypeAdapter(ModelSpec)
# How long the ingress waits for the model replicas to say their context (they are up once the
# application is RUNNING).
_ASK_REPLICAS_S = 60.0


def engine_metrics(name: str, engine: Engine, telemetry: TelemetryOptions) -> EngineMetrics | None:
    """vLLM's metric names for a replica's engine that exports none itself (unless turned off)."""
    if telemetry.engine_metrics and not engine.exports_own_metrics:
        return EngineMetrics(name, engine)
    return None


class ModelDeployment:
    """One replica of one model: its engine, the model server around it and the engine's metrics."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self, spec: dict[str, Any], telemetry: dict[str, Any] | None = None
    ) -> None:
        model = _SPEC.validate_python(spec)
        options = TelemetryOptions.model_validate(telemetry or {})
        engine = build_engine(model)
        self.metrics = engine_metrics(model.name, engine, options)
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

    async def max_model_len(self) -> int:
        """The running engine's context (a models file may leave it to the model)."""
        return self.server.engine.max_model_len

    async def stats(self, count_objects: bool = False) -> dict[str, Any]:
        """This replica's process and its engine's activity (tests: the disconnect storm).

        `count_objects` adds the Python objects alive after a full collection: a leak of per-request
        state shows there long before the allocator hands memory back or asks for more.
        """
        return replica_stats(self.server.engine, count_objects)

    async def __del__(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        await self.server.engine.shutdown()


async def serve_statuses(cards: list[ModelCard], app_name: str) -> list[ModelStatus]:
    """Ray Serve's view (serve.status()) of each model's deployment in application `app_name`."""
    overview = await asyncio.to_thread(serve.status)
    application = overview.applications.get(app_name)
    deployments = application.deployments if application is not None else {}
    statuses = []
    for card in cards:
        found = deployments.get(deployment_name(card.id))
        if found is None:
            statuses.append(ModelStatus(name=card.id, status="NOT_FOUND", running_replicas=0, message=""))
            continue
        states = {str(getattr(k, "value", k)): int(v) for k, v in found.replica_states.items()}
        statuses.append(
            ModelStatus(
                name=card.id,
                status=str(getattr(found.status, "value", found.status)),
                running_replicas=states.get("RUNNING", 0),
                replica_states=states,
                message=found.message or "",
            )
        )
    return statuses


class ServeBackend:
    """The ingress's view of the models: one streaming deployment handle each."""

    def __init__(self, cards: list[ModelCard], handles: dict[str, DeploymentHandle], app_name: str) -> None:
        self._cards = cards
        self._app_name = app_name
        self._plain = handles
        self._handles = {name: h.options(stream=True) for name, h in handles.items()}
        self._running: list[ModelCard] | None = None

    def model_cards(self) -> list[ModelCard]:
        return self._cards

    async def running_cards(self) -> list[ModelCard]:
        """The cards with each model's context as its replica's engine reports it (asked once; a
        models file may leave max_model_len to the model, and hf caps it at the model's own)."""
        if self._running is None:
            lengths = await asyncio.wait_for(
                asyncio.gather(*(self._plain[card.id].max_model_len.remote() for card in self._cards)),
                timeout=_ASK_REPLICAS_S,
            )
            self._running = [
                card.model_copy(update={"max_model_len": length})
                for card, length in zip(self._cards, lengths, strict=True)
            ]
        return self._running

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

    async def status(self) -> list[ModelStatus]:
        """Ray Serve's view of every model deployment of this application (serve.status())."""
        return await serve_statuses(self._cards, self._app_name)


@serve.ingress()
class OpenAIIngress:
    """The HTTP entry: the FastAPI app of serve/api.py over the model deployments' handles."""

    def __init__(self, models_args: dict[str, Any], handles: dict[str, DeploymentHandle]) -> None:
        models = parse_models(models_args, "serve application args")
        cards = [
            ModelCard(id=m.name, engine=models.engine_label(m), max_model_len=m.max_model_len)
            for m in models.models
        ]
        self._backend = ServeBackend(cards, handles, serve.get_replica_context().app_name)
        self._api_key = resolve_api_key(models)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._backend, api_key=self._api_key)


class DirectBackend(LocalBackend):
    """Layout `direct`: the one model in this replica's process, Serve's view for /status, and its
    engine's metrics as a router-layout model replica exports them."""

    def __init__(self, models: ModelsFile, app_name: str) -> None:
        super().__init__(models, one_replica=True)
        self._app_name = app_name
        self._metrics: list[EngineMetrics] = []
        for name, server in self._servers.items():
            metrics = engine_metrics(name, server.engine, models.telemetry)
            if metrics is not None:
                server.on_finished = metrics.finished
                self._metrics.append(metrics)

    async def start(self) -> None:
        await super().start()
        for metrics in self._metrics:
            metrics.start()

    async def stop(self) -> None:
        for metrics in self._metrics:
            await metrics.stop()
        await super().stop()

    async def status(self) -> list[ModelStatus]:
        return await serve_statuses(self.model_cards(), self._app_name)


@serve.ingress()
class DirectModel:
    """Layout `direct`: one replica of the one model, serving the OpenAI API itself.

    Serve's proxy hands the HTTP request straight to this replica (one actor hop, not two): the
    FastAPI app of serve/api.py runs over the engine in this process, with the bare server's
    admission gate sized for one replica (config.direct_deployment_options).
    """

    async def __init__(self, models_args: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        models = parse_models(models_args, "serve application args")
        self._api_key = resolve_api_key(models)
        self._backend = DirectBackend(models, serve.get_replica_context().app_name)
        await self._backend.start()
        (self._name,) = (m.name for m in models.models)
        log.info("model %s ready, serving HTTP itself (%s engine)", self._name, models.models[0].engine)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._backend, api_key=self._api_key)

    async def check_health(self) -> None:
        await self._backend.health()

    async def stats(self, count_objects: bool = False) -> dict[str, Any]:
        """This replica's process and its engine's activity (as ModelDeployment.stats), and what its
        admission gate let in and refused since it started."""
        gate = self._backend.gate(self._name)
        stats = replica_stats(self._backend.server(self._name).engine, count_objects)
        return stats | {"gate": {"admitted": gate.admitted, "refused": gate.refused}}

    async def __del__(self) -> None:
        await self._backend.stop()


def replica_stats(engine: Any, count_objects: bool) -> dict[str, Any]:
    """A replica's process id and its engine's activity; `count_objects` adds the Python objects alive
    after a full collection."""
    stats = engine.stats()
    out: dict[str, Any] = {"pid": os.getpid(), **(dataclasses.asdict(stats) if stats else {})}
    out["engine_info"] = dataclasses.asdict(engine.info())
    if count_objects:
        gc.collect()
        alive = gc.get_objects()
        out["python_objects"] = len(alive)
        out["python_object_types"] = dict(collections.Counter(type(o).__qualname__ for o in alive))
    return out


def _deployment(cls: type) -> serve.Deployment:
    return cast(serve.Deployment, serve.deployment(cls))


def build_app(args: dict[str, Any]) -> serve.Application:
    """The Serve application for a models file (given as a dict: the Serve config's `args`)."""
    models = parse_models(args, "serve application args")
    if models.direct:
        return _deployment(DirectModel).options(**direct_deployment_options(models)).bind(app_args(models))
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
