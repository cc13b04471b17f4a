"""The capacity planner on the guide's own published table (docs/guide.md, section 6).

The guide measured Llama 2 70B (tensor parallel 4, so one replica per 4 GPUs) at 1, 2, 3 and 4
replicas, each at two per-replica caps (32 and 256 requests in flight, users = replicas x cap), and
published requests/s and tokens/s per configuration. This script reads those tables from
docs/guide.md as they are, and asks the planner (python/distinfer/capacity_plan.py) what it would
have predicted for the larger configurations from the smaller ones:

- from 1 and 2 replicas: 3 and 4 replicas;
- from 1, 2 and 3 replicas: 4 replicas.

The guide's fourth replica is an H100 PCIe (the others A100 SXM), and its third shares the XE9680
with the second: both are reported as the guide ran them, the planner knows only replica counts.

    .venv/bin/python benchmarks/capacity_planner_guide.py --out benchmarks/results/capacity_planner_guide.json

Prints a Markdown table (the one in benchmarks/README.md) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from distinfer.capacity_plan import Point, holdout, markdown_table

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "guide.md"
TRAININGS = ({1, 2}, {1, 2, 3})
QUANTITIES = {"Tokens/s": "output tokens/s", "RPS": "requests/s"}


def guide_tables(text: str) -> dict[int, list[dict[str, str]]]:
    """The guide's scalability tables by batch size per replica, rows in the order published."""
    tables: dict[int, list[dict[str, str]]] = {}
    for match in re.finditer(
        r"Scalability results for batch size of (\d+) per replica\n\n((?:\|.*\n?)+)", text
    ):
        lines = [line for line in match.group(2).splitlines() if line.startswith("|")]
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        rows = [
            dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]
        ]
        tables[int(match.group(1))] = rows
    if sorted(tables) != [32, 256]:
        raise SystemExit(
            f"expected the guide's two tables (batch 32 and 256) in {GUIDE}, found {sorted(tables)}"
        )
    return tables


def points(rows: list[dict[str, str]], column: str, cap: int) -> list[Point]:
    """Replicas from the concurrency (users = replicas x cap): the guide's 1..4 replicas."""
    return [
        Point(
            replicas=int(row["Concurrent Requests"]) // cap,
            value=float(row[column]),
            source=f"guide, {row['Inference Nodes']}, {row['GPUs'].replace('<br>', '+')}",
        )
        for row in rows
    ]


def evaluate(tables: dict[int, list[dict[str, str]]]) -> list[dict[str, Any]]:
    results = []
    for cap, rows in tables.items():
        for column, unit in QUANTITIES.items():
            measured = points(rows, column, cap)
            for train in TRAININGS:
                model, predicted = holdout(measured, train)
                one = next(m.value for m in measured if m.replicas == 1)
                for p in predicted:
                    linear = one * p.replicas  # the naive plan: every replica adds one replica's worth
                    results.append(
                        {
                            "cap": cap,
                            "quantity": unit,
                            "fitted_on": sorted(train),
                            "law": model.law,
                            "one_replica": model.lam,
                            "sigma": model.sigma,
                            "replicas": p.replicas,
                            "predicted": p.predicted,
                            "published": p.measured,
                            "error": p.error,
                            "linear": linear,
                            "linear_error": linear / p.measured - 1 if p.measured else None,
                        }
                    )
    return results


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "per-replica cap", "quantity", "fitted on replicas", "fit (one replica, sigma)", "replicas",
        "predicted", "published", "error", "linear from 1 replica (error)",
    )  # fmt: skip
    rows = [
        (
            r["cap"],
            r["quantity"],
            ", ".join(map(str, r["fitted_on"])),
            f"{r['law']}: {r['one_replica']:,.4g}, {r['sigma']:.3f}",
            r["replicas"],
            f"{r['predicted']:,.1f}",
            f"{r['published']:,.1f}",
            f"{r['error']:+.1%}",
            f"{r['linear']:,.1f} ({r['linear_error']:+.1%})",
        )
        for r in results
    ]
    lines = markdown_table(header, "|---:|---|---|---|---:|---:|---:|---:|---:|", rows)
    for key, label in (("error", "planner"), ("linear_error", "linear from 1 replica")):
        errors = [abs(r[key]) for r in results]
        lines.append(
            f"\n{label}: mean |error| {sum(errors) / len(errors):.1%}, largest {max(errors):.1%}; "
            f"within 15 %: {sum(e <= 0.15 for e in errors)} of {len(errors)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="Write the figures here (JSON).")
    args = parser.parse_args()
    results = evaluate(guide_tables(GUIDE.read_text()))
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"source": str(GUIDE.relative_to(REPO)), "predictions": results}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
