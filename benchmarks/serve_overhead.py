"""What the Ray Serve path costs: the same synthetic engine behind Ray Serve and behind bare uvicorn.

The synthetic engine with ttft 0 and itl 0 produces tokens as fast as the event loop lets it, so
whatever throughput a client sees is the serving path's own limit. Both servers run the SAME
FastAPI OpenAI app and the SAME engine code (serve/api.py, serve/model_server.py):

  bare   `distinfer serve --bare`: app + engine in one uvicorn process, no Ray.
  serve  `distinfer serve`: a private local Ray; HTTP proxy actor -> OpenAIIngress replica
         (FastAPI) -> model replica (engine), each token crossing two actor hops as a streamed
         Ray object.

The load client is a small httpx asyncio client in this process (not Locust: on a 2-core machine
Locust's gevent workers would take a core of their own and blur the comparison); it keeps
`--concurrency` streamed completions in flight for `--duration` seconds per server, counting SSE
token chunks and finished requests. Both servers are measured in the same run, one after the other,
on the same machine; the load average before and after is recorded because others share it.

    .venv/bin/python benchmarks/serve_overhead.py --out results/serve_overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import yaml

from distinfer.serve.launch import free_port, served

BIN = Path(sys.executable).parent


@dataclass
class Result:
    server: str
    concurrency: int
    duration_s: float
    requests: int
    tokens: int
    errors: int
    requests_per_s: float
    tokens_per_s: float
    chunks_per_token: float  # 1.0: every token reached the client as its own SSE event
    load_before: float
    load_after: float


def models_file(directory: Path, max_ongoing: int) -> Path:
    path = directory / "synthetic-zero.yaml"
    spec = {
        "models": [
            {
                "name": "synthetic",
                "engine": "synthetic",
                "ttft_ms": 0,
                "itl_ms": 0,
                "max_ongoing_requests": max_ongoing,
                "max_queued_requests": max_ongoing,
                "vocabulary": ["lorem", "ipsum", "dolor", "sit", "amet"],
            }
        ],
        "http": {"host": "127.0.0.1", "port": 8000},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@contextmanager
def server(
    kind: str, models: Path, port: int, log_dir: Path, niceness: int, serve_env: dict[str, str]
) -> Iterator[str]:
    """Start `distinfer serve [--bare]` on port; yield its URL once it answers; stop it (only it)."""
    # Ray starts its workers (proxy, replicas) at nice 15 by default; the bare server runs at the
    # caller's priority. On a shared machine that alone skews the comparison, so both get the same.
    env = {"RAY_worker_niceness": str(niceness), **(serve_env if kind == "serve" else {})}
    with served(models, port, log_dir / f"{kind}.log", bare=kind == "bare", env=env):
        yield f"http://127.0.0.1:{port}"


async def _stream_one(client: httpx.AsyncClient, url: str, max_tokens: int) -> tuple[int, int]:
    """One streamed completion; returns (content chunks, completion tokens from the usage chunk)."""
    body = {
        "model": "synthetic",
        "prompt": "hello",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            # Parse only the usage chunk: JSON-decoding every token would make this client, not the
            # server, the bottleneck on a 2-core machine.
            if not line.startswith("data: {"):
                continue
            if '"usage":{' in line:
                tokens = int(json.loads(line[6:])["usage"]["completion_tokens"])
            elif '"text":""' not in line:
                chunks += 1
    return chunks, tokens


async def load(
    url: str, concurrency: int, duration_s: float, max_tokens: int, warmup_s: float
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counts = {"requests": 0, "tokens": 0, "chunks": 0, "errors": 0}
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.monotonic()
        measure_from = start + warmup_s
        stop_at = measure_from + duration_s

        async def user() -> None:
            while time.monotonic() < stop_at:
                try:
                    chunks, tokens = await _stream_one(client, url, max_tokens)
                except (httpx.HTTPError, RuntimeError):
                    if time.monotonic() >= measure_from:
                        counts["errors"] += 1
                    await asyncio.sleep(0.1)
                    continue
                # Count requests that finished inside the window (tail requests are few at this rate).
                if measure_from <= time.monotonic() <= stop_at:
                    counts["requests"] += 1
                    counts["tokens"] += tokens
                    counts["chunks"] += chunks

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return {key: float(value) for key, value in counts.items()}


def measure(kind: str, url: str, args: argparse.Namespace) -> Result:
    before = os.getloadavg()[0]
    counts = asyncio.run(load(url, args.concurrency, args.duration, args.max_tokens, args.warmup))
    after = os.getloadavg()[0]
    return Result(
        server=kind,
        concurrency=args.concurrency,
        duration_s=args.duration,
        requests=int(counts["requests"]),
        tokens=int(counts["tokens"]),
        errors=int(counts["errors"]),
        requests_per_s=counts["requests"] / args.duration,
        tokens_per_s=counts["tokens"] / args.duration,
        chunks_per_token=counts["chunks"] / counts["tokens"] if counts["tokens"] else 0.0,
        load_before=before,
        load_after=after,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=32, help="streams kept in flight")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per server")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each window")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request (ignore_eos)")
    parser.add_argument(
        "--ray-worker-niceness",
        type=int,
        default=os.nice(0),
        help="nice value of Ray's workers (Ray's default is 15); default: this process's, as the bare server",
    )
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the Serve side only, e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="di-overhead-") as tmp:
        models = models_file(Path(tmp), max_ongoing=max(256, args.concurrency))
        for kind in ("bare", "serve"):
            serve_env = dict(item.split("=", 1) for item in args.serve_env)
            with server(kind, models, free_port(), Path(tmp), args.ray_worker_niceness, serve_env) as url:
                result = measure(kind, url, args)
            results.append(result)
            print(json.dumps(asdict(result)), flush=True)
    bare, serve = results
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": results[0].load_before,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "results": [asdict(r) for r in results],
        "ratio_tokens_per_s": serve.tokens_per_s / bare.tokens_per_s if bare.tokens_per_s else None,
        "ratio_requests_per_s": serve.requests_per_s / bare.requests_per_s if bare.requests_per_s else None,
    }
    print(
        f"serve/bare: tokens/s {serve.tokens_per_s:.0f}/{bare.tokens_per_s:.0f} = "
        f"{report['ratio_tokens_per_s']:.2f}x; requests/s "
        f"{serve.requests_per_s:.1f}/{bare.requests_per_s:.1f} = {report['ratio_requests_per_s']:.2f}x"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
