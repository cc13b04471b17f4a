"""What a result was measured with: versions, the load machine's hardware, the command line."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
import time
from typing import Any

import psutil

PACKAGES = ("distinfer", "locust", "gevent", "geventhttpclient", "numpy", "pydantic", "psutil", "ray", "vllm")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_provenance() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "created": time.time(),
        "command": sys.argv,
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
        "hardware": {
            "cpu_model": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "physical_cpus": psutil.cpu_count(logical=False),
            "memory_bytes": memory.total,
        },
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
