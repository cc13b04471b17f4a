"""Engines behind one interface (engines/base.py); heavy ones are imported only when used."""

from __future__ import annotations

from distinfer.config import HfModel, SyntheticModel, VllmModel
from distinfer.engines.base import Engine


def build_engine(spec: VllmModel | HfModel | SyntheticModel) -> Engine:
    """The engine a models-file entry asks for (not started: call `await engine.start()`)."""
    if isinstance(spec, SyntheticModel):
        from distinfer.engines.synthetic import SyntheticEngine

        return SyntheticEngine(spec)
    if isinstance(spec, HfModel):
        from distinfer.engines.hf import HfEngine

        return HfEngine(spec)
    from distinfer.engines.vllm import VllmEngine

    return VllmEngine(spec)
