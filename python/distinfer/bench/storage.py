"""Results that are never wrong: check the results directory before any load, fail loudly after.

Before a scenario sends anything, its directory must be creatable, writable (a file is written,
synced and removed: permission bits alone say nothing for root or a read-only mount) and hold
enough free space for the records the scenario is expected to write. Once load has started, a
failed write (disk full, quota, I/O error) ends the scenario without a `summary.json`: a summary
is the mark of a finished scenario, and one computed from records with a hole in them would be
skipped by a resumed sweep and reported as if it were whole.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from distinfer.config import ConfigError

MIB = 1024 * 1024
# Kept free beyond the estimate: scenario.json, the summary, the workers' stats, the node metrics.
FREE_FLOOR_BYTES = 16 * MIB
# Bytes of one record without its gaps (its server timing included), and per streamed token (one
# gap, e.g. "20.003,").
RECORD_BYTES = 1050
BYTES_PER_EVENT = 10


class ResultsDirError(ConfigError):
    """The results directory cannot hold this scenario; refused before any load."""


class ResultsWriteError(RuntimeError):
    """A write failed after load started; the scenario is left unfinished (no summary)."""


def required_bytes(events_per_s: float, requests_per_s: float, duration_s: float) -> int:
    """Free space a scenario needs: its records at the expected rates, plus a floor."""
    records = duration_s * (requests_per_s * RECORD_BYTES + events_per_s * BYTES_PER_EVENT)
    return int(FREE_FLOOR_BYTES + records)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_results_dir(path: Path, need_bytes: int) -> None:
    """Create `path`, prove a file can be written and synced there, and that `need_bytes` are free."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResultsDirError(
            f"cannot create the results directory {path}: {err.strerror or err}; "
            "choose a writable --out (e.g. results/<run-id> under the repository)"
        ) from None
    trial = path / f".write-check-{os.getpid()}"
    try:
        fd = os.open(trial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if os.write(fd, b"x" * 4096) != 4096:
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise ResultsDirError(
            f"the results directory {path} is not writable: {err.strerror or err}; "
            "choose another --out, or fix its permissions, mount or free space"
        ) from None
    finally:
        trial.unlink(missing_ok=True)
    free = free_bytes(path)
    if free < need_bytes:
        raise ResultsDirError(
            f"the results directory {path} has {free / MIB:.1f} MiB free, and this scenario needs about "
            f"{need_bytes / MIB:.1f} MiB (its records at the expected request rate, plus "
            f"{FREE_FLOOR_BYTES // MIB} MiB); free some space or choose another --out"
        )
