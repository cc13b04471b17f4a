"""The fidelity certificate in the report: one line on how exact the load generator was, and which
scenarios (and capacity steps) made it read more events per second than it was certified for."""

from __future__ import annotations

from distinfer.report.blocks import Block, Bullets, Heading, Paragraph
from distinfer.results.certificate import Certificate, event_rate
from distinfer.results.load import Run


def above_certified(run: Run, certificate: Certificate | None) -> list[tuple[str, float]]:
    """(scenario or capacity step, its measured events/s) beyond the certified rate; all of them when
    nothing was certified."""
    if certificate is None:
        return []
    limit = certificate.certified_events_per_s
    measured: list[tuple[str, float]] = [
        (s.name, event_rate(s.summary.metrics.output_throughput, s.summary.metrics.request_throughput))
        for s in run.scenarios
        if s.summary is not None
    ]
    for result in run.capacity:
        for step in result.steps:
            rate = event_rate(step.output_throughput, step.request_throughput)
            measured.append((f"{result.name} step {step.index} ({step.rate:g} req/s)", rate))
    return [(name, rate) for name, rate in measured if limit is None or rate > limit]


def fidelity_section(run: Run, certificate: Certificate | None) -> list[Block]:
    if certificate is None and run.host_certificates:
        return []  # the load came from load hosts, each certified on its own (report/loadhosts.py)
    if certificate is None:
        return [
            Paragraph(
                "**Load-generator fidelity: no certificate in this run** (`distinfer bench sweep` and the "
                "benchmark role self-test the load generator first unless told not to; "
                "`distinfer bench certify --out RUN --events-per-s N` adds one)."
            )
        ]
    blocks: list[Block] = [Paragraph(f"**{certificate.line()}**")]
    flagged = above_certified(run, certificate)
    if flagged:
        why = (
            "Nothing was certified, so no scenario's latencies have a measured error bound:"
            if certificate.certified_events_per_s is None
            else "These made the load generator read more streamed events per second than its self-test "
            "certified, so their latencies carry an error nobody measured:"
        )
        blocks += [
            Heading("Beyond the certified event rate", 3),
            Paragraph(why),
            Bullets([f"**{name}**: {rate:,.0f} events/s" for name, rate in flagged]),
        ]
    return blocks
