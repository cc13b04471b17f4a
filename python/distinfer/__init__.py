"""distinfer: distributed LLM inference on bare metal, measured honestly."""

__version__ = "0.1.0"
# The layout of the results files (distinfer/results/). Kept here, in the one module the node
# recorder's bundle copies besides its own, so the recorder writes it on hosts without pydantic.
RESULTS_SCHEMA_VERSION = 2
