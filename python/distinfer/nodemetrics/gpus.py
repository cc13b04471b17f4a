"""GPU utilisation and memory, from NVML (nvidia-ml-py) or amdsmi, whichever this node has.

Standard library only besides those two: the recorder runs on cluster nodes with the system Python
(roles/node_metrics), where the project's own dependencies are not installed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    vendor: str
    util_percent: float | None
    mem_used_percent: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    # Energy used since the driver loaded, in millijoules (NVML on Volta and later; None elsewhere).
    energy_mj: float | None = None


class GpuSource(Protocol):
    name: str

    def sample(self) -> list[GpuSample]: ...

    def close(self) -> None: ...


class NvmlSource:
    name = "nvml"

    def __init__(self) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            pynvml.nvmlShutdown()
            raise RuntimeError("NVML found no NVIDIA GPU")
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]

    def sample(self) -> list[GpuSample]:
        nvml = self._nvml
        samples = []
        for index, handle in enumerate(self._handles):
            util: float | None
            try:
                util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nvml.NVMLError:
                util = None
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            energy: float | None
            try:
                energy = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            except nvml.NVMLError:  # older than Volta, or not exposed by this board
                energy = None
            sample = _gpu(index, self._names[index], "nvidia", util, int(memory.used), int(memory.total))
            samples.append(dataclasses.replace(sample, energy_mj=energy))
        return samples

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class AmdSmiSource:
    name = "amdsmi"

    def __init__(self) -> None:
        import amdsmi  # ships with ROCm; not a dependency of this project

        self._amd: Any = amdsmi
        amdsmi.amdsmi_init(amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS)
        self._handles = amdsmi.amdsmi_get_processor_handles()
        if not self._handles:
            amdsmi.amdsmi_shut_down()
            raise RuntimeError("amdsmi found no AMD GPU")

    def sample(self) -> list[GpuSample]:
        amd = self._amd
        samples = []
        for index, handle in enumerate(self._handles):
            util = float(amd.amdsmi_get_gpu_activity(handle)["gfx_activity"])
            vram = amd.amdsmi_get_gpu_vram_usage(handle)  # megabytes
            used, total = int(vram["vram_used"]) * 2**20, int(vram["vram_total"]) * 2**20
            samples.append(_gpu(index, f"AMD GPU {index}", "amd", util, used, total))
        return samples

    def close(self) -> None:
        self._amd.amdsmi_shut_down()


def _gpu(index: int, name: str, vendor: str, util: float | None, used: int, total: int) -> GpuSample:
    return GpuSample(
        index=index,
        name=name,
        vendor=vendor,
        util_percent=util,
        mem_used_percent=100.0 * used / total if total else None,
        mem_used_bytes=used,
        mem_total_bytes=total,
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def open_gpu_source() -> tuple[GpuSource | None, str]:
    """The first source that finds GPUs, and a sentence on what was tried (for the 'no GPU' note)."""
    tried = []
    for source_class in (NvmlSource, AmdSmiSource):
        try:
            source: GpuSource = source_class()
        except Exception as err:  # a missing library or driver is an expected state, not a failure
            tried.append(f"{source_class.name}: {type(err).__name__}: {err}")
            continue
        return source, f"GPU metrics from {source.name}"
    return None, "no GPU metrics on this node (" + "; ".join(
        tried
    ) + "); CPU, memory and network still recorded"
