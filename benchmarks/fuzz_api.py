"""The larger fuzzing run: every endpoint of the app's OpenAPI document, many cases, a fresh seed.

`make test` fuzzes with 25 cases per operation and mode, the same ones every run
(tests/serve/test_fuzz_api.py). This script runs the same properties (distinfer.serve.fuzz: no 5xx,
documented statuses and bodies, schema-breaking requests refused, every 4xx in the OpenAI error
shape naming the field, a normal request still answered afterwards) with `--examples` cases per
operation and mode and a random (or given) Hypothesis seed, against both servers, each serving the
synthetic engine and a random tiny Llama on the hf engine:

  bare   `distinfer serve --bare` (one uvicorn process)
  serve  `distinfer serve` (a private local Ray: proxy -> ingress -> model replicas)

    nice -n 10 .venv/bin/python benchmarks/fuzz_api.py --examples 300 --out /tmp/fuzz/report.json

Exits 1 if any property failed; the report lists each failure with the case that broke it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from distinfer.models.tiny import make_tiny
from distinfer.serve.fuzz import fuzz
from distinfer.serve.launch import free_port, served


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=300, help="cases per operation and mode")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    parser.add_argument("--servers", default="bare,serve", help="which servers, comma-separated")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    report: dict[str, Any] = {"seed": seed, "examples": args.examples, "load_before": os.getloadavg()}
    failed = False
    with tempfile.TemporaryDirectory(prefix="di-fuzz-") as tmp:
        work = Path(tmp)
        # Contexts as tests/serve/test_fuzz_api.py's: well above the prompts the fuzzer makes (the
        # one limit the document states in words), since every body it allows must now be answered.
        tiny = make_tiny(work / "tiny", max_len=2048)
        models = work / "models.yaml"
        models.write_text(
            yaml.safe_dump(
                {
                    "models": [
                        {"name": "syn", "engine": "synthetic", "max_model_len": 2048},
                        {"name": "tiny", "engine": "hf", "model": str(tiny)},
                    ]
                }
            )
        )
        for server in args.servers.split(","):
            port = free_port()
            started = time.monotonic()
            with served(models, port, work / f"{server}.log", bare=server == "bare"):
                result = fuzz(f"http://127.0.0.1:{port}", args.examples, seed=seed)
            report[server] = {**result.as_dict(), "seconds": round(time.monotonic() - started, 1)}
            failed = failed or bool(result.failures)
            print(f"{server}: {result.cases} cases, {len(result.failures)} failures", file=sys.stderr)
    report["load_after"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
