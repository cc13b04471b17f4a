"""Load hosts: one scenario's load from several machines (Locust's distributed mode), and the files
that tell how it went.

The benchmark role lists load machines in the inventory group `loadgen`. Per scenario, each load host
runs `distinfer bench loadhost` (bench/loadhost.py): it starts its Locust worker processes, which
connect to the Locust master that `distinfer bench run --load-host ...` runs on the control machine
(bench/master.py). The master spreads the users (Locust's own dispatcher) and the open-loop arrivals
over the workers, gives every worker one start message, and notices a worker gone by Locust's
heartbeats. Each worker times its requests on its own host's clock and appends records there; after
the load the role fetches every host's folder into the scenario's `hosts/<host>/`, and
`distinfer bench merge` writes the merged `records.jsonl` and the summary from them (exact
percentiles over every raw record, never merged histograms).

Files:
- `loadgen.json` (scenario folder, by the master): the hosts, each worker's share and Locust's user
  count, the load's start on the controller's clock, every host lost mid-run;
- `hosts/<host>/host.json` (by the load host's agent): its processes, its own start time, its
  saturation guard inputs (each worker's CPU, every event-loop lag sample);
- `hosts/<host>/records.jsonl`: its records, on its own clock (the merge shifts them by the difference
  of the two start times, so the steady window is one; durations never change);
- `certificates/<host>/certificate.json` (run folder): each load host's own fidelity certificate.

This module is pure: the checks of the `loadgen` input, the models, and the merge.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from distinfer.config import ConfigError
from distinfer.results.base import ResultsFile, Strict
from distinfer.results.guard import ClientLoad, lag_summary
from distinfer.results.records import RECORDS_FILE, RequestRecord, load_records

LOADGEN_FILE = "loadgen.json"
HOST_FILE = "host.json"
HOSTS_DIR = "hosts"  # in a scenario's folder: hosts/<host>/{records.jsonl, host.json}
CERTIFICATES_DIR = "certificates"  # in a run's folder: certificates/<host>/certificate.json
SCHEMA_VERSION = 1
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


# ---- the inventory's `loadgen` group ---------------------------------------------------------------


def _is_controller(name: str, address: str) -> bool:
    if "localhost" in (name, address):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_load_hosts(
    loadgen: Sequence[tuple[str, str]],
    serving: Sequence[str],
    capacity_scenarios: Sequence[str] = (),
    scaling_scenarios: Sequence[str] = (),
) -> list[str]:
    """The load hosts a run uses, from the `loadgen` group's (name, address) pairs; [] when the group
    is missing, empty or only the control machine (localhost): the load then runs there, as without
    the group. Anything else that cannot work is refused with the fix named, before any change."""
    if not loadgen:
        return []
    names = [name for name, _ in loadgen]
    local = [name for name, address in loadgen if _is_controller(name, address)]
    if local and len(local) == len(loadgen):
        return []
    if local:
        raise ConfigError(
            f"inventory group loadgen lists the control machine ({', '.join(local)}) beside load hosts "
            f"({', '.join(n for n in names if n not in local)}): the control machine runs the Locust master "
            "and generates no load of its own there. Remove it from loadgen, or list only localhost (or no "
            "loadgen group) to load from the control machine as before"
        )
    for name in names:
        if not _HOST_NAME.match(name):
            raise ConfigError(
                f"inventory group loadgen: host name {name!r} names its results folder "
                "(hosts/<name>/); use letters, digits, '.', '-', '_' (at most 63, starting with a letter or "
                "digit) and keep its address in ansible_host"
            )
    both = sorted(set(names) & set(serving))
    if both:
        raise ConfigError(
            f"inventory group loadgen lists {', '.join(both)}, which also serve the model (ray_cluster / "
            "k3s_cluster): its load would take the CPU the server measures, and the server's the load "
            "generator's. List machines that do not serve under loadgen (or remove the loadgen group to "
            "load from the control machine)"
        )
    if capacity_scenarios:
        raise ConfigError(
            f"scenario(s) {', '.join(capacity_scenarios)} search a capacity (capacity:), which runs from the "
            "control machine only; run them without the loadgen group (e.g. a run of their own with "
            "distinfer_scenarios_only), or remove capacity: to load them at a fixed size from the load hosts"
        )
    if scaling_scenarios:
        raise ConfigError(
            f"scenario(s) {', '.join(scaling_scenarios)} change their load over time (steps:) or autoscale "
            "(autoscaling:), which runs from the control machine only for now (its replica samples and "
            "figures are not merged across load hosts); run them without the loadgen group (e.g. a run of "
            "their own with distinfer_scenarios_only)"
        )
    return names


# ---- the files ------------------------------------------------------------------------------------


class WorkerEntry(Strict):
    """One Locust worker process of one load host, as the master saw it."""

    client_id: str = Field(description="Locust's id of the worker (hostname_uuid).")
    host: str = Field(description="The load host (inventory name).")
    process: int = Field(description="The process's number on its host, from 0.")
    index: int = Field(description="Its index among every worker of the scenario (its records' `worker`).")
    pid: int
    users: int = Field(description="Users Locust's dispatcher gave it (open loop: its one arrival user).")
    cap: int = Field(description="Its share of the scenario's users: open loop, the in-flight cap.")
    rate: float | None = Field(description="Its share of the open-loop arrival rate (req/s).")
    requests_reported: int = Field(
        default=0, description="Requests it had sent at its last report to the master."
    )
    reported_at: float | None = Field(default=None, description="When that report came (controller clock).")
    done: bool = Field(
        default=False, description="It said its load was over (it drained and wrote its stats)."
    )


class HostLoss(Strict):
    """A load host that went away mid-run: what the run lost with it."""

    host: str
    at: float = Field(description="When the master noticed (controller clock, Unix seconds).")
    after_s: float = Field(description="Seconds after the load's start.")
    how: str = Field(description="What the master saw, e.g. 'missed Locust heartbeats'.")
    workers: int
    users: int = Field(description="Users its workers ran (closed loop) or its arrival users (open loop).")
    requests_reported: int = Field(description="Requests its workers had reported sending by then.")


class LoadgenRun(ResultsFile):
    """`loadgen.json`: the Locust master's account of a scenario run from load hosts."""

    DEFAULT_FILE: ClassVar[str] = LOADGEN_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (SCHEMA_VERSION,)

    schema_version: int = SCHEMA_VERSION
    master: str = Field(description="The control machine's host name (where the master ran).")
    hosts: list[str]
    started: float | None = Field(description="The load's start on the controller's clock; None: never.")
    workers: list[WorkerEntry]
    losses: list[HostLoss] = Field(default_factory=list)
    error: str | None = Field(
        default=None, description="Why the load never started (e.g. a host never connected)."
    )


class HostAccount(ResultsFile):
    """`hosts/<host>/host.json`: a load host's own account, written by its agent after its workers."""

    DEFAULT_FILE: ClassVar[str] = HOST_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (SCHEMA_VERSION,)

    schema_version: int = SCHEMA_VERSION
    host: str
    processes: int
    cpu_count: int
    start: float | None = Field(description="The load's start on this host's clock (its workers').")
    client: ClientLoad = Field(description="Its saturation guard's inputs over the steady window.")
    loop_lag_ms: list[float] = Field(
        default_factory=list, description="Every event-loop lag sample of its workers (ms)."
    )


class LoadHostResult(Strict):
    """One load host in a scenario's summary: what it carried, its guard, what was lost with it."""

    host: str
    workers: int
    users: int
    records: int = Field(description="Records fetched from it (all of them, not only the window's).")
    records_fetched: bool = Field(description="False: its records could not be fetched (they are lost).")
    start_offset_ms: float | None = Field(
        description="The controller's start minus this host's (their clocks' difference plus the start "
        "message's travel): its records were shifted by it onto the controller's timeline."
    )
    requests: int = Field(description="Its requests due in the steady window.")
    events_per_s: float = Field(description="Streamed events/s it read in the steady window.")
    client: ClientLoad | None = Field(description="Its saturation guard's inputs; None: no host.json came.")
    valid: bool
    reasons: list[str] = Field(description="Why its guard failed it (empty when valid).")
    lost: HostLoss | None = None


# ---- the merge ------------------------------------------------------------------------------------


def shifted(record: RequestRecord, offset_s: float, host: str) -> RequestRecord:
    """A record moved onto the controller's timeline (every client time + offset), naming its host.
    Durations are unchanged; the server's own times stay on the server's clock."""

    def move(t: float | None) -> float | None:
        return None if t is None else t + offset_s

    return record.model_copy(
        update={
            "scheduled": record.scheduled + offset_s,
            "sent": record.sent + offset_s,
            "first_byte": move(record.first_byte),
            "first_token": move(record.first_token),
            "last_token": move(record.last_token),
            "end": record.end + offset_s,
            "load_host": host,
        }
    )


def host_offset(run: LoadgenRun, account: HostAccount | None) -> float | None:
    if account is None or account.start is None or run.started is None:
        return None
    return run.started - account.start


def merge_records(
    folder: Path, run: LoadgenRun
) -> tuple[list[RequestRecord], dict[str, list[RequestRecord]]]:
    """Every host's fetched records on the controller's timeline: all of them, and by host."""
    merged: list[RequestRecord] = []
    by_host: dict[str, list[RequestRecord]] = {}
    for host in run.hosts:
        place = folder / HOSTS_DIR / host
        offset = host_offset(run, HostAccount.load_file(place) if (place / HOST_FILE).exists() else None)
        records = [shifted(r, offset or 0.0, host) for r in load_records(place / RECORDS_FILE)]
        by_host[host] = records
        merged += records
    merged.sort(key=lambda r: (r.end, r.worker, r.seq))
    return merged, by_host


def combined_client(accounts: Sequence[HostAccount], workers: int) -> ClientLoad:
    """The whole load generator's guard inputs: every host's workers; lags over every sample."""
    lags = [lag for a in accounts for lag in a.loop_lag_ms]
    p50, p99, peak = lag_summary(lags)
    machine = [
        a.client.machine_cpu_percent_mean for a in accounts if a.client.machine_cpu_percent_mean is not None
    ]
    return ClientLoad(
        workers=workers,
        worker_cpu_percent_mean=[v for a in accounts for v in a.client.worker_cpu_percent_mean],
        worker_cpu_percent_max=[v for a in accounts for v in a.client.worker_cpu_percent_max],
        machine_cpu_percent_mean=max(machine) if machine else None,
        loop_lag_ms_p50=p50,
        loop_lag_ms_p99=p99,
        loop_lag_ms_max=peak,
        workers_reporting=sum(a.client.workers_reporting for a in accounts),
    )


def interleave(counts: Sequence[int]) -> list[list[int]]:
    """Each worker's users' positions in the scenario's ramp: worker w's k-th user takes the k-th round's
    next place, so users of every worker (and host) alternate however unevenly they were dealt."""
    positions: list[list[int]] = [[] for _ in counts]
    place, round_ = 0, 0
    while any(len(p) < c for p, c in zip(positions, counts, strict=True)):
        for worker, count in enumerate(counts):
            if round_ < count:
                positions[worker].append(place)
                place += 1
        round_ += 1
    return positions
