#!/usr/bin/env bash
# `make demo`: the whole job on this machine with the embedded default inventory (inventory/local):
# Ray + the Serve app (SmolLM2-135M on the CPU), two small benchmark scenarios with node metrics,
# and the report. The Makefile has installed the venv and the system packages before this runs.
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
else
  echo "No report was written; see the output above." >&2
  exit 1
fi
echo "The app is still serving: curl http://127.0.0.1:24800/v1/models"
echo "To stop it: .venv/bin/ansible-playbook -i inventory/local playbooks/reset.yml -e confirm=yes"
