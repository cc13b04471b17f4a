"""Write a model folder atomically and only once.

A model is written into a temporary sibling folder, a marker file is added last, and the folder is
renamed into place: a crash never leaves a half-written folder where a server would load it, and a
folder with the marker is complete, so a second run returns at once (idempotent, as Ansible expects).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "distinfer-model.json"


class ModelFolderError(RuntimeError):
    """The target folder cannot take the model (the message says why and what to do)."""


def is_complete(directory: Path, kind: str) -> bool:
    """True when `directory` holds a finished export of this kind (its marker names the kind)."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == kind


def _looks_saved(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _SAVED_FILES)


_SAVED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


def write_once(directory: Path, kind: str, write: Callable[[Path], dict[str, Any]]) -> bool:
    """Run `write(tmp)` into a temporary folder and rename it to `directory`; skip if already complete.

    `write` returns facts about what it wrote (source, sizes) that go into the marker file.
    Returns True when it wrote the folder, False when a complete one was already there.
    """
    directory = Path(directory)
    if is_complete(directory, kind):
        log.info("%s already holds a complete %s model; nothing to do", directory, kind)
        return False
    if _looks_saved(directory):
        # Written before folders carried the marker (non-atomically): a transformers folder with
        # weights, config and tokenizer is kept rather than refused, so re-runs stay idempotent.
        log.info("%s holds a saved model without %s; keeping it", directory, MARKER)
        return False
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ModelFolderError(
            f"{directory} exists and is not a complete {kind} model (no {MARKER} naming {kind!r}); "
            "remove it or pass an empty or new folder"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        # mkdtemp makes the folder private (0700); a model folder is read by the serving user too.
        tmp.chmod(0o755)
        facts = write(tmp)
        (tmp / MARKER).write_text(json.dumps({"kind": kind, **facts}, indent=2) + "\n")
        # rename(2) replaces an empty folder atomically; a non-empty one was refused above.
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s model written to %s", kind, directory)
    return True
