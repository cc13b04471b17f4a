"""report.md, report.html, results.json, results.csv, nodes.csv and the charts, for one run (and a
comparison). The report's text and tables are built once as blocks (`report_blocks`); report.md and
the self-contained report.html are two renderings of them (blocks.py, html.py)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distinfer.report.autoscaling import autoscaling_section
from distinfer.report.blocks import (
    Block,
    Bullets,
    Column,
    Figures,
    Heading,
    Image,
    Named,
    Paragraph,
    Table,
    digits,
    image,
    table,
    to_markdown,
)
from distinfer.report.blocks import cell as _f
from distinfer.report.capacity import capacity_section
from distinfer.report.charts import all_charts
from distinfer.report.fidelity import above_certified, fidelity_section
from distinfer.report.goodput import slo_section
from distinfer.report.html import to_html
from distinfer.report.loadhosts import load_hosts_section
from distinfer.report.planner import planner_section
from distinfer.report.prometheus import Pair, ServerFigures, figures_for_run
from distinfer.report.repeats import noise_comparison, noise_section, repeats_document, repeats_section
from distinfer.report.replay import replay_section
from distinfer.report.tables import (
    GUIDE_P95_TOKEN_LABEL,
    NodeRow,
    PathCost,
    ScenarioRow,
    node_rows,
    ordered,
    path_cost,
    results_document,
    scenario_row,
)
from distinfer.results.base import write_json_atomic
from distinfer.results.load import Run, Scenario
from distinfer.results.scenario import ScenarioSpec

if TYPE_CHECKING:
    from distinfer.results.availability import Availability, ReplicaCourse
    from distinfer.results.metrics import Distribution


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _mb(value: float | None) -> float | None:
    return None if value is None else value / 1e6


def _errors(r: ScenarioRow) -> str:
    if not r.finished:
        return "-"
    return ", ".join(f"{k}: {v}" for k, v in sorted(r.errors_by_kind.items())) or "0"


VALID = {True: "yes", False: "NO", None: "unfinished"}
GUIDE_COLUMNS: list[Column[ScenarioRow]] = [
    Column("Inference Nodes", lambda r: r.inference_nodes),
    Column("Devices", lambda r: r.devices.replace(",", "<br>")),
    Column("GPUs", lambda r: r.gpus),
    Column("Concurrent Requests", lambda r: r.max_concurrency),
    Column("RPS", lambda r: r.request_throughput, digits(2)),
    Column("Tokens/s (output)", lambda r: r.output_throughput),
    Column("Tokens/s (total)", lambda r: r.total_token_throughput),
    Column("P95 Latency (s)", lambda r: _seconds(r.e2el.p95), digits(2)),
    Column(GUIDE_P95_TOKEN_LABEL, lambda r: r.guide_p95_token_latency_ms, digits(2)),
    Column("TTFT P50 (ms)", lambda r: r.ttft.median),
    Column("TTFT P95 (ms)", lambda r: r.ttft.p95),
    Column("TPOT P50 (ms)", lambda r: r.tpot.median, digits(2)),
    Column("TPOT P95 (ms)", lambda r: r.tpot.p95, digits(2)),
    Column("Errors", _errors),
    Column("Valid", lambda r: VALID[r.valid]),
    Column("Scenario", lambda r: r.scenario),
]


def _gpu(value: Callable[[NodeRow], float | None]) -> Callable[[NodeRow], str]:
    """A GPU figure, or n/a on a node without GPUs."""
    return lambda n: _f(value(n)) if n.gpu_count else "n/a"


NODE_COLUMNS: list[Column[NodeRow]] = [
    Column("Scenario", lambda n: n.scenario),
    Column("Node", lambda n: n.host),
    Column("Avg CPU %", lambda n: n.avg_cpu_percent),
    Column("Peak CPU %", lambda n: n.peak_cpu_percent),
    Column("Avg Memory %", lambda n: n.avg_mem_percent),
    Column("Peak Memory %", lambda n: n.peak_mem_percent),
    Column("Avg GPU Util %", _gpu(lambda n: n.avg_gpu_util_percent)),
    Column("Avg GPU Memory %", _gpu(lambda n: n.avg_gpu_mem_percent)),
    Column("Net rx avg (MB/s)", lambda n: _mb(n.net_rx_avg_bytes_per_s), digits(2)),
    Column("Net rx max (MB/s)", lambda n: _mb(n.net_rx_max_bytes_per_s), digits(2)),
    Column("Net tx avg (MB/s)", lambda n: _mb(n.net_tx_avg_bytes_per_s), digits(2)),
    Column("Net tx max (MB/s)", lambda n: _mb(n.net_tx_max_bytes_per_s), digits(2)),
    Column("Samples", lambda n: n.samples),
    Column("Note", lambda n: n.note),
]
DETAIL_COLUMNS: list[Column[ScenarioRow]] = [
    Column("Scenario", lambda r: r.scenario),
    Column("Replicas", lambda r: r.replicas),
    Column("Users", lambda r: r.max_concurrency),
    Column("Completed", lambda r: r.completed),
    Column("Achieved concurrency", lambda r: r.achieved_concurrency),
    Column(
        "E2E P50/P95/P99 (s)",
        lambda r: "/".join(_f(_seconds(ms), 2) for ms in (r.e2el.median, r.e2el.p95, r.e2el.p99)),
    ),
    Column("ITL P99 (ms)", lambda r: r.itl.p99, digits(2)),
]
# (results.json's key, the comparison table's header, the figure)
COMPARED: tuple[tuple[str, str, Callable[[ScenarioRow], float | int | None]], ...] = (
    ("request_throughput", "RPS", lambda r: r.request_throughput),
    ("output_throughput", "output tok/s", lambda r: r.output_throughput),
    ("p95_e2el_ms", "P95 latency ms", lambda r: r.e2el.p95),
    ("median_ttft_ms", "TTFT P50 ms", lambda r: r.ttft.median),
    ("median_tpot_ms", "TPOT P50 ms", lambda r: r.tpot.median),
    ("failed", "errors", lambda r: r.failed),
)


def report_blocks(
    run: Run,
    charts: list[Image],
    compare: Comparison | None = None,
    server: ServerSection | None = None,
) -> list[Block]:
    """The whole report, once: report.md and report.html are both written from these blocks."""
    rows = [scenario_row(s) for s in ordered(run)]
    prov = run.provenance
    blocks: list[Block] = [
        Heading(f"Benchmark report: {run.path.name}", 1),
        Paragraph(
            f"Load generator host: {prov.host}; {prov.hardware.cpu_model or '-'}, "
            f"{_f(prov.hardware.logical_cpus)} CPUs. Versions: "
            + ", ".join(f"{k} {v}" for k, v in prov.versions.items() if v)
            if prov
            else f"No run.json in {run.path}: the load generator's host and versions were not recorded."
        ),
        Paragraph(
            "Every figure covers each scenario's steady window (warm-up and drain excluded); "
            "percentiles are\nexact, from every request. "
            "*Tokens/s (output)* is what the guide called Tokens/s.\n"
            f"*{GUIDE_P95_TOKEN_LABEL}* is not a measured token latency; TTFT and TPOT are."
        ),
    ]
    blocks += served_by(run)
    blocks += fidelity_section(run, run.certificate)
    blocks += load_hosts_section(run)
    stand_ins = [r.scenario for r in rows if r.engine_stand_in]
    if stand_ins:
        blocks.append(
            Paragraph(
                f"**Rehearsal: a synthetic engine stood in for the model** in {', '.join(stand_ins)} "
                "(docs/rehearsal.md): those figures measure the serving path and the load generator, "
                "not the model or its GPUs."
            )
        )
    blocks += guide_tables(rows)
    blocks += repeats_section(rows)
    blocks += slo_section(rows) if rows else []
    blocks += capacity_section(run.capacity)
    blocks += planner_section(run)
    invalid = [r for r in rows if r.valid is False]
    if invalid:
        blocks += [
            Heading("Invalid scenarios (the load generator could not keep up)"),
            Bullets([f"**{r.scenario}**: " + "; ".join(r.invalid_reasons) for r in invalid]),
        ]
    unfinished = [r.scenario for r in rows if not r.finished]
    if unfinished:
        blocks.append(Paragraph(f"Unfinished scenarios (no summary.json): {', '.join(unfinished)}"))
    blocks += availability_section(run)
    blocks += autoscaling_section(run)
    blocks += replay_section(run, server.figures if server else {})
    blocks += where_the_time_goes(run)
    blocks += server_section(run, server or ServerSection({}, "Server-side figures: not asked for."))
    blocks += node_section(run)
    blocks += path_cost_section(run)
    blocks += [Heading("Scenario details"), table(DETAIL_COLUMNS, rows)]
    blocks += provenance_section(run)
    blocks += [Heading("Charts"), Figures(charts)]
    if compare is not None:
        blocks += compare_section(run, charts, compare)
    return blocks


def guide_tables(rows: list[ScenarioRow]) -> list[Block]:
    """The guide's scalability table, one per batch size per replica."""
    batches: dict[str, list[ScenarioRow]] = {}
    for row in rows:
        key = str(row.users_per_replica) if row.users_per_replica else "unspecified"
        batches.setdefault(key, []).append(row)
    blocks: list[Block] = []
    for number, (batch, group) in enumerate(batches.items(), start=1):
        blocks += [
            Heading(f"{number}. Scalability results for batch size of {batch} per replica"),
            table(GUIDE_COLUMNS, group),
        ]
    return blocks


@dataclass(frozen=True)
class Faults:
    """A scenario's faults, with the course of the replicas that dropped first (else the first's)."""

    scenario: str
    a: Availability
    course: ReplicaCourse | None

    @property
    def back(self) -> str:
        if self.course is None or self.course.dropped_at_s is None:
            return "-"
        return "not back" if self.course.back_at_s is None else _f(self.course.back_at_s)


AVAILABILITY_COLUMNS: list[Column[Faults]] = [
    Column("Scenario", lambda f: f.scenario),
    Column("Failed", lambda f: f.a.failed),
    Column("Errors began (s)", lambda f: f.a.first_error_s),
    Column("Errors ended (s)", lambda f: f.a.last_error_s),
    Column("Seconds with errors", lambda f: f.a.error_seconds),
    Column("SLO violated (s)", lambda f: f.a.slo_violated_seconds),
    Column(
        "Replicas at start -> lowest",
        lambda f: "-" if f.course is None else f"{f.course.at_start} -> {f.course.lowest}",
    ),
    Column("Replica lost at (s)", lambda f: None if f.course is None else f.course.dropped_at_s),
    Column("Back at (s)", lambda f: f.back),
    Column("Server lost at (s)", lambda f: f.a.endpoint_lost_at_s),
]


def availability_section(run: Run) -> list[Block]:
    """Faults during a scenario (seconds after its load began): shown only when something happened."""
    faults: list[Faults] = []
    for s in ordered(run):
        a = s.summary.availability if s.summary else None
        if a is None:
            continue
        dropped = [c for c in a.replicas if c.dropped_at_s is not None]
        if not a.failed and not dropped and a.endpoint_lost_at_s is None:
            continue
        faults.append(Faults(s.name, a, dropped[0] if dropped else (a.replicas[0] if a.replicas else None)))
    if not faults:
        return []
    return [
        Heading("Faults during the load (seconds after each scenario's load began)"),
        table(AVAILABILITY_COLUMNS, faults),
        Bullets([f"**{f.scenario}**: {f.a.summary}" for f in faults]),
    ]


@dataclass(frozen=True)
class LegLine:
    """One line of a TTFT split: a leg, or the TTFT they add up to (bold)."""

    label: str
    share_of_p50: str
    share: str
    own: Distribution


LEG_COLUMNS: list[Column[LegLine]] = [
    Column("Leg", lambda x: x.label),
    Column("Its share of the TTFT P50 (ms)", lambda x: x.share_of_p50),
    Column("Share", lambda x: x.share),
    Column("Leg's own P50 (ms)", lambda x: x.own.p50, digits(2)),
    Column("Own P95 (ms)", lambda x: x.own.p95, digits(2)),
    Column("Own mean (ms)", lambda x: x.own.mean, digits(2)),
]


def where_the_time_goes(run: Run) -> list[Block]:
    """Per scenario, the TTFT split into legs from the server's timing of each request (results/legs.py)."""
    blocks: list[Block] = [
        Heading("Where the time goes: time to first token, leg by leg (steady window)"),
        Paragraph(
            "Each request's TTFT runs from the client's send to its read of the first token; the server's "
            "timing of the request (its final chunk's `server_timing`) splits it into five legs.\n"
            "*Its share of the TTFT P50* is the median time from the send to the leg's end minus that to "
            "its start, so the shares add up to the TTFT P50 (last row). A leg's own median is given "
            "beside it: medians of legs that vary apart do not add up to the median of their sum."
        ),
    ]
    for s in ordered(run):
        split = s.summary.ttft_split if s.summary else None
        if split is None:
            reason = "unfinished" if s.summary is None else "no request carried server timing"
            blocks.append(Paragraph(f"**{s.name}**: no split ({reason})."))
            continue
        total = sum(leg.at_median_ms for leg in split.legs)
        lines = [
            LegLine(leg.label, _f(leg.at_median_ms, 2), _share(leg.at_median_ms, total), leg.own_ms)
            for leg in split.legs
        ]
        p50 = f"**{_f(total, 2)}** (TTFT P50 {_f(split.ttft_ms.p50, 2)})"
        lines.append(LegLine("**TTFT (client)**", p50, "100%", split.ttft_ms))
        clocks = (
            "one host, one clock"
            if split.one_clock
            else f"hosts apart; ingress clock minus client clock estimated {_f(split.clock_offset_ms, 2)} ms"
        )
        blocks += [
            Heading(s.name, 3),
            table(LEG_COLUMNS, lines),
            Paragraph(
                f"{split.requests} requests with server timing ({split.without_timing} without); "
                f"clocks: {clocks}; requests with times out of order: {split.out_of_order}; engine "
                f"{_engines(s)}."
            ),
        ]
    return blocks


@dataclass(frozen=True)
class ServerSection:
    """What Prometheus said per scenario, or why it said nothing."""

    figures: dict[str, ServerFigures]
    missing: str | None


def _pair_cell(pair: Pair, digits: int = 1) -> str:
    return f"{_f(pair.avg, digits)} / {_f(pair.max, digits)}"


def _energy(f: ServerFigures) -> str:
    return "-" if f.energy_j is None else f"{_f(f.energy_j)} ({f.energy_source})"


SERVER_COLUMNS: list[Column[Named[ServerFigures]]] = [
    Column("Scenario", lambda x: x.name),
    Column("Serve queue wait avg / P95 (ms)", lambda x: x.of.serve_queue_wait_ms, lambda p: _pair_cell(p, 2)),
    Column("Queued at handles avg / max", lambda x: x.of.queued_at_handles, _pair_cell),
    Column("Ongoing per replica avg / max", lambda x: x.of.ongoing_per_replica, _pair_cell),
    Column("Engine running avg / max", lambda x: x.of.engine_running, _pair_cell),
    Column("Engine waiting avg / max", lambda x: x.of.engine_waiting, _pair_cell),
    Column("KV cache avg / max (%)", lambda x: x.of.kv_cache_percent, _pair_cell),
    Column("GPU util avg / max (%)", lambda x: x.of.gpu_util_percent, _pair_cell),
    Column("GPU memory avg / max (%)", lambda x: x.of.gpu_mem_percent, _pair_cell),
    Column("GPU energy (J)", lambda x: _energy(x.of)),
    Column("Tokens per joule", lambda x: x.of.tokens_per_joule, digits(3)),
]


def server_section(run: Run, server: ServerSection) -> list[Block]:
    """Per scenario, the serving path's and the engines' own figures over its window (Prometheus)."""
    blocks: list[Block] = [Heading("Server-side figures (Prometheus, steady window)")]
    if server.missing:
        return [*blocks, Paragraph(server.missing)]
    rows = [Named(s.name, f) for s in ordered(run) if (f := server.figures.get(s.name)) is not None]
    url = next(iter(server.figures.values())).prometheus if server.figures else "-"
    return [
        *blocks,
        Paragraph(
            f"From Prometheus at {url}, over each scenario's steady window: Ray Serve's router queue "
            "(request to replica), its handles' queues and each replica's ongoing requests; the engines' "
            "running and waiting requests and KV cache (`ray_vllm_*`); GPU utilisation, memory and energy "
            "from a DCGM exporter where one is scraped (else the node recorder's NVML energy). "
            '"-" means Prometheus had no such series for the window.'
        ),
        table(SERVER_COLUMNS, rows, empty="No finished scenario to ask about."),
        *engine_latency_section(run, server),
    ]


@dataclass(frozen=True)
class EngineTtft:
    """A scenario's server figures beside the client's TTFT."""

    scenario: str
    server: ServerFigures
    client: Distribution


ENGINE_LATENCY_COLUMNS: list[Column[EngineTtft]] = [
    Column("Scenario", lambda x: x.scenario),
    Column(
        "Engine TTFT P50 / P99 (ms)",
        lambda x: f"{_f(x.server.engine_ttft_p50_ms)} / {_f(x.server.engine_ttft_p99_ms)}",
    ),
    Column("Client TTFT P50 / P99 (ms)", lambda x: f"{_f(x.client.p50)} / {_f(x.client.p99)}"),
    Column("Prefix cache hit (%)", lambda x: x.server.prefix_cache_hit_percent),
]


def engine_latency_section(run: Run, server: ServerSection) -> list[Block]:
    """The engine's own TTFT histogram beside the client's exact TTFT, and vLLM's prefix-cache hits."""
    rows = []
    for s in ordered(run):
        f = server.figures.get(s.name)
        if (
            f is None
            or s.summary is None
            or (f.engine_ttft_p50_ms is None and f.prefix_cache_hit_percent is None)
        ):
            continue
        rows.append(EngineTtft(s.name, f, s.summary.metrics.ttft_ms))
    if not rows:
        return []
    return [
        Heading("The engine's own latency beside the client's (Prometheus)"),
        Paragraph(
            "The engine's own view of time to first token (its histogram, from the replica's receipt; "
            "percentiles interpolated within the histogram's buckets) beside the client's (exact, from "
            "every record, from the send), and the share of prompt tokens vLLM found in its prefix cache."
        ),
        table(ENGINE_LATENCY_COLUMNS, rows),
    ]


def _share(part: float, total: float) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def _timed_by(s: Scenario) -> set[tuple[str, str]]:
    """The engines (with their releases) that timed the scenario's requests in its window, and where
    their start times came from."""
    from distinfer.results.records import RECORDS_FILE, iter_records

    if s.folder is None or s.window is None:
        return set()
    return {
        (r.server.engine_label, r.server.engine_start_source)
        for r in iter_records(s.folder / RECORDS_FILE)
        if r.server is not None and s.window[0] <= r.scheduled < s.window[1]
    }


def _engines(s: Scenario) -> str:
    return ", ".join(f"{engine} (start: {source})" for engine, source in sorted(_timed_by(s))) or "-"


def served_by(run: Run) -> list[Block]:
    """Which engine served the run, as the server named itself on every answer's timing."""
    labels = sorted({engine for s in ordered(run) for engine, _ in _timed_by(s)})
    if not labels:
        return []
    return [Paragraph(f"Served by: {', '.join(labels)} (each answer's server timing names its engine).")]


def node_section(run: Run) -> list[Block]:
    nodes = [n for s in ordered(run) for n in node_rows(s)]
    blocks: list[Block] = [
        Heading("Resource utilisation per node (steady window)"),
        table(NODE_COLUMNS, nodes, empty="No node samples in this run."),
    ]
    if any(n.samples for n in nodes):
        blocks.append(
            Paragraph(
                "*Peak* is the window's highest sample; each sample is the node's use over one interval of "
                "its recorder (`nodemetrics record --interval`, 1 s unless set), so a shorter burst is "
                "averaged into its interval."
            )
        )
    placed = [s for s in ordered(run) if s.served_nodes is not None]
    if placed:
        idle = [
            f"{s.name}: {', '.join(others)}"
            for s in placed
            if (others := [h for h in sorted({*s.nodes, *s.node_errors}) if h not in (s.served_nodes or [])])
        ]
        blocks.append(
            Paragraph(
                "Each scenario's rows are the hosts that held its model's replicas, as Ray had placed them "
                "before its load (placement.json, from Ray's state API)"
                + (
                    f"; the other hosts' samples stay in its nodes/ folder ({'; '.join(idle)})."
                    if idle
                    else "."
                )
            )
        )
        unused = [
            f"{s.name}: {', '.join(s.placement.unused)}" for s in placed if s.placement and s.placement.unused
        ]
        if unused:
            blocks.append(
                Paragraph(
                    f"**Named for a scenario but holding none of its replicas** (Ray packed them on fewer "
                    f"hosts): {'; '.join(unused)}"
                )
            )
    missing = [f"{n.host} ({n.scenario})" for n in nodes if n.note.startswith("MISSING")]
    if missing:
        blocks.append(
            Paragraph(f"**Nodes listed in the scenarios but without samples:** {', '.join(missing)}")
        )
    return blocks


PATH_COST_COLUMNS: list[Column[Named[PathCost]]] = [
    Column("Scenario", lambda x: x.name),
    Column("Output tokens", lambda x: x.of.output_tokens_in_window),
    Column("Proxy / HAProxy", lambda x: x.of.cpu_s_per_1k_tokens["proxy"], digits(3)),
    Column("Ingress (router)", lambda x: x.of.cpu_s_per_1k_tokens["ingress"], digits(3)),
    Column("Serving path", lambda x: x.of.serving_path_cpu_s_per_1k_tokens, digits(3)),
    Column("Model replicas", lambda x: x.of.cpu_s_per_1k_tokens["replicas"], digits(3)),
    Column("All nodes", lambda x: x.of.nodes_cpu_s_per_1k_tokens, digits(3)),
]


def path_cost_section(run: Run) -> list[Block]:
    """CPU seconds per 1,000 output tokens: the serving path beside the replicas running the engine."""
    rows = [Named(s.name, cost) for s in ordered(run) if (cost := path_cost(s)) is not None]
    if not rows:
        return []
    return [
        Heading("What the serving path costs (CPU seconds per 1,000 output tokens, steady window)"),
        Paragraph(
            "Measured on every node from the processes' own CPU time: *Serving path* is Ray Serve's "
            "proxies and HAProxy plus the router layout's ingress replicas; *Model replicas* run the "
            "engine (in the direct layout they also answer HTTP themselves); *All nodes* is every "
            "process on the nodes, Ray's own daemons and a load generator sharing a node included. "
            "benchmarks/serve_overhead.md has the same figure for the bare engine."
        ),
        table(PATH_COST_COLUMNS, rows),
    ]


def _ramp(spec: ScenarioSpec) -> str:
    """Seconds over which closed-loop users started (the warm-up unless set; none in open loop)."""
    return "-" if spec.rate is not None else _f(spec.ramp)


def _spec(value: Callable[[ScenarioSpec], Any]) -> Callable[[Scenario], Any]:
    """A figure of the scenario's scenario.json; None (-) when it has none."""
    return lambda s: None if s.spec is None else value(s.spec)


CONFIG_COLUMNS: list[Column[Scenario]] = [
    Column("Scenario", lambda s: s.name),
    Column("Model", _spec(lambda spec: spec.model)),
    Column("URL", _spec(lambda spec: spec.url)),
    Column("API", _spec(lambda spec: spec.api)),
    Column("Users", _spec(lambda spec: spec.users)),
    Column("Rate (req/s)", _spec(lambda spec: spec.rate)),
    Column("Duration (s)", _spec(lambda spec: spec.duration_s)),
    Column("Warm-up (s)", _spec(lambda spec: spec.warmup_s)),
    Column("Ramp (s)", _spec(_ramp)),
    Column("Max tokens", _spec(lambda spec: spec.max_tokens)),
    Column("Temperature", _spec(lambda spec: spec.temperature)),
    Column("Seed", _spec(lambda spec: spec.seed)),
    Column("Prompts", _spec(lambda spec: spec.prompts or "files/prompts/prompts.jsonl")),
    Column("Workers", lambda s: s.summary.client.workers if s.summary else None),
]


def provenance_section(run: Run) -> list[Block]:
    """What the run was measured with: versions, the load machine's hardware, the command, the config."""
    prov = run.provenance
    blocks: list[Block] = [Heading("Run provenance")]
    if prov is None:
        blocks.append(Paragraph(f"No run.json in {run.path}: versions and hardware were not recorded."))
    else:
        hw = prov.hardware
        memory = hw.memory_bytes
        blocks.append(
            Bullets(
                [
                    f"Load generator host: {prov.host} ({prov.platform})",
                    f"Hardware: {hw.cpu_model or '-'}; {_f(hw.logical_cpus)} logical / "
                    f"{_f(hw.physical_cpus)} physical CPUs; "
                    f"memory {_f(None if memory is None else memory / 2**30)} GiB",
                    f"Python {prov.python}; " + ", ".join(f"{k} {v}" for k, v in prov.versions.items() if v),
                    f"Command: `{' '.join(prov.command)}`",
                ]
            )
        )
    return [
        *blocks,
        Paragraph("Configuration of each scenario (scenario.json):"),
        table(CONFIG_COLUMNS, ordered(run)),
    ]


def comparison(run: Run, other: Run) -> list[dict[str, Any]]:
    theirs = {s.name: scenario_row(s) for s in other.scenarios}
    result = []
    for s in ordered(run):
        mine, base = scenario_row(s), theirs.get(s.name)
        entry: dict[str, Any] = {"scenario": s.name, "in_other": base is not None}
        for key, _, figure in COMPARED:
            a, b = figure(mine), None if base is None else figure(base)
            entry[key] = {"this": a, "other": b, "delta": None, "delta_percent": None}
            if isinstance(a, int | float) and isinstance(b, int | float):
                entry[key]["delta"] = a - b
                entry[key]["delta_percent"] = 100.0 * (a - b) / b if b else None
        result.append(entry)
    return result


@dataclass(frozen=True)
class Comparison:
    """The other run and its charts (written under report/compare/), for the side-by-side view."""

    run: Run
    charts: list[Image]


def _compared(key: str) -> Callable[[dict[str, Any]], str]:
    """A comparison entry's figure: this run (other run, change)."""

    def cell(entry: dict[str, Any]) -> str:
        c = entry[key]
        if not entry["in_other"]:
            return _f(c["this"], 2)
        change = "-" if c["delta_percent"] is None else f"{c['delta_percent']:+.1f}%"
        return f"{_f(c['this'], 2)} ({_f(c['other'], 2)}, {change})"

    return cell


COMPARE_COLUMNS: list[Column[dict[str, Any]]] = [
    Column("Scenario", lambda entry: entry["scenario"]),
    *(Column(label, _compared(key)) for key, label, _ in COMPARED),
]


def compare_section(run: Run, charts: list[Image], other: Comparison) -> list[Block]:
    blocks: list[Block] = [
        Heading(f"Compared with {other.run.path}"),
        Paragraph("Cells: this run (other run, change)."),
        table(COMPARE_COLUMNS, comparison(run, other.run)),
        *noise_section(noise_comparison(_rows(run), _rows(other.run))),
    ]
    # The two runs side by side: their guide tables, then each chart of one beside the other's.
    for label, side in ((f"This run: {run.path.name}", run), (f"Other run: {other.run.path}", other.run)):
        blocks += [Heading(label, 3), *_demoted(guide_tables([scenario_row(s) for s in ordered(side)]))]
    theirs = {img.path.name: img for img in other.charts}
    pairs: list[list[str | Image]] = [[mine, theirs.get(mine.path.name) or "-"] for mine in charts]
    blocks += [Heading("Charts side by side", 3), Table([run.path.name, other.run.path.name], pairs)]
    return blocks


def _rows(run: Run) -> list[ScenarioRow]:
    return [scenario_row(s) for s in ordered(run)]


def _demoted(blocks: list[Block]) -> list[Block]:
    return [Heading(b.text, 4) if isinstance(b, Heading) else b for b in blocks]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})


def prometheus_of(run: Run) -> str | None:
    """The Prometheus the run's scenarios name (`meta.prometheus`, from the plan), if any."""
    return next((s.deployment.prometheus for s in ordered(run) if s.deployment.prometheus), None)


def write_report(
    run: Run, out: Path, compare: Run | None = None, prometheus: str | None = None
) -> list[Path]:
    """`prometheus`: where to ask for server-side figures (default: the URL the scenarios name)."""
    out.mkdir(parents=True, exist_ok=True)
    figures, missing = figures_for_run(prometheus or prometheus_of(run), ordered(run))
    server = ServerSection(figures, missing)
    charts = all_charts(run, out)
    other = None
    if compare is not None:
        (out / "compare").mkdir(exist_ok=True)
        other = Comparison(compare, [image(p, out) for p in all_charts(compare, out / "compare")])
    document = results_document(run)
    document["repeats"] = repeats_document(_rows(run))
    document["certificate"] = None if run.certificate is None else run.certificate.model_dump(mode="json")
    document["above_certified_event_rate"] = [
        {"name": name, "events_per_s": rate} for name, rate in above_certified(run, run.certificate)
    ]
    if run.host_certificates:  # load hosts: each one's own self-test (a run without them: no key)
        document["load_host_certificates"] = {
            host: cert.model_dump(mode="json") for host, cert in sorted(run.host_certificates.items())
        }
    document["server_figures_note"] = missing
    for entry in document["scenarios"]:
        found = figures.get(entry["scenario"])
        entry["server_figures"] = found.model_dump(mode="json") if found else None
    if compare is not None:
        document["compare"] = {
            "other_run": str(compare.path),
            "scenarios": comparison(run, compare),
            "noise": [row.document() for row in noise_comparison(_rows(run), _rows(compare))],
        }
    write_json_atomic(out / "results.json", document)
    write_csv(out / "results.csv", [r.flat() for r in _rows(run)])
    write_csv(out / "nodes.csv", [n.flat() for s in ordered(run) for n in node_rows(s)])
    blocks = report_blocks(run, [image(p, out) for p in charts], other, server)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(f"Benchmark report: {run.path.name}", blocks))
    written = [out / "report.md", out / "report.html", out / "results.json", out / "results.csv"]
    return [*written, out / "nodes.csv", *charts, *(img.path for img in (other.charts if other else []))]
