"""Reports: a results directory turned into the guide's tables, JSON, CSV, charts and one HTML page.

- `load`: read a run (run.json, each scenario's scenario/summary, each node's samples).
- `tables`: the rows, typed (a scenario's, a node's, a path cost), each with its one flat, vLLM-named
  form for results.json and the CSVs.
- `charts`: PNGs (matplotlib, Agg), the TTFT/TPOT distributions read from each scenario's records.
- `render`: the report as blocks (text, tables of the rows above, charts) and the comparison of two
  runs; writes every file.
- `blocks`: those blocks (a table from its columns: header, value, format), and report.md from
  them; `html`: report.html from the same blocks, one self-contained page (charts as data URIs,
  inline style, no script, nothing fetched).
"""
