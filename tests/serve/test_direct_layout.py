"""Layout `direct` on real Ray Serve: one model's replica serves the OpenAI API itself.

The default for a models file with one model (config.ModelsFile.direct): Serve's HTTP proxy hands
the request straight to the model's replica, no router deployment in between. The same API must come
out of it: every token its own SSE event on the engine's clock, TTFT at the first token (not at the
response headers), the OpenAI 503 with Retry-After past the replica's cap and queue, and the routes.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
import yaml
from test_token_timing import ITL_S, assert_paced, token_arrivals

from distinfer.config import deployment_name, parse_models
from distinfer.serve.edge import Edge, EdgeLimits, edge_limits
from distinfer.serve.launch import free_port, served

pytestmark = pytest.mark.ray

TTFT_S = 0.3


def paced_models() -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "paced",
                "engine": "synthetic",
                "ttft_ms": TTFT_S * 1000,
                "itl_ms": ITL_S * 1000,
                "max_ongoing_requests": 2,
                "max_queued_requests": 1,
                "vocabulary": ["alpha", "beta"],
            }
        ]
    }


@pytest.fixture(scope="module", params=["proxy", "haproxy"])
def direct_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The one-model app, reached through Serve's proxy actor (the session's Ray) or through HAProxy
    (Serve's direct ingress: `distinfer serve`, whose private Ray runs it by default)."""
    models = parse_models(paced_models())
    assert models.direct  # one model: the default layout is direct
    if request.param == "proxy":
        yield request.getfixturevalue("ray_serve").deploy(models, "direct")
        return
    folder = tmp_path_factory.mktemp("haproxy")
    (folder / "models.yaml").write_text(yaml.safe_dump(paced_models()))
    port = free_port()
    with served(folder / "models.yaml", port, folder / "serve.log", bare=False) as proc:
        # HAProxy, not a Serve proxy actor, answers on the port: the edge, and Serve's own behind it.
        names = [p.name() for p in psutil.Process(proc.pid).children(recursive=True)]
        assert names.count("haproxy") >= 2, names
        yield f"http://127.0.0.1:{port}"


def test_the_app_is_the_model_deployment_alone(ray_serve: Any) -> None:
    from ray import serve

    ray_serve.deploy(parse_models(paced_models()), "direct")
    deployments = serve.status().applications["direct"].deployments
    assert sorted(deployments) == ["model-paced"]  # no OpenAIIngress hop


def test_every_token_is_its_own_sse_event_on_the_engines_clock(direct_app: str) -> None:
    times, texts, usage = token_arrivals(direct_app, "paced", 12)
    assert_paced(times, 12)
    assert [t.strip() for t in texts] == ["alpha", "beta"] * 6
    assert usage["completion_tokens"] == 12


def test_ttft_is_taken_at_the_first_token_not_at_the_headers(direct_app: str) -> None:
    body = {"model": "paced", "prompt": "x", "max_tokens": 3, "stream": True}
    sent = time.monotonic()
    with httpx.stream("POST", f"{direct_app}/v1/completions", json=body, timeout=30) as response:
        headers_at = time.monotonic() - sent
        first_token_at = None
        for line in response.iter_lines():
            if line.startswith("data: {") and '"text":"' in line and first_token_at is None:
                first_token_at = time.monotonic() - sent
    assert response.status_code == 200
    assert first_token_at is not None
    # The verdict opens the response at once; the first token comes on the engine's TTFT.
    assert headers_at < TTFT_S * 0.8, headers_at
    assert TTFT_S * 0.9 < first_token_at < TTFT_S + 1.0, first_token_at


def test_routes_answer(direct_app: str) -> None:
    client = openai.OpenAI(base_url=f"{direct_app}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["paced"]
    chat = client.chat.completions.create(
        model="paced", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices).split() == [
        "alpha",
        "beta",
        "alpha",
    ]
    assert httpx.get(f"{direct_app}/health", timeout=10).json()["models"] == ["paced"]
    status = httpx.get(f"{direct_app}/status", timeout=10).json()
    assert status["models"][0]["running_replicas"] == 1
    missing = httpx.post(f"{direct_app}/v1/completions", json={"model": "nope", "prompt": "x"}, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


Answer = tuple[int, dict[str, Any], str | None, float]  # status, JSON body, Retry-After, seconds


def burst(url: str, count: int) -> list[Answer]:
    """`count` long requests sent together, each answered in full."""

    async def one(client: httpx.AsyncClient) -> Answer:
        body = {"model": "paced", "prompt": "x", "max_tokens": 20}
        start = time.monotonic()
        response = await client.post(f"{url}/v1/completions", json=body, timeout=60)
        took = time.monotonic() - start
        try:
            data = response.json()
        except ValueError:  # not our OpenAI error body: shown in the failure
            data = {"raw": response.text[:300]}
        return response.status_code, data, response.headers.get("retry-after"), took

    async def together() -> list[Answer]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(*(one(client) for _ in range(count)))

    return asyncio.run(together())


def assert_cap_and_queue_held(results: list[Answer], refusal_within_s: float) -> None:
    """Cap 2, queue 1: 2 stream, 1 waits, the rest are refused at once with the OpenAI 503."""
    codes = sorted(code for code, *_ in results)
    assert codes == [200, 200, 200] + [503] * (len(results) - 3), results
    for code, body, retry_after, took in results:
        if code == 503:
            assert body["error"]["code"] == "overloaded" and retry_after is not None, body
            assert took < refusal_within_s, took


def test_past_cap_and_queue_the_openai_503(direct_app: str) -> None:
    # Through Serve's proxy the replica's gate refuses; through `distinfer serve` the edge does.
    assert_cap_and_queue_held(burst(direct_app, 5), refusal_within_s=2.0)


def replica_gate() -> dict[str, int]:
    from ray import serve

    handle = serve.get_deployment_handle(deployment_name("paced"), app_name="direct")
    return dict(handle.stats.remote().result(timeout_s=30)["gate"])


def test_past_cap_and_queue_the_edge_refuses_and_the_replica_never_sees_it(
    ray_serve: Any, tmp_path: Path
) -> None:
    """The edge (serve/edge.py) in front of the session's Serve: the replica's own gate counts the
    requests that reached it, and none of the refused ones did."""
    url = ray_serve.deploy(parse_models(paced_models()), "direct")
    upstream = urllib.parse.urlsplit(url)
    port = free_port()
    limits = edge_limits(parse_models(paced_models()))
    assert limits == EdgeLimits(model="paced", slots=2, queue=1)
    before = replica_gate()
    with Edge.start(limits, ("127.0.0.1", port), (upstream.hostname, upstream.port), tmp_path / "edge"):
        results = burst(f"http://127.0.0.1:{port}{upstream.path}", 8)
    after = replica_gate()
    assert_cap_and_queue_held(results, refusal_within_s=0.5)
    assert after["refused"] == before["refused"], (before, after)  # not one refusal reached the replica
    assert after["admitted"] - before["admitted"] == 3, (before, after)  # only the 3 answered did
