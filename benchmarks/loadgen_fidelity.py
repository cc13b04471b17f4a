"""How faithful are the load generator's TTFT and TPOT? Ours and GuideLLM's against the server's truth.

The synthetic engine emits token i of a request at `arrival + ttft_ms + i * itl_ms` on an absolute
clock and, with `truth_log` set, writes when its model server received each request and when the
engine really emitted its first and last token (engines/synthetic.py). Served by `distinfer serve
--bare` (one uvicorn process, no Ray: the lightest server the project has), that is the yardstick.
The truth's TTFT counts from the model server's receipt (as vLLM counts from its API server's), its
TPOT is (last - first token) / (tokens - 1); what a client reports beyond it is the client's own
error plus the HTTP hop (split below into client send -> server receipt and first token -> client
read, on the clock client and server share).

For each point (users, itl_ms) the script starts one bare server (ttft 50 ms, the point's itl,
256 tokens per request with ignore_eos), then, one after the other against that same server:

  ours      `distinfer bench run --api completions` (closed loop, N users ramped in over the
            warm-up); its summary.json gives TTFT P50, TPOT P50 and the saturation guard's
            verdict. The truth for the same requests is joined by X-Request-Id (the latency
            population: successful requests due in the steady window).
  guidellm  GuideLLM 0.8.1 (its own venv, created here if missing), `guidellm run` with a
            concurrent profile of N streams, the same warm-up and ramp-up, synthetic data (prompt
            30 tokens, 256 output tokens, ignore_eos), offline (HF_HUB_OFFLINE=1, tokenizer = a tiny
            local folder). TTFT and ITL P50 from its per-request records (successful requests after
            its warm-up); the truth for the same requests is joined by the response id.

The warm-up (and ramp) is one request's length by default, so users arrive evenly from then on.
The server's CPU and the machine's, and the 1-minute load average before and after, are recorded for
every client run: client and server share this machine's cores, and the machine may be shared.

    .venv/bin/python benchmarks/loadgen_fidelity.py --out /tmp/lgf/run1

Writes DIR/results.json (everything, rewritten after each client run) and DIR/table.md, prints the
table and, per client, the largest user count at which it and every smaller point stayed within
5 % (TTFT P50) and 2 % (TPOT P50) of the truth.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from distinfer.bench.fidelity import (
    percentile,
    read_truth,
    received,
    truth_server,
    truth_tpot_ms,
    truth_ttft_ms,
)
from distinfer.results.certificate import TPOT_TOLERANCE, TTFT_TOLERANCE
from distinfer.serve.launch import stop_process_group

log = logging.getLogger("loadgen_fidelity")

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
PEER_VERSION = "0.8.1"
TTFT_MS = 50.0
MAX_TOKENS = 256
CLIENTS = ("ours", "guidellm")


@dataclass
class ClientResult:
    client: str
    ttft_p50_ms: float | None = None
    tpot_p50_ms: float | None = None
    truth_ttft_p50_ms: float | None = None
    truth_tpot_p50_ms: float | None = None
    truth_requests: int = 0
    client_requests: int = 0
    valid: bool | None = None
    invalid_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    command: list[str] = field(default_factory=list)
    load_before: float = 0.0
    load_after: float = 0.0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def rel_err(self, which: str) -> float | None:
        measured, truth = getattr(self, f"{which}_p50_ms"), getattr(self, f"truth_{which}_p50_ms")
        if measured is None or not truth:
            return None
        return float((measured - truth) / truth)

    def compliant(self) -> bool:
        ttft, tpot = self.rel_err("ttft"), self.rel_err("tpot")
        if ttft is None or tpot is None:
            return False
        return abs(ttft) <= TTFT_TOLERANCE and abs(tpot) <= TPOT_TOLERANCE


@dataclass
class Point:
    users: int
    itl_ms: float
    warmup_s: float = 0.0
    duration_s: float = 0.0
    ramp_s: float = 0.0
    results: list[ClientResult] = field(default_factory=list)

    def plan(self, warmup: float | None, steady: float, ramp: float | None = None) -> None:
        """Warm-up (and ramp): one request's length unless given, so users start spread over a
        whole request and arrive evenly from then on; then `steady` seconds are measured."""
        one_request_s = (TTFT_MS + (MAX_TOKENS - 1) * self.itl_ms) / 1000
        self.warmup_s = warmup if warmup is not None else max(5.0, round(one_request_s, 1))
        self.duration_s = self.warmup_s + steady
        self.ramp_s = self.warmup_s if ramp is None else ramp


# ---------------------------------------------------------------------------------------------- server


def load1() -> float:
    return os.getloadavg()[0]


def bare_server(
    workdir: Path, itl_ms: float, users: int
) -> contextlib.AbstractContextManager[tuple[str, Path, int]]:
    """`distinfer serve --bare` with a truth log; yields (url, truth log, pid); stops only its group."""
    return truth_server(workdir, TTFT_MS, itl_ms, users)


def truth_line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def truth_p50(rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """P50 of the server's own TTFT (model server received -> first token) and TPOT, ms
    (distinfer.bench.fidelity: the certificate's method)."""
    return _p50([truth_ttft_ms(t) for t in rows]), _p50([truth_tpot_ms(t) for t in rows])


def split_ttft_error(pairs: list[tuple[float, float, dict[str, Any]]]) -> dict[str, float | None]:
    """Where a client's TTFT goes, per request on the shared clock (P50s, ms).

    `request_path`: client send -> the model server receiving the request (the client's send, the
    kernel, uvicorn and FastAPI reading and validating the body). `accept_path`: model server
    received -> the engine starting on it (inside the server's TTFT). `response_path`: the engine
    emitting the first token -> the client reading it (the server's SSE write, the client's read).
    The first and last are what the client adds; `engine_ttft` is the engine's own arrival -> first token.
    """
    return {
        "request_path_p50_ms": _p50([(received(t) - sent) * 1000 for sent, _, t in pairs]),
        "accept_path_p50_ms": _p50([(t["arrival_unix"] - received(t)) * 1000 for _, _, t in pairs]),
        "response_path_p50_ms": _p50([(first - t["first_token_unix"]) * 1000 for _, first, t in pairs]),
        "engine_ttft_p50_ms": _p50(
            [
                (t["first_token_unix"] - t["arrival_unix"]) * 1000
                for _, _, t in pairs
                if t.get("first_token_unix")
            ]
        ),
    }


@contextlib.contextmanager
def cpu_use(server_pid: int) -> Iterator[dict[str, float]]:
    """The server's CPU (% of one core) and the machine's (% of all cores) over the block."""
    server = psutil.Process(server_pid)
    t0, busy0 = time.monotonic(), sum(server.cpu_times()[:2])
    psutil.cpu_percent(None)
    out: dict[str, float] = {}
    yield out
    elapsed = max(time.monotonic() - t0, 1e-6)
    out["server_cpu_pct"] = round(100 * (sum(server.cpu_times()[:2]) - busy0) / elapsed, 1)
    out["machine_cpu_pct"] = round(psutil.cpu_percent(None), 1)


def _p50(values: list[float | None]) -> float | None:
    return percentile(values, 50)


def _run_logged(cmd: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None) -> int:
    """Run a client in its own process group, output to a file; stop only that group on timeout."""
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)
            return -9
        except BaseException:
            stop_process_group(proc)  # Ctrl-C: no client left behind
            raise


# ------------------------------------------------------------------------------------------------ ours


def run_ours(url: str, truth: Path, point: Point, workdir: Path) -> ClientResult:
    users, duration, warmup, ramp = point.users, point.duration_s, point.warmup_s, point.ramp_s
    out = workdir / "ours"
    cmd = [
        str(BIN / "distinfer"), "bench", "run", "--url", url, "--model", "synthetic",
        "--users", str(users), "--duration", str(duration), "--warmup", str(warmup), "--ramp", str(ramp),
        "--max-tokens", str(MAX_TOKENS), "--api", "completions", "--out", str(out),
    ]  # fmt: skip
    res = ClientResult(client="ours", command=cmd)
    start_line = truth_line_count(truth)
    res.load_before = load1()
    t0 = time.monotonic()
    rc = _run_logged(cmd, workdir / "ours.log", timeout_s=duration + 240)
    res.wall_s, res.load_after = time.monotonic() - t0, load1()
    if rc not in (0, 4) or not (out / "summary.json").exists():  # 4: finished, INVALID (kept, flagged)
        res.error = f"exit {rc}: " + (workdir / "ours.log").read_text()[-1500:]
        return res
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]
    res.ttft_p50_ms, res.tpot_p50_ms = m["ttft_ms"]["p50"], m["tpot_ms"]["p50"]
    res.valid, res.invalid_reasons = bool(summary["valid"]), list(summary.get("invalid_reasons") or [])
    res.extra = {k: m.get(k) for k in ("achieved_concurrency", "completed", "failed", "requests_scheduled")}
    # The same population the summary's latencies come from: successful requests due in the window.
    w0, w1 = m["window_start"], m["window_end"]
    records: dict[str, dict[str, Any]] = {}
    for line in (out / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["ok"] and w0 <= rec["scheduled"] < w1:
            records[rec["request_id"]] = rec
    ids = set(records)
    rows = [t for t in read_truth(truth, start_line) if t["request_id"] in ids]
    res.client_requests, res.truth_requests = len(ids), len(rows)
    res.truth_ttft_p50_ms, res.truth_tpot_p50_ms = truth_p50(rows)
    by_id = {t["request_id"]: t for t in rows}
    res.extra.update(
        split_ttft_error([(r["sent"], r["first_token"], by_id[i]) for i, r in records.items() if i in by_id])
    )
    return res


# -------------------------------------------------------------------------------------------- guidellm

# GuideLLM 0.8.1 adds vLLM's `stream_options.continuous_usage_stats: true` to every streamed request;
# our server's request schema forbids unknown fields and answers 400 (the probe below records the
# exact answer). This shim, loaded into GuideLLM's processes (spawned workers included) as a
# sitecustomize on PYTHONPATH, removes that one key after GuideLLM builds the body. `include_usage`
# stays, so GuideLLM still reads token counts from the final usage chunk; its timing path is untouched.
# It patches lazily, when GuideLLM itself imports its request handlers: importing GuideLLM from
# sitecustomize would make every helper process (multiprocessing's resource tracker included)
# import it and spawn another helper, without end.
PEER_SHIM = """
import sys
from importlib.abc import MetaPathFinder

_TARGET = "guidellm.backends.openai.request_handlers"


def _patch(module):
    cls = module.TextCompletionsRequestHandler
    original = cls.format

    def format(self, *args, **kwargs):
        arguments = original(self, *args, **kwargs)
        options = (arguments.body or {}).get("stream_options")
        if isinstance(options, dict):
            options.pop("continuous_usage_stats", None)
        return arguments

    cls.format = format


class _Finder(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def patched_exec(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = patched_exec
        return spec


sys.meta_path.insert(0, _Finder())
"""


def ensure_peer_venv(venv: Path) -> Path:
    """GuideLLM in its own venv (never .venv): created on first use. Returns its `guidellm` script."""
    exe = venv / "bin" / "guidellm"
    if exe.exists():
        return exe
    log.info("creating %s with guidellm==%s", venv, PEER_VERSION)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    # GuideLLM needs torch; install the CPU build this project's venv uses first where pip can find it
    # (otherwise pip resolves the CUDA build and several GiB of NVIDIA wheels this machine cannot use).
    with contextlib.suppress(metadata.PackageNotFoundError, subprocess.CalledProcessError):
        subprocess.run([*pip, f"torch=={metadata.version('torch')}"], check=True)
    subprocess.run([*pip, f"guidellm=={PEER_VERSION}"], check=True)
    return exe


def ensure_tokenizer_folder(path: Path) -> Path:
    if not (path / "tokenizer.json").exists():
        subprocess.run([str(BIN / "distinfer"), "model", "make-tiny", str(path)], check=True)
    return path


def probe_peer_body(url: str) -> str:
    """What our server answers to the stream_options GuideLLM sends (recorded, not hidden)."""
    body = {
        "model": "synthetic",
        "prompt": "probe",
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return f"HTTP {response.status}: {response.read(400).decode(errors='replace')}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}: {err.read(400).decode(errors='replace')}"


def peer_command(
    exe: Path, url: str, users: int, duration: float, warmup: float, ramp: float, tok: Path, out: Path
) -> list[str]:
    return [
        str(exe), "run",
        "--backend", f"kind=openai_http,target={url},model=synthetic,request_format=/v1/completions",
        "--profile", f"kind=concurrent,streams={users},warmup={warmup:g},rampup_duration={ramp:g}",
        "--constraint", f"kind=max_duration,seconds={duration:g}",
        "--tokenizer", f"kind=huggingface_auto,model={tok}",
        "--data", f"kind=synthetic_text,prompt_tokens=30,output_tokens={MAX_TOKENS}",
        "--output", f"kind=json,path={out}",
        "--disable-console-interactive",
    ]  # fmt: skip


def run_peer(exe: Path, url: str, truth: Path, point: Point, tok: Path, workdir: Path) -> ClientResult:
    users, duration = point.users, point.duration_s
    out = workdir / "guidellm.json"
    cmd = peer_command(exe, url, users, duration, point.warmup_s, point.ramp_s, tok, out)
    res = ClientResult(client="guidellm", command=cmd)
    shim_dir = workdir / "peer-shim"
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(PEER_SHIM)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(shim_dir)}
    start_line = truth_line_count(truth)
    res.load_before = load1()
    t0 = time.monotonic()
    rc = _run_logged(cmd, workdir / "guidellm.log", timeout_s=duration + 300, env=env)
    res.wall_s, res.load_after = time.monotonic() - t0, load1()
    if rc != 0 or not out.exists():
        res.error = f"exit {rc}: " + (workdir / "guidellm.log").read_text()[-1500:]
        return res
    bench = json.loads(out.read_text())["benchmarks"][0]
    ok = bench["requests"]["successful"]
    res.client_requests = len(ok)
    res.ttft_p50_ms = _p50([r["time_to_first_token_ms"] for r in ok])
    # GuideLLM's `inter_token_latency_ms` is (last - first token) / (tokens - 1): our TPOT and the
    # truth's. Its own `time_per_output_token_ms` is (last token - request start) / tokens, which
    # folds TTFT in; it is kept beside, not compared.
    res.tpot_p50_ms = _p50([r["inter_token_latency_ms"] for r in ok])
    res.extra = {
        "own_tpot_incl_ttft_p50_ms": _p50([r["time_per_output_token_ms"] for r in ok]),
        "errored": len(bench["requests"]["errored"]),
        "incomplete": len(bench["requests"]["incomplete"]),
        "measured_s": bench.get("duration"),
        "reported_ttft_median_ms": _dig(bench, "metrics", "time_to_first_token_ms", "successful", "median"),
        "reported_tpot_median_ms": _dig(bench, "metrics", "time_per_output_token_ms", "successful", "median"),
        "reported_itl_median_ms": _dig(bench, "metrics", "inter_token_latency_ms", "successful", "median"),
        "reported_concurrency_mean": _dig(bench, "metrics", "request_concurrency", "successful", "mean"),
    }
    if not ok:
        res.error = f"no successful request ({res.extra['errored']} errored): " + _first_error(bench)
    # Joined by the response id: the server answers `cmpl-<request_id>` and GuideLLM keeps it.
    by_response = {str(r.get("response_id") or "").removeprefix("cmpl-"): r for r in ok}
    rows = [t for t in read_truth(truth, start_line) if t["request_id"] in by_response]
    res.truth_requests = len(rows)
    res.truth_ttft_p50_ms, res.truth_tpot_p50_ms = truth_p50(rows)
    pairs = []
    for t in rows:
        r = by_response[t["request_id"]]
        if r.get("request_start_time") and r.get("time_to_first_token_ms") is not None:
            start = r["request_start_time"]
            pairs.append((start, start + r["time_to_first_token_ms"] / 1000, t))
    res.extra.update(split_ttft_error(pairs))
    return res


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _first_error(bench: dict[str, Any]) -> str:
    errored = bench["requests"]["errored"]
    return str(errored[0]["info"]["error"])[:400] if errored else "none"


# --------------------------------------------------------------------------------------------- results


def parse_points(text: str) -> list[tuple[int, float]]:
    points = []
    for item in text.split(","):
        users, _, itl = item.partition(":")
        try:
            points.append((int(users), float(itl)))
        except ValueError:
            raise SystemExit(
                f"--points item {item!r} is not USERS:ITL_MS (e.g. 32:20); fix --points"
            ) from None
    return points


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.2f} %"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(points: list[Point]) -> str:
    rows = [
        "| users | itl ms | client | truth TTFT P50 | TTFT P50 | TTFT err | truth TPOT P50 | TPOT P50 | "
        "TPOT err | within 5 % / 2 % | our run valid | send→server / engine→client P50 "
        "| requests (client/truth) | server / machine CPU % | load 1-min before → after |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for p in points:
        for r in p.results:
            valid = "-" if r.valid is None else ("yes" if r.valid else "no: " + "; ".join(r.invalid_reasons))
            ok = "yes" if r.compliant() else ("**failed**" if r.error else "no")
            rows.append(
                f"| {p.users} | {p.itl_ms:g} | {r.client} "
                f"| {_ms(r.truth_ttft_p50_ms)} | {_ms(r.ttft_p50_ms)} "
                f"| {_pct(r.rel_err('ttft'))} | {_ms(r.truth_tpot_p50_ms)} | {_ms(r.tpot_p50_ms)} "
                f"| {_pct(r.rel_err('tpot'))} | {ok} | {valid} "
                f"| {_ms(r.extra.get('request_path_p50_ms'))} / {_ms(r.extra.get('response_path_p50_ms'))} "
                f"| {r.client_requests}/{r.truth_requests} "
                f"| {r.extra.get('server_cpu_pct', '-')} / {r.extra.get('machine_cpu_pct', '-')} "
                f"| {r.load_before:.2f} → {r.load_after:.2f} |"
            )
    return "\n".join(rows)


def largest_compliant(points: list[Point], client: str) -> dict[str, int | None]:
    """Per token interval: the largest user count at which this client, and every smaller point
    with that interval, stayed within tolerance."""
    best: dict[str, int | None] = {}
    for itl in sorted({p.itl_ms for p in points}):
        key, best[f"{itl:g}"] = f"{itl:g}", None
        for p in sorted((p for p in points if p.itl_ms == itl), key=lambda p: p.users):
            r = next((r for r in p.results if r.client == client), None)
            if r is None or not r.compliant():
                break
            best[key] = p.users
    return best


def summary_lines(points: list[Point]) -> list[str]:
    return [
        f"largest user count within 5 % / 2 %, {client}: "
        + ", ".join(f"itl {itl} ms: {users}" for itl, users in largest_compliant(points, client).items())
        for client in CLIENTS
    ]


def versions(peer_exe: Path | None) -> dict[str, str]:
    out = {name: _version(name) for name in ("distinfer", "locust", "uvicorn")}
    out["python"] = platform.python_version()
    if peer_exe is not None:
        probe = subprocess.run([str(peer_exe), "--version"], capture_output=True, text=True)
        out["guidellm"] = (probe.stdout or probe.stderr).strip()
    return out


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _write(out: Path, meta: dict[str, Any], points: list[Point]) -> None:
    doc = {
        **meta,
        "points": [asdict(p) for p in points],
        "largest_compliant": {c: largest_compliant(points, c) for c in CLIENTS},
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "results.json")
    (out / "table.md").write_text(table(points) + "\n\n" + "\n\n".join(summary_lines(points)) + "\n")


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="Results folder (created).")
    parser.add_argument("--points", default="32:20,256:20,1024:50", help="USERS:ITL_MS,... (%(default)s)")
    parser.add_argument("--steady", type=float, default=40.0, help="Seconds measured after the warm-up.")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="Seconds left out at the start, over which users ramp in (default: one request's length).",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="Seconds over which users start, both clients (default: the warm-up; 0: all at once).",
    )
    parser.add_argument("--peer-venv", type=Path, default=REPO / ".cache" / "peer-venv")
    parser.add_argument("--no-peer", action="store_true", help="Skip GuideLLM.")
    parser.add_argument(
        "--render", action="store_true", help="Only rewrite OUT/table.md from OUT/results.json."
    )
    args = parser.parse_args()
    if args.render:
        doc = json.loads((args.out / "results.json").read_text())
        saved = [Point(**{**p, "results": [ClientResult(**r) for r in p["results"]]}) for p in doc["points"]]
        meta = {k: v for k, v in doc.items() if k not in ("points", "largest_compliant")}
        _write(args.out, meta, saved)
        print(table(saved))
        print("\n".join(summary_lines(saved)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    points = [Point(users, itl) for users, itl in parse_points(args.points)]  # bad input: before any change
    args.out.mkdir(parents=True, exist_ok=True)
    for point in points:
        point.plan(args.warmup, args.steady, args.ramp)
    peer_exe = None if args.no_peer else ensure_peer_venv(args.peer_venv)
    tok = ensure_tokenizer_folder(args.out / "tiny-tokenizer")
    meta: dict[str, Any] = {
        "started_unix": time.time(),
        "command": [sys.executable, *sys.argv],
        "versions": versions(peer_exe),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "server": {"kind": "distinfer serve --bare", "ttft_ms": TTFT_MS, "max_tokens": MAX_TOKENS},
    }
    for point in points:
        workdir = args.out / f"u{point.users}-itl{point.itl_ms:g}"
        workdir.mkdir(parents=True, exist_ok=True)
        with bare_server(workdir, point.itl_ms, point.users) as (url, truth, pid):
            if peer_exe is not None and "peer_probe" not in meta:
                meta["peer_probe"] = probe_peer_body(url)
            log.info("point %d users, itl %g ms: ours", point.users, point.itl_ms)
            with cpu_use(pid) as cpu:
                ours = run_ours(url, truth, point, workdir)
            ours.extra.update(cpu)
            point.results.append(ours)
            _write(args.out, meta, points)  # after every client run: nothing measured is lost on a crash
            if peer_exe is not None:
                log.info("point %d users, itl %g ms: guidellm", point.users, point.itl_ms)
                with cpu_use(pid) as cpu:
                    peer = run_peer(peer_exe, url, truth, point, tok, workdir)
                peer.extra.update(cpu)
                point.results.append(peer)
                _write(args.out, meta, points)
    meta["finished_unix"] = time.time()
    _write(args.out, meta, points)
    print(table(points))
    print("\n".join(summary_lines(points)))


if __name__ == "__main__":
    main()
