"""Reports: a results directory turned into the guide's tables, JSON, CSV and charts.

- `load`: read a run (run.json, each scenario's scenario/summary, each node's samples).
- `tables`: the rows: the guide's scalability tables, per-node utilisation, vLLM-named JSON.
- `charts`: PNGs (matplotlib, Agg).
- `render`: report.md and the comparison of two runs.
"""
