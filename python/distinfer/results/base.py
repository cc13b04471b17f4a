"""The ground floor of the results package: its one strict base model, the version rule, and the one
reader and writer every results file goes through.

- `Strict`: every model of a results file rejects unknown keys, so a renamed or missing field stops
  the reader with the file and the field named instead of printing "-".
- `ResultsFile`: a whole file (summary.json, run.json, capacity.json, certificate.json, ...). It
  names its file (`DEFAULT_FILE`, as guidellm's report does) and the layouts it reads
  (`READABLE_VERSIONS`), and reads and writes itself (`load_file`, `save_file`).
- The version rule (`check_version`): a file's `schema_version` says which layout it has; a file
  without one is version 1 (the layout before versions were written); a version the model does not
  list is refused, naming the file, the version and the versions this distinfer reads.
- `write_json_atomic`: every JSON file is written beside itself and renamed, so a reader sees all of
  it or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from distinfer import RESULTS_SCHEMA_VERSION, __version__

# The layout of run.json, summary.json and the node files: 1 is the layout before versions were written
# (none in run.json or node files, no server timings), 2 adds the server timings, the TTFT split and
# GPU energy. Files with their own history (capacity.json, certificate.json) keep their own numbers.
SCHEMA_VERSION = RESULTS_SCHEMA_VERSION
# Layouts of those files this code reads: 1 (before versioned files) and the current one.
READABLE_VERSIONS = (1, 2)


class Strict(BaseModel):
    """A model that rejects unknown keys: the one base of every results model (and of the plan's)."""

    model_config = ConfigDict(extra="forbid")


class ResultsSchemaError(ValueError):
    """A results file this code cannot read: an unknown schema version, or fields that do not fit."""


M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound="ResultsFile")


def problems(err: ValidationError) -> str:
    """The first few of a validation's problems, each as `field: message`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in err.errors()[:6])


def check_version(data: dict[str, Any], where: str, readable: tuple[int, ...]) -> int:
    """The file's schema version (1 when it has none), refusing one not in `readable`."""
    version = data.get("schema_version", 1)
    if version not in readable:
        raise ResultsSchemaError(
            f"{where} has schema_version {version!r}, which this distinfer ({__version__}) cannot read: it "
            f"reads results of schema versions {', '.join(map(str, readable))}. Report it with the "
            "distinfer that wrote it (run.json lists its version), or re-run the benchmark with this one"
        )
    return int(version)


def readable_versions(model: type[BaseModel]) -> tuple[int, ...] | None:
    """The layouts `model` reads (its `READABLE_VERSIONS`), or None for a model without versions."""
    if issubclass(model, ResultsFile) and model.VERSIONED:
        return model.READABLE_VERSIONS
    return None


def parse_model(data: Any, model: type[M], where: str) -> M:
    """`data` (one JSON value read from `where`) as `model`, its version checked when it has one."""
    if not isinstance(data, dict):
        raise ResultsSchemaError(f"{where} is not a JSON object: it cannot be a {model.__name__}")
    readable = readable_versions(model)
    if readable is not None:
        data = {**data, "schema_version": check_version(data, where, readable)}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ResultsSchemaError(
            f"{where} does not fit the results schema ({model.__name__}, version "
            f"{data.get('schema_version', RESULTS_SCHEMA_VERSION)}): {problems(err)}. It was written by "
            "another distinfer or edited by hand; report it with the distinfer that wrote it, or re-run"
        ) from None


def read_model(path: Path, model: type[M]) -> M | None:
    """The file as `model`, or None when it does not exist."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ResultsSchemaError(f"cannot read {path}: {err}") from None
    return parse_model(data, model, str(path))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file beside `path`, then rename: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsFile(Strict):
    """One results file: its name in its folder, the layouts it reads, its one reader and writer.

    A subclass sets `DEFAULT_FILE` and, when it carries a `schema_version` field, the versions it
    reads (`READABLE_VERSIONS`, the newest last); one that carries none sets `VERSIONED = False`.
    """

    DEFAULT_FILE: ClassVar[str]
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1,)
    VERSIONED: ClassVar[bool] = True

    @classmethod
    def file_in(cls, folder: Path) -> Path:
        """Where the file lies in `folder`."""
        return Path(folder) / cls.DEFAULT_FILE

    @classmethod
    def load_file(cls: type[F], folder: Path) -> F | None:
        """The file in `folder`, or None when there is none; an unreadable one raises ResultsSchemaError."""
        return read_model(cls.file_in(folder), cls)

    def save_file(self, folder: Path) -> Path:
        """Write the file into `folder` atomically; returns its path."""
        path = self.file_in(folder)
        write_json_atomic(path, self.model_dump(mode="json"))
        return path
