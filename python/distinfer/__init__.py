"""distinfer: distributed LLM inference on bare metal, measured honestly."""

__version__ = "0.1.0"
