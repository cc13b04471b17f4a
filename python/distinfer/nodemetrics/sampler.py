"""Sample this node every interval into a JSONL file, each line flushed as it is written.

Lines (`kind`):
- `start`: host, interval, core count, NICs, where GPU figures come from;
- `note`: something absent, said once (e.g. no GPU), then sampling goes on without it;
- `sample`: time, CPU % (total, per core), memory %, per NIC rx/tx bytes/s since the last sample,
  per GPU utilisation %, memory used % and (NVML) the energy used since the driver loaded, and the CPU
  seconds the serving path's processes used since the last sample, by part (`serve_cpu_s`: proxy,
  ingress, replicas; see `serving`).
Rates are over the real time between samples, so a late wake-up does not distort them.

The lines' schema is distinfer/results/nodes.py (NodeStart, NodeNote, NodeSample): where pydantic is
installed (`distinfer nodemetrics record`) every line is checked against it before it is written; the
cluster nodes' bundle (system Python, no pydantic) writes the same lines unchecked and the report
checks them when it reads them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any

import psutil

from distinfer import RESULTS_SCHEMA_VERSION
from distinfer.nodemetrics.gpus import GpuSource, open_gpu_source
from distinfer.nodemetrics.serving import ServingCpu

log = logging.getLogger(__name__)


def _plain_json(line: dict[str, Any]) -> str:
    return json.dumps(line, separators=(",", ":"))


try:  # the schema needs pydantic, which the bundle runtime (system Python) does not have
    from distinfer.results.nodes import node_line_json as _line_json
except ImportError:
    _line_json = _plain_json

SKIP_NICS = ("lo",)


class Sampler:
    def __init__(self, out: IO[str], interval_s: float, host: str | None = None) -> None:
        self.out = out
        self.interval_s = interval_s
        self.host = host or socket.gethostname()
        self.gpu: GpuSource | None = None
        self._net_before: dict[str, Any] = {}
        self._net_time = 0.0
        self.serving = ServingCpu()

    def _write(self, line: dict[str, Any]) -> None:
        self.out.write(_line_json(line) + "\n")
        self.out.flush()

    def start(self) -> None:
        self.gpu, gpu_note = open_gpu_source()
        psutil.cpu_percent(None, percpu=True)  # first call only primes the counters
        self.serving.prime()
        self._net_before = psutil.net_io_counters(pernic=True)
        self._net_time = time.time()
        self._write(
            {
                "kind": "start",
                "schema_version": RESULTS_SCHEMA_VERSION,
                "host": self.host,
                "time": self._net_time,
                "interval_s": self.interval_s,
                "cpu_count": os.cpu_count(),
                "mem_total_bytes": psutil.virtual_memory().total,
                "nics": sorted(n for n in self._net_before if n not in SKIP_NICS),
                "gpu_source": self.gpu.name if self.gpu else None,
            }
        )
        if self.gpu is None:
            self._write(
                {"kind": "note", "host": self.host, "time": time.time(), "source": "gpu", "message": gpu_note}
            )
            log.warning("%s", gpu_note)

    def sample(self) -> None:
        now = time.time()
        per_core = psutil.cpu_percent(None, percpu=True)
        net = psutil.net_io_counters(pernic=True)
        elapsed = max(now - self._net_time, 1e-6)
        nics = {}
        for name, counters in net.items():
            before = self._net_before.get(name)
            if name in SKIP_NICS or before is None:
                continue
            nics[name] = {
                "rx_bytes_per_s": max(0, counters.bytes_recv - before.bytes_recv) / elapsed,
                "tx_bytes_per_s": max(0, counters.bytes_sent - before.bytes_sent) / elapsed,
            }
        self._net_before, self._net_time = net, now
        line: dict[str, Any] = {
            "kind": "sample",
            "host": self.host,
            "time": now,
            "cpu_percent": sum(per_core) / len(per_core) if per_core else None,
            "cpu_percent_per_core": per_core,
            "mem_percent": psutil.virtual_memory().percent,
            "net": nics,
            "gpus": [dataclasses.asdict(g) for g in self.gpu.sample()] if self.gpu else [],
            "serve_cpu_s": self.serving.take(),
        }
        self._write(line)

    def close(self) -> None:
        if self.gpu is not None:
            self.gpu.close()


def check_options(interval_s: float, duration_s: float | None) -> str | None:
    """What is wrong with a recorder's options, or None."""
    if not 0.05 <= interval_s <= 3600:
        return f"--interval {interval_s} must be between 0.05 and 3600 seconds (1 is the usual)"
    if duration_s is not None and duration_s <= 0:
        return f"--duration {duration_s} must be positive; omit it to run until stopped"
    return None


def record(out: Path, interval_s: float, duration_s: float | None = None, host: str | None = None) -> int:
    """Sample until SIGTERM/SIGINT or the duration; return the number of samples written."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        with out.open("a") as handle:
            sampler = Sampler(handle, interval_s, host)
            sampler.start()
            began = time.monotonic()
            next_tick = began + interval_s
            try:
                while not stop.wait(max(0.0, next_tick - time.monotonic())):
                    sampler.sample()
                    count += 1
                    next_tick += interval_s
                    if duration_s is not None and time.monotonic() - began >= duration_s:
                        break
            finally:
                sampler.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return count
