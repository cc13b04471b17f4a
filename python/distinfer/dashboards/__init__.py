"""Grafana dashboards as code: `distinfer dashboards` (the guide's node views and the serving views).

Built with grafana-foundation-sdk's typed builders from the panel list in `panels.py`; never edited as
JSON. The metric names are the ones really exported under Ray (Ray prefixes `ray_`, Prometheus names
take `_` for `:`: vLLM's `vllm:num_requests_running` is `ray_vllm_num_requests_running`), the node
exporter's and the DCGM exporter's; tests/prometheus/test_dashboard_queries.py runs every panel's query
against a real Prometheus after a real benchmark and requires an answer.
"""
