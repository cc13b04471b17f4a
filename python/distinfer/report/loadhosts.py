"""Load hosts in the report (results/loadgen.py): each load host's own fidelity certificate, and per
scenario what each host carried (streamed events/s), its event-loop lag and its guard's verdict, and
what was lost with a host gone mid-run."""

from __future__ import annotations

from dataclasses import dataclass

from distinfer.report.blocks import Block, Bullets, Column, Heading, Paragraph, digits, table
from distinfer.report.tables import ordered
from distinfer.results.certificate import Certificate
from distinfer.results.load import Run
from distinfer.results.loadgen import LoadHostResult


@dataclass(frozen=True)
class HostRow:
    scenario: str
    result: LoadHostResult
    certificate: Certificate | None

    @property
    def certified(self) -> float | None:
        return None if self.certificate is None else self.certificate.certified_events_per_s

    def verdict(self) -> str:
        r = self.result
        if r.lost is not None:
            fetched = "its records before kept" if r.records_fetched else "its records could not be fetched"
            return (
                f"LOST {r.lost.after_s:.1f} s into the load ({r.lost.how}); {r.lost.users} user(s), at least "
                f"{r.lost.requests_reported} request(s) sent; {fetched}"
            )
        words = "valid" if r.valid else "INVALID: " + "; ".join(r.reasons)
        if self.certificate is not None and (self.certified is None or r.events_per_s > self.certified):
            words += "; beyond its certified event rate"
        return words


def _worker_cpu(row: HostRow) -> float | None:
    client = row.result.client
    return max(client.worker_cpu_percent_mean) if client and client.worker_cpu_percent_mean else None


COLUMNS: list[Column[HostRow]] = [
    Column("Scenario", lambda r: r.scenario),
    Column("Load host", lambda r: r.result.host),
    Column("Workers", lambda r: r.result.workers),
    Column("Users", lambda r: r.result.users),
    Column("Events/s carried", lambda r: r.result.events_per_s, digits(0)),
    Column("Certified up to (events/s)", lambda r: r.certified, digits(0)),
    Column("Loop lag P99 (ms)", lambda r: r.result.client.loop_lag_ms_p99 if r.result.client else None),
    Column("Busiest worker CPU (%)", _worker_cpu, digits(0)),
    Column("Clock offset (ms)", lambda r: r.result.start_offset_ms, digits(1)),
    Column("Verdict", lambda r: r.verdict()),
]


def host_rows(run: Run) -> list[HostRow]:
    return [
        HostRow(s.name, result, run.host_certificates.get(result.host))
        for s in ordered(run)
        if s.summary is not None
        for result in s.summary.load_hosts or []
    ]


def load_hosts_section(run: Run) -> list[Block]:
    rows = host_rows(run)
    if not rows and not run.host_certificates:
        return []
    blocks: list[Block] = [
        Heading("Load hosts", 3),
        Paragraph(
            "The load came from several machines (Locust's distributed mode: the master on the control "
            "machine, workers on each load host). Every host timed its requests on its own clock; the "
            "percentiles of this report are exact over the merged raw records of all of them. Each host "
            "has its own self-test certificate and saturation guard:"
        ),
    ]
    if run.host_certificates:
        blocks.append(
            Bullets([f"**{host}**: {cert.line()}" for host, cert in sorted(run.host_certificates.items())])
        )
    else:
        blocks.append(Paragraph("No load host was self-tested in this run (loadtest_certify: false)."))
    if rows:
        blocks.append(table(COLUMNS, rows))
    return blocks
