#!/usr/bin/env bash
# `make demo`: the whole job on this machine with the embedded default inventory (inventory/local):
# Ray + the Serve app (SmolLM2-135M on vLLM for CPUs), two small benchmark scenarios with node metrics,
# the report and the chat page. The Makefile has installed the venv and the system packages first.
# Extra arguments go to ansible-playbook, e.g. `make demo ARGS="-e distinfer_local_model=tiny"`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

started=$(date +%s)
ansible-playbook -i inventory/local site.yml "$@"

report=$(ls -td results/*/report/report.md 2>/dev/null | head -1 || true)
echo
echo "distinfer demo finished in $(( $(date +%s) - started )) s."
if [[ -n "$report" ]]; then
  echo "Report: $PWD/$report (charts beside it in $(dirname "$PWD/$report"))"
  echo "Report as one page (charts inside, opens offline): $(dirname "$PWD/$report")/report.html"
  grep -m1 "^Served by:" "$PWD/$report" | sed 's/^/  /' || true
  # What serving costs on this machine, from the report (its section "What the serving path costs").
  python - "$(dirname "$PWD/$report")/results.json" <<'PY' || true
import json, sys
for s in json.load(open(sys.argv[1]))["scenarios"]:
    c = s.get("path_cost")
    if c:
        print(f"  {s['scenario']}: CPU-s per 1k output tokens: serving path (proxy + ingress) "
              f"{c['serving_path_cpu_s_per_1k_tokens']:.3f}, model replicas (the engine) "
              f"{c['cpu_s_per_1k_tokens']['replicas']:.3f}, all of the nodes {c['nodes_cpu_s_per_1k_tokens']:.3f}")
PY
else
  echo "No report was written; see the output above." >&2
  exit 1
fi
echo "The app is still serving: curl http://127.0.0.1:24800/v1/models"
# The ray_local role started the chat page (roles/ray_local/tasks/chat.yml) on its default port.
chat="http://127.0.0.1:24860/"
if python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "health", timeout=5)' "$chat" 2>/dev/null; then
  echo "Chat page (Gradio, asks the app's OpenAI API): $chat"
else
  echo "The chat page does not answer at $chat; see the ray_local role's output above." >&2
fi
# The prometheus_local role started Prometheus on the plan's port (24090 unless distinfer_prometheus_port).
prometheus="http://127.0.0.1:24090"
if python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/-/ready", timeout=5)' "$prometheus" 2>/dev/null; then
  echo "Prometheus (Ray Serve, the engine and this machine, every 5 s): $prometheus"
  echo "  e.g. $prometheus/graph?g0.expr=sum(rate(ray_vllm_generation_tokens_total%5B1m%5D))"
  echo "  Grafana dashboards of the same queries: .venv/bin/distinfer dashboards --out DIR (then import them)"
else
  echo "Prometheus does not answer at $prometheus; see the prometheus_local role's output above." >&2
fi
echo "To stop the app, the chat page and Prometheus: .venv/bin/ansible-playbook -i inventory/local playbooks/reset.yml -e confirm=yes"
