"""A private local Ray for the tests that deploy with Ray's own `serve deploy` CLI (a module, not
conftest: pytest loads several conftest modules under one name)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distinfer.serve.local_ray import LocalRay

BIN = Path(sys.executable).parent


@contextmanager
def ray_of_its_own(**start: Any) -> Iterator[LocalRay]:
    """A LocalRay started with `start` (LocalRay.start's options). At the end, on failure too: its
    Serve applications shut down with `serve shutdown`, then the Ray stopped."""
    local = LocalRay.start(**start)
    try:
        yield local
    finally:
        subprocess.run(
            [str(BIN / "serve"), "shutdown", "-y", "-a", local.dashboard_url],
            env={**os.environ, **local.env},
            capture_output=True,
            timeout=60,
            check=False,
        )
        local.stop()
