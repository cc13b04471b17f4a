"""Reports: a results directory turned into the guide's tables, JSON, CSV, charts and one HTML page.

The run is read by results/load.py (run.json, each scenario's scenario/summary, each node's
samples); the report imports results, never the load driver (docs/architecture.md).

- `tables`: the rows: the guide's scalability tables, per-node utilisation, vLLM-named JSON.
- `charts`: PNGs (matplotlib, Agg), the TTFT/TPOT distributions read from each scenario's records.
- `render`: the report as blocks (text, tables of the rows above, charts) and the comparison of two
  runs; writes every file.
- `blocks`: those blocks, and report.md from them; `html`: report.html from the same blocks, one
  self-contained page (charts as data URIs, inline style, no script, nothing fetched).
"""
