"""`run.json`: what a run was measured with (collected by bench/provenance.py, once per run).

`schema_version` says the layout: 1 is the layout before versions were written (none in run.json),
2 the current one (the same fields); a version this code does not know is refused.
"""

from __future__ import annotations

from typing import ClassVar

from distinfer.results.base import READABLE_VERSIONS, SCHEMA_VERSION, ResultsFile, Strict

RUN_FILE = "run.json"


class Hardware(Strict):
    cpu_model: str | None
    logical_cpus: int | None
    physical_cpus: int | None
    memory_bytes: int | None


class Provenance(ResultsFile):
    """What a run was measured with: versions, the load machine, the command line (secrets redacted)."""

    DEFAULT_FILE: ClassVar[str] = RUN_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = READABLE_VERSIONS

    schema_version: int = SCHEMA_VERSION
    created: float
    command: list[str]
    host: str
    python: str
    platform: str
    versions: dict[str, str | None]
    hardware: Hardware
