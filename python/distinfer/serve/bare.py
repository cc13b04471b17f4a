"""The lightest server: the same FastAPI OpenAI app with the engines in this process, no Ray.

Used to calibrate the load generator and as the baseline of benchmarks/serve_overhead.py. Admission
control mirrors Ray Serve's: `max_ongoing_requests * replicas` in flight per model, at most
`max_queued_requests` waiting, 503 beyond that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from distinfer.config import ModelsFile
from distinfer.engines import build_engine
from distinfer.serve.api import Overloaded, create_app
from distinfer.serve.coalesce import coalesce_ready, whole_answer
from distinfer.serve.model_server import Event, ModelServer, OpenAIRequest
from distinfer.serve.protocol import ModelCard, ModelStatus
from distinfer.serve.settings import resolve_api_key

log = logging.getLogger(__name__)


class AdmissionGate:
    """At most `ongoing` holders, at most `queued` waiters; anyone past that is refused at once."""

    def __init__(self, name: str, ongoing: int, queued: int) -> None:
        self.name = name
        self._slots = asyncio.Semaphore(ongoing)
        self._queued_cap = queued
        self._waiting = 0
        # Requests that reached this gate, since start: let in, and refused (the replica's own count,
        # beside the edge's in front of it).
        self.admitted = 0
        self.refused = 0

    async def enter(self) -> None:
        if self._slots.locked():
            if self._waiting >= self._queued_cap:
                self.refused += 1
                raise Overloaded(self.name)
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        self.admitted += 1

    def leave(self) -> None:
        self._slots.release()


class LocalBackend:
    def __init__(self, models: ModelsFile, one_replica: bool = False) -> None:
        """`one_replica`: this process is one of a model's replicas (the Serve `direct` layout), so
        its gate admits one replica's cap; otherwise it stands for all of them (the bare server)."""
        self._servers: dict[str, ModelServer] = {}
        self._gates: dict[str, AdmissionGate] = {}
        for spec in models.models:
            self._servers[spec.name] = ModelServer(
                spec.name,
                build_engine(models.engine_spec(spec)),
                server_timing=models.telemetry.server_timing,
            )
            cap = spec.max_ongoing_requests * (1 if one_replica else spec.replicas)
            self._gates[spec.name] = AdmissionGate(spec.name, cap, spec.max_queued_requests)
        self._engines_of = {spec.name: models.engine_label(spec) for spec in models.models}

    def server(self, model: str) -> ModelServer:
        return self._servers[model]

    def gate(self, model: str) -> AdmissionGate:
        return self._gates[model]

    async def start(self) -> None:
        for server in self._servers.values():
            await server.engine.start()

    async def stop(self) -> None:
        for server in self._servers.values():
            await server.engine.shutdown()

    def model_cards(self) -> list[ModelCard]:
        return [
            ModelCard(id=name, engine=self._engines_of[name], max_model_len=server.engine.max_model_len)
            for name, server in self._servers.items()
        ]

    async def running_cards(self) -> list[ModelCard]:
        return self.model_cards()  # the engines run in this process: their context is known

    async def stream(
        self, model: str, request_id: str, request: OpenAIRequest
    ) -> AsyncGenerator[list[Event], None]:
        gate = self._gates[model]
        await gate.enter()
        try:
            # The same event lists as a Serve model replica sends (serve/coalesce.py), so both paths
            # write the same HTTP chunks.
            events = self._servers[model].stream(request_id, request)
            batches = coalesce_ready(events) if request.stream else whole_answer(events)
            async for batch in batches:
                yield batch
        finally:
            gate.leave()

    async def health(self) -> dict[str, Any]:
        for server in self._servers.values():
            await server.engine.check_health()
        return {"models": list(self._servers)}

    async def status(self) -> list[ModelStatus]:
        """One engine per model, in this process: running as long as it is healthy."""
        statuses = []
        for name, server in self._servers.items():
            try:
                await server.engine.check_health()
            except Exception as err:  # say it, as Serve would for a replica that failed its check
                statuses.append(
                    ModelStatus(name=name, status="UNHEALTHY", running_replicas=0, message=str(err))
                )
                continue
            statuses.append(
                ModelStatus(name=name, status="HEALTHY", running_replicas=1, replica_states={"RUNNING": 1})
            )
        return statuses


def run_bare(models: ModelsFile, host: str, port: int) -> None:
    """Serve until Ctrl-C under uvicorn, engines in this process."""
    import uvicorn

    api_key = resolve_api_key(models)
    backend = LocalBackend(models)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()

    app = create_app(backend, api_key=api_key, lifespan=lifespan)
    log.info("serving %s on http://%s:%d (bare uvicorn, no Ray)", [m.name for m in models.models], host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
