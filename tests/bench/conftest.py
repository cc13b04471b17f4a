from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from synthetic_server import SyntheticServer, synthetic_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticServer]:
    with synthetic_server(Path(tmp_path_factory.mktemp("server"))) as running:
        yield running
