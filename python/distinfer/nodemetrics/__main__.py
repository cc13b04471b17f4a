"""`python -m distinfer.nodemetrics record --out FILE`: the recorder with the standard library only.

What the node_metrics role runs on cluster nodes, where only the system Python, python3-psutil and
(on NVIDIA hosts) the nvidia-ml-py module the role copies are present; `distinfer nodemetrics
record` is the same recorder behind the project's CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distinfer.nodemetrics.sampler import check_options, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distinfer.nodemetrics")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="Sample this node until SIGTERM/SIGINT or --duration.")
    rec.add_argument("--out", type=Path, required=True, help="JSONL file to append samples to.")
    rec.add_argument("--interval", type=float, default=1.0, help="Seconds between samples.")
    rec.add_argument("--duration", type=float, default=None, help="Stop after this many seconds.")
    rec.add_argument("--host", default=None, help="Name to record (default: hostname).")
    args = parser.parse_args(argv)
    problem = check_options(args.interval, args.duration)
    if problem:
        parser.error(problem)
    count = record(args.out, args.interval, args.duration, args.host)
    print(f"wrote {count} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
