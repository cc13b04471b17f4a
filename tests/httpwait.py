"""Waiting for a URL to answer 200, for tests that start servers (a module, not conftest: pytest loads
several conftest modules under one name)."""

from __future__ import annotations

import time
from typing import Any

import httpx


def wait_http_ok(url: str, timeout_s: float = 60, headers: dict[str, Any] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s (last: {last})")
