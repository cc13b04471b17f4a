"""The app's API key check (serve/api.py), on the app itself in this process (the bare server's
backend, synthetic engine, no Ray): a missing key, a wrong key of the right length and the right key
behave as before, and the key is compared in constant time (hmac.compare_digest on bytes)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from distinfer.config import parse_models
from distinfer.serve import api
from distinfer.serve.api import create_app
from distinfer.serve.bare import LocalBackend

KEY = "dk-0123456789abcdef"
WRONG_SAME_LENGTH = "dk-0123456789abcdeF"
BODY = {"model": "syn", "prompt": "x", "max_tokens": 1}


@pytest.fixture
def client() -> Iterator[TestClient]:
    backend = LocalBackend(parse_models({"models": [{"name": "syn", "engine": "synthetic"}]}))
    with TestClient(create_app(backend, api_key=KEY)) as test_client:
        test_client.portal.call(backend.start)
        yield test_client
        test_client.portal.call(backend.stop)


def test_wrong_key_of_the_same_length_is_refused_and_the_right_key_served(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    constant_time = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", compare_digest)
    assert len(WRONG_SAME_LENGTH) == len(KEY) and WRONG_SAME_LENGTH != KEY
    for headers in ({}, {"Authorization": f"Bearer {WRONG_SAME_LENGTH}"}, {"Authorization": KEY}):
        refused = client.post("/v1/completions", json=BODY, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        assert "Authorization: Bearer" in error["message"]
    served = client.post("/v1/completions", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
    assert served.status_code == 200, served.text
    assert served.json()["usage"]["completion_tokens"] == 1
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert (
        client.get("/v1/models", headers={"Authorization": f"Bearer {WRONG_SAME_LENGTH}"}).status_code == 401
    )
    assert client.get("/health").status_code == 200  # probes need no key
    # Every check went through the constant-time comparison, on bytes.
    assert compared and all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in compared)
    assert (f"Bearer {WRONG_SAME_LENGTH}".encode(), f"Bearer {KEY}".encode()) in compared
