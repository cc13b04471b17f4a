"""The shipped vLLM CPU models files, served as shipped by `distinfer serve --models`.

`files/models/smollm2.yaml` (the demo's: one model, so Serve's direct ingress behind HAProxy, the
default path) and `files/models/cpu-two-models.yaml` (SmolLM2 on vLLM and the tiny Llama on hf, routed
by name), each exactly as shipped but for its model folders (pointed at the session's copies of
/var/lib/distinfer/models/<model>) and the port. The official `openai` client streams a chat answer
from every model in the file, with its usage, and each answer names the engine its entry asks for.
Past the vLLM model's cap and queue a request is a 503 at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from distinfer.serve.launch import free_port, served
from vllmapp import need_vllm, shipped_models_file

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", params=["smollm2.yaml", "cpu-two-models.yaml"])
def shipped(
    request: pytest.FixtureRequest,
    smollm2_dir: Path,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, Any]]]:
    need_vllm()
    data = shipped_models_file(request.param, {"smollm2": smollm2_dir, "tiny": tiny_model_dir})
    work = tmp_path_factory.mktemp("shipped")
    (work / "models.yaml").write_text(yaml.safe_dump(data))
    port = free_port()
    with served(work / "models.yaml", port, work / "serve.log", bare=False, timeout_s=300):
        yield f"http://127.0.0.1:{port}", data


def test_the_openai_client_streams_every_model_with_usage(shipped: tuple[str, dict[str, Any]]) -> None:
    url, data = shipped
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    listed = {card.id: (card.model_extra or {})["engine"] for card in client.models.list().data}
    assert listed == {entry["name"]: entry["engine"] for entry in data["models"]}
    assert "vllm" in listed.values()
    for entry in data["models"]:
        stream = client.chat.completions.create(
            model=entry["name"],
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        final = chunks[-1]
        assert text, entry["name"]
        assert final.usage is not None and 1 <= final.usage.completion_tokens <= 8
        assert final.usage.prompt_tokens > 0
        assert (final.model_extra or {})["server_timing"]["engine"] == entry["engine"]


async def _overload(url: str, model: str, cap: int, queue: int) -> tuple[list[int], float]:
    """`cap` streams holding every slot (each has its first token), `queue` more sent to wait, then one
    more request: its status and how long it took. Every client hangs up at the end."""
    body = {"model": model, "prompt": "Tell me a long story.", "max_tokens": 200, "stream": True,
            "ignore_eos": True}  # fmt: skip
    streaming: asyncio.Queue[int] = asyncio.Queue()
    hang_up = asyncio.Event()
    statuses: list[int] = []

    async def hold(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", f"{url}/v1/completions", json=body) as response:
            statuses.append(response.status_code)
            # Kept referenced until the hang-up: an iterator dropped after `break` is closed by the
            # garbage collector, and closing it closes the connection (the client would hang up here).
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: {"):
                    break
            streaming.put_nowait(1)
            await hang_up.wait()

    limits = httpx.Limits(max_connections=cap + queue + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=180, limits=limits) as http:
        held = [asyncio.create_task(hold(http)) for _ in range(cap)]
        for _ in range(cap):
            await asyncio.wait_for(streaming.get(), timeout=120)
        queued = [asyncio.create_task(hold(http)) for _ in range(queue)]
        await asyncio.sleep(3.0)  # they reach the queue
        started = time.monotonic()
        extra = await http.post(f"{url}/v1/completions", json={**body, "stream": False, "max_tokens": 2})
        took = time.monotonic() - started
        hang_up.set()
        for task in held + queued:
            task.cancel()
        await asyncio.gather(*held, *queued, return_exceptions=True)
    assert extra.status_code == 503, (extra.status_code, extra.text[:300], statuses)
    assert extra.headers.get("retry-after", "").isdigit(), extra.headers
    assert extra.json()["error"]["code"] == "overloaded", extra.text
    return statuses, took


def test_past_the_vllm_models_cap_and_queue_is_a_503_at_once(shipped: tuple[str, dict[str, Any]]) -> None:
    url, data = shipped
    (entry,) = [e for e in data["models"] if e["engine"] == "vllm"]
    statuses, took = asyncio.run(
        _overload(url, entry["name"], entry["max_ongoing_requests"], entry["max_queued_requests"])
    )
    assert statuses[: entry["max_ongoing_requests"]] == [200] * entry["max_ongoing_requests"]
    assert took < 5.0, f"the 503 took {took:.2f} s"  # not after a slot came free (a slot takes ~20 s)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=180)
    deadline = time.monotonic() + 120
    while True:  # the hung-up streams are aborted; then it answers again
        try:
            answer = client.completions.create(model=entry["name"], prompt="hello", max_tokens=2)
            break
        except openai.APIStatusError as err:
            assert err.status_code == 503 and time.monotonic() < deadline, err
            time.sleep(1)
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
