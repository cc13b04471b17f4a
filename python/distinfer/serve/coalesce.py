"""How a model replica hands events to the ingress: one token at a time when slow, bunched when fast.

Every item a Ray Serve deployment streams to its caller is a Ray object crossing processes, which
costs far more CPU than producing a token of the synthetic engine or a batched hf step. So the
model replica sends lists of events:

- streamed requests (`coalesce_ready`): the first waiting event is sent at once together with
  whatever else is ALREADY queued; nothing ever waits for company. When the engine is slower than
  the transport (every real model) each list holds one token, so per-token timing reaches the
  client unchanged; when tokens pile up (overload, ttft=itl=0) they travel together instead of
  queueing behind each other. No timer, unlike Ray Serve LLM's 50 ms stream batching interval.
- non-streamed requests (`whole_answer`): the client reads nothing until the end, so the verdict
  goes first (a 4xx must still be possible) and all deltas follow merged into one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from distinfer.engines.base import TokenDelta
from distinfer.serve.model_server import Event


def merge_deltas(deltas: list[TokenDelta]) -> TokenDelta:
    """One delta standing for several consecutive ones (counts are cumulative: the last one's)."""
    last = deltas[-1]
    return TokenDelta(
        "".join(d.text for d in deltas), last.prompt_tokens, last.completion_tokens, last.finish_reason
    )


async def whole_answer(events: AsyncGenerator[Event, None]) -> AsyncGenerator[list[Event], None]:
    deltas: list[TokenDelta] = []
    try:
        async for event in events:
            if isinstance(event, TokenDelta):
                deltas.append(event)
            else:
                yield [event]
        if deltas:
            yield [merge_deltas(deltas)]
    finally:
        await events.aclose()


_END = object()


async def coalesce_ready(events: AsyncGenerator[Event, None]) -> AsyncGenerator[list[Event], None]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except Exception as err:  # handed to the consumer, raised there
            queue.put_nowait(err)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        done = False
        while not done:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            batch: list[Event] = []
            for item in items:
                if item is _END:
                    done = True
                elif isinstance(item, Exception):
                    raise item
                else:
                    batch.append(item)  # type: ignore[arg-type]
            if batch:
                yield batch
    finally:
        # Consumer gone (client disconnected) or done: cancelling the pump closes the event stream,
        # whose own cleanup aborts the request in the engine.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
