"""What a result was measured with: versions, the load machine's hardware, the command line."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
import time

import psutil

from distinfer.results.run import Hardware, Provenance

PACKAGES = ("distinfer", "locust", "gevent", "geventhttpclient", "numpy", "pydantic", "psutil", "ray", "vllm")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_provenance() -> Provenance:
    return Provenance(
        created=time.time(),
        command=redacted_argv(sys.argv),
        host=socket.gethostname(),
        python=sys.version.split()[0],
        platform=platform.platform(),
        versions={name: _version(name) for name in PACKAGES},
        hardware=Hardware(
            cpu_model=_cpu_model(),
            logical_cpus=os.cpu_count(),
            physical_cpus=psutil.cpu_count(logical=False),
            memory_bytes=psutil.virtual_memory().total,
        ),
    )


# Options whose value is a secret: recorded as REDACTED, so a results folder can be shared as it is.
SECRET_OPTIONS = ("--api-key",)


def redacted_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret options replaced."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("REDACTED")
            hide_next = False
        elif arg in SECRET_OPTIONS:
            out.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{opt}=" for opt in SECRET_OPTIONS)):
            out.append(arg.split("=", 1)[0] + "=REDACTED")
        else:
            out.append(arg)
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
