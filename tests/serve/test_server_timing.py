"""The server's timing of each request, on the real Ray Serve app, read by the official `openai` client.

The final chunk (the usage chunk when asked for, else the one with finish_reason) and a whole answer
carry `server_timing`: ingress received, replica admitted, engine started, first token left the
engine. The client must not need it (the `openai` client parses every answer as before), and its
times must sit in order inside the client's own send → first token read, on this one machine's clock.
The synthetic engine's prefill is its configured time to first token; the hf engine's is its real
prefill, after the batch loop took the request in. Both layouts: `direct` (the one model's replica is
its own ingress) and `router` (an ingress deployment in front of the model's).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from distinfer.config import parse_models
from distinfer.results.records import ServerTiming

pytestmark = pytest.mark.ray

TTFT_MS = 40.0


def _models(server_timing: bool, layout: str = "auto") -> Any:
    return parse_models(
        {
            "models": [{"name": "timed", "engine": "synthetic", "ttft_ms": TTFT_MS, "itl_ms": 5}],
            "telemetry": {"server_timing": server_timing},
            "ingress": {"layout": layout},
        }
    )


@pytest.fixture(scope="module", params=["direct", "router"])
def timed_app(request: pytest.FixtureRequest, ray_serve: Any) -> Iterator[str]:
    name = f"timed-{request.param}"
    yield ray_serve.deploy(_models(True, request.param), name)
    ray_serve.delete(name)


@pytest.fixture(scope="module")
def untimed_app(ray_serve: Any) -> str:
    return ray_serve.deploy(_models(False), "untimed")


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


def _stream_raw(base: str, body: dict[str, Any]) -> tuple[float, float, list[dict[str, Any]]]:
    """(sent, first text read, events) of one streamed request, timed like the load generator."""
    events: list[dict[str, Any]] = []
    first_text = 0.0
    with httpx.Client(timeout=60) as http:
        http.get(f"{base}/v1/models")  # a warm connection: its setup is not the request's
        sent = time.time()
        with http.stream("POST", f"{base}/v1/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if not first_text and event["choices"] and event["choices"][0]["text"]:
                    first_text = time.time()
                events.append(event)
    return sent, first_text, events


def _in_order(timing: ServerTiming, sent: float, first_read: float) -> list[float]:
    assert timing.first_token is not None
    moments = [sent, timing.ingress, timing.replica, timing.engine_start, timing.first_token, first_read]
    legs = [(b - a) * 1000 for a, b in itertools.pairwise(moments)]
    assert all(leg >= 0 for leg in legs), legs  # one machine, one clock: nothing out of order
    return legs


def test_the_final_chunk_carries_the_timing_and_the_openai_client_reads_the_rest(timed_app: str) -> None:
    stream = _client(timed_app).chat.completions.create(
        model="timed",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["lorem", "ipsum", "dolor", "sit", "amet", "lorem"]  # parsed as ever
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    carrying = [c for c in chunks if (c.model_extra or {}).get("server_timing")]
    assert carrying == [chunks[-1]], "only the final (usage) chunk carries it"
    timing = ServerTiming.model_validate(chunks[-1].model_extra["server_timing"])  # type: ignore[index]
    assert timing.engine == "synthetic" and timing.engine_start_source == "engine"


def test_without_usage_the_finish_chunk_carries_it(timed_app: str) -> None:
    sent, first_read, events = _stream_raw(timed_app, {"model": "timed", "prompt": "x", "max_tokens": 3})
    assert [bool(e.get("server_timing")) for e in events] == [False, False, True]
    assert events[-1]["choices"][0]["finish_reason"] is not None
    _in_order(ServerTiming.model_validate(events[-1]["server_timing"]), sent, first_read)


def test_the_legs_are_in_order_inside_the_client_time_and_prefill_is_the_engines(timed_app: str) -> None:
    body = {"model": "timed", "prompt": "x", "max_tokens": 4, "stream_options": {"include_usage": True}}
    for _ in range(5):
        sent, first_read, events = _stream_raw(timed_app, body)
        send_to_ingress, to_replica, engine_queue, prefill, back = _in_order(
            ServerTiming.model_validate(events[-1]["server_timing"]), sent, first_read
        )
        # The synthetic engine's first token comes TTFT_MS after it started the request.
        assert TTFT_MS - 1 <= prefill <= TTFT_MS + 15, prefill
        # The rest is the serving path on an idle 2-core machine: milliseconds, not tens of them.
        assert send_to_ingress + to_replica + engine_queue + back < 100, (send_to_ingress, to_replica, back)


def test_a_whole_answer_carries_it_in_its_body(timed_app: str) -> None:
    sent = time.time()
    answer = _client(timed_app).completions.create(model="timed", prompt="x", max_tokens=2)
    done = time.time()
    assert answer.choices[0].text.split() == ["lorem", "ipsum"]
    timing = ServerTiming.model_validate((answer.model_extra or {})["server_timing"])
    assert (
        sent <= timing.ingress <= timing.replica <= timing.engine_start <= (timing.first_token or 0) <= done
    )


def test_the_hf_engine_times_its_own_batch_loop(main_app: str) -> None:
    body = {"model": "tiny", "prompt": "Tell me a story", "max_tokens": 4, "ignore_eos": True}
    sent, first_read, events = _stream_raw(main_app, body)
    timing = ServerTiming.model_validate(events[-1]["server_timing"])
    assert timing.engine == "hf" and timing.engine_start_source == "engine"
    *_, prefill, _ = _in_order(timing, sent, first_read)
    assert prefill > 0.1  # a real forward pass of the prompt


def test_switched_off_no_chunk_carries_it(untimed_app: str) -> None:
    _, _, events = _stream_raw(
        untimed_app,
        {"model": "timed", "prompt": "x", "max_tokens": 3, "stream_options": {"include_usage": True}},
    )
    assert events[-1]["usage"]["completion_tokens"] == 3
    assert not any("server_timing" in event for event in events)
