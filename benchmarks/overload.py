"""Overload, measured: each server at its capacity, then offered 8x its capacity, in one run.

Each server in turn, on a fresh `distinfer serve` for the same deployment: the synthetic engine
(ttft 50 ms, itl 20 ms, `--tokens` 32 with ignore_eos: ~0.67 s a request), one replica with
`--slots` (8) requests in flight and `--queue` (8) waiting. The servers (`--servers`):

  default   `distinfer serve` as shipped: the edge HAProxy (serve/edge.py) in front of Serve's
            direct ingress behind its HAProxy; the edge holds the slots and the queue;
  no-edge   the same without the edge (`--no-edge`): the replica's own gate refuses (the path
            before issue 20);
  bare      `distinfer serve --bare`: one uvicorn process, the engine in it, its gate refusing;
  client-floor  no server: an edge that refuses every request, offered the same overload phase.
            How long this client takes to see a 503 when nothing else runs: the least any server
            can be measured at. A closed loop with no think time sends as fast as it is answered,
            so once refusals are cheaper than the client's own work per request it measures the
            client; the open loop (`--poisson`) does not.

On each, one after the other:

  capacity  `--slots` closed-loop streams: every slot busy, none refused; its completed requests
            per second are the deployment's capacity;
  overload  `--factor` x `--slots` closed-loop streams (64), each sending its next request as soon
            as the last is answered, refused or not (no back-off: the most refusals a second these
            users can ask for); with `--poisson`, open-loop Poisson arrivals at `--factor` x the
            capacity instead, each request sent once.

Measured by this script's asyncio client (httpx, every request timed with perf_counter): how long a
shed request takes to get its 503 (P50 / P99 / max; aim P99 < 50 ms), and the admitted requests'
TTFT and TPOT P50 / P99 in both phases (aims: admitted TTFT P99 within one request's service time
of the capacity phase's; the TPOT ratio is what the refusals cost the admitted streams). The
engine's truth log (joined by X-Request-Id) gives the server's own TTFT, from the model replica's
receipt to the first token: the client's TTFT minus it is the time spent before the model server,
in the queue.

Client and server share the machine: run the whole script under `nice` on a shared machine. The
client is one asyncio process; with `--pin` (2+ CPUs) the server and all its Ray processes are
pinned to CPU 0 and the client to CPU 1.

    nice -n 10 .venv/bin/python benchmarks/overload.py --out /tmp/overload/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from distinfer.serve.edge import Edge, EdgeLimits
from distinfer.serve.launch import free_port, served

TTFT_MS, ITL_MS = 50.0, 20.0
TOKENS = 32  # per request; --tokens sets it


@dataclass
class Outcome:
    sent: float
    status: int
    end: float
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    error: str | None = None
    request_id: str = ""


@dataclass
class Phase:
    name: str
    users: int
    duration_s: float
    attempts: int = 0
    attempts_per_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    completed_per_s: float = 0.0
    shed_ms: dict[str, float | None] = field(default_factory=dict)
    ttft_ms: dict[str, float | None] = field(default_factory=dict)
    tpot_ms: dict[str, float | None] = field(default_factory=dict)
    server_ttft_ms: dict[str, float | None] = field(default_factory=dict)
    other_errors: list[str] = field(default_factory=list)


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return {"count": len(values), "p50": float(p50), "p99": float(p99), "max": float(max(values))}


async def _one(client: httpx.AsyncClient, url: str, request_id: str) -> Outcome:
    body = {"model": "synthetic", "prompt": "hello there", "max_tokens": TOKENS, "stream": True,
            "ignore_eos": True}  # fmt: skip
    clock = time.perf_counter
    out = Outcome(sent=clock(), status=0, end=0.0, request_id=request_id)
    headers = {"X-Request-Id": request_id}
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body, headers=headers) as response:
            out.status = response.status_code
            if response.status_code != 200:
                await response.aread()
            else:
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"text":"' in line:
                        now = clock()
                        out.first_token = out.first_token or now
                        out.last_token = now
                        out.tokens += 1
    except httpx.HTTPError as err:
        out.error = f"{type(err).__name__}: {err}"
    out.end = clock()
    return out


async def closed_loop(url: str, users: int, duration_s: float, warmup_s: float) -> list[Outcome]:
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def user(index: int) -> None:
            await asyncio.sleep(warmup_s * index / users)  # ramp in over the warm-up
            seq = 0
            while time.perf_counter() < stop_at:
                seq += 1
                outcome = await _one(client, url, f"cap-{index}-{seq}")
                if outcome.sent >= measure_from:
                    outcomes.append(outcome)

        await asyncio.gather(*(user(i) for i in range(users)))
    return outcomes


async def open_loop(url: str, rate: float, duration_s: float, warmup_s: float, seed: int) -> list[Outcome]:
    """Poisson arrivals at `rate`/s, each its own task: when a request is sent never waits on another."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    tasks: list[asyncio.Task[Outcome]] = []
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        due, seq = start, 0
        while True:
            due += rng.expovariate(rate)
            if due >= stop_at:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            seq += 1
            tasks.append(asyncio.create_task(_one(client, url, f"over-{seq}")))
        outcomes = await asyncio.gather(*tasks)
    return [o for o in outcomes if o.sent >= measure_from]


def summarise(
    name: str, users: int, duration_s: float, outcomes: list[Outcome], truth: dict[str, Any]
) -> Phase:
    phase = Phase(name=name, users=users, duration_s=duration_s, attempts=len(outcomes))
    phase.attempts_per_s = len(outcomes) / duration_s
    phase.statuses = dict(Counter(str(o.status) if o.error is None else "error" for o in outcomes))
    ok = [o for o in outcomes if o.status == 200 and o.error is None and o.tokens == TOKENS]
    phase.completed_per_s = len(ok) / duration_s
    phase.shed_ms = _pcts([(o.end - o.sent) * 1000 for o in outcomes if o.status == 503])
    phase.ttft_ms = _pcts([(o.first_token - o.sent) * 1000 for o in ok if o.first_token])
    phase.tpot_ms = _pcts(
        [(o.last_token - o.first_token) * 1000 / (o.tokens - 1) for o in ok if o.first_token and o.last_token]
    )
    server = [truth[o.request_id] for o in ok if o.request_id in truth]
    phase.server_ttft_ms = _pcts([(t["first_token_unix"] - t["received_unix"]) * 1000 for t in server])
    phase.other_errors = sorted(
        {o.error or f"HTTP {o.status}" for o in outcomes if o.status not in (200, 503) or o.error}
    )[:10]
    return phase


def read_truth(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["request_id"]: row for row in rows if row.get("first_token_unix")}


def models_file(directory: Path, slots: int, queue: int) -> Path:
    path = directory / "overload-models.yaml"
    entry = {"name": "synthetic", "engine": "synthetic", "ttft_ms": TTFT_MS, "itl_ms": ITL_MS,
             "max_ongoing_requests": slots, "max_queued_requests": queue,
             "truth_log": str(directory / "truth.jsonl")}  # fmt: skip
    path.write_text(yaml.safe_dump({"models": [entry]}))
    return path


SERVERS = {"default": (False, ()), "no-edge": (False, ("--no-edge",)), "bare": (True, ())}


def flood(url: str, args: argparse.Namespace, capacity_per_s: float) -> tuple[str, int, list[Outcome]]:
    """The overload phase: its name, its users (0: open loop) and its outcomes."""
    if args.poisson:
        rate = args.factor * capacity_per_s
        name, users = f"overload {args.factor:g}x ({rate:.1f}/s)", 0
        print(f"  {name}", file=sys.stderr, flush=True)
        return name, users, asyncio.run(open_loop(url, rate, args.duration, args.warmup, args.seed))
    users = round(args.factor * args.slots)
    name = f"overload {args.factor:g}x ({users} streams)"
    print(f"  {name}", file=sys.stderr, flush=True)
    return name, users, asyncio.run(closed_loop(url, users, args.duration, args.warmup))


def client_floor(args: argparse.Namespace, capacity_per_s: float) -> dict[str, Any]:
    """The same overload phase against an edge that refuses every request (no server behind it): how
    long this client takes to see a 503 when nothing else runs, the least any server can measure at."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="di-overload-") as tmp:
        port = free_port()
        print("client-floor: an edge that refuses everything", file=sys.stderr, flush=True)
        with Edge.start(EdgeLimits("synthetic", 1, 0), ("127.0.0.1", port), ("127.0.0.1", 9), Path(tmp)):
            name, users, outcomes = flood(f"http://127.0.0.1:{port}", args, capacity_per_s)
    phase = summarise(name, users, args.duration, outcomes, {})
    return {
        "server": "client-floor",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "phases": [asdict(phase)],
    }


def measure(server: str, args: argparse.Namespace, pin: bool) -> dict[str, Any]:
    """Both phases on a fresh server; the summary of each and their ratios."""
    bare, flags = SERVERS[server]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="di-overload-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if pin:
            os.sched_setaffinity(0, {0})  # the server (and every Ray process it starts) inherits CPU 0
        models = models_file(Path(tmp), args.slots, args.queue)
        with served(models, port, Path(tmp) / "serve.log", bare=bare, args=flags):
            if pin:
                os.sched_setaffinity(0, {1})  # and this client keeps to CPU 1
            print(f"{server}: capacity, {args.slots} streams", file=sys.stderr, flush=True)
            full = asyncio.run(closed_loop(url, args.slots, args.duration, args.warmup))
            capacity = summarise("capacity", args.slots, args.duration, full, {})
            name, users, flooded = flood(url, args, capacity.completed_per_s)
            truth = read_truth(Path(tmp) / "truth.jsonl")
        if pin:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        capacity = summarise("capacity", args.slots, args.duration, full, truth)
        overload = summarise(name, users, args.duration, flooded, truth)

    def ratio(kind: str, pct: str) -> float | None:
        a, b = getattr(capacity, kind)[pct], getattr(overload, kind)[pct]
        return b / a if a and b else None

    service_ms = TTFT_MS + (TOKENS - 1) * ITL_MS
    ttft_cap, ttft_over = capacity.ttft_ms["p99"], overload.ttft_ms["p99"]
    shed_p99 = overload.shed_ms["p99"]
    return {
        "server": server,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "phases": [asdict(capacity), asdict(overload)],
        "overload_over_capacity": {
            "offered_per_s": overload.attempts_per_s / capacity.completed_per_s
            if capacity.completed_per_s
            else None,
            "ttft_p99": ratio("ttft_ms", "p99"),
            "tpot_p50": ratio("tpot_ms", "p50"),
            "tpot_p99": ratio("tpot_ms", "p99"),
            "server_ttft_p99": ratio("server_ttft_ms", "p99"),
        },
        "aims": {
            "shed_p99_under_50_ms": shed_p99 is not None and shed_p99 < 50,
            "service_time_ms": service_ms,
            "admitted_ttft_p99_over_capacity_ms": ttft_over - ttft_cap if ttft_cap and ttft_over else None,
            "admitted_ttft_within_one_service_time": bool(
                ttft_cap and ttft_over and ttft_over - ttft_cap <= service_ms
            ),
        },
    }


def main() -> int:
    global TOKENS
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default="default,no-edge,bare,client-floor",
        help=f"comma-separated, in order, of: {', '.join(SERVERS)}, client-floor",
    )
    parser.add_argument("--slots", type=int, default=8, help="requests in flight the deployment holds")
    parser.add_argument("--queue", type=int, default=8, help="requests the deployment lets wait")
    parser.add_argument("--factor", type=float, default=8.0, help="overload: this many times the capacity")
    parser.add_argument("--poisson", action="store_true", help="overload as open-loop Poisson arrivals")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each phase")
    parser.add_argument("--seed", type=int, default=0, help="seeds the Poisson arrival times")
    parser.add_argument("--tokens", type=int, default=TOKENS, help="tokens per request (ignore_eos)")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in servers if name not in SERVERS and name != "client-floor"]
    if unknown or not servers:
        parser.error(f"--servers: unknown {unknown or 'none given'}; choose from {', '.join(SERVERS)}")
    TOKENS = args.tokens
    pin = args.pin and (os.cpu_count() or 1) >= 2
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "pinned": pin,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "engine": {"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "tokens": TOKENS},
        "servers": [],
    }
    for server in servers:
        if server == "client-floor":
            done = [p for entry in report["servers"] for p in entry["phases"] if p["name"] == "capacity"]
            ideal = 1000 / (TTFT_MS + (TOKENS - 1) * ITL_MS) * args.slots  # when no server ran before
            per_s = done[0]["completed_per_s"] if done else ideal
            report["servers"].append(client_floor(args, per_s))
        else:
            report["servers"].append(measure(server, args, pin))
        if args.out:  # after each server: a later crash keeps what is measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
