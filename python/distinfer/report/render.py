"""report.md, report.html, results.json, results.csv, nodes.csv and the charts, for one run (and a
comparison). The report's text and tables are built once as blocks (`report_blocks`); report.md and
the self-contained report.html are two renderings of them (blocks.py, html.py)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distinfer.report.blocks import (
    Block,
    Bullets,
    Figures,
    Heading,
    Image,
    Paragraph,
    Table,
    image,
    to_markdown,
)
from distinfer.report.capacity import capacity_section
from distinfer.report.charts import all_charts
from distinfer.report.fidelity import above_certified, fidelity_section
from distinfer.report.goodput import slo_section
from distinfer.report.html import to_html
from distinfer.report.planner import planner_section
from distinfer.report.prometheus import Pair, ServerFigures, figures_for_run
from distinfer.report.repeats import noise_comparison, noise_section, repeats_document, repeats_section
from distinfer.report.tables import (
    GUIDE_P95_TOKEN_LABEL,
    node_rows,
    ordered,
    path_cost,
    results_document,
    scenario_row,
)
from distinfer.results.base import write_json_atomic
from distinfer.results.load import Run, Scenario
from distinfer.results.scenario import ScenarioSpec

GUIDE_COLUMNS = (
    "Inference Nodes", "Devices", "GPUs", "Concurrent Requests", "RPS", "Tokens/s (output)",
    "Tokens/s (total)", "P95 Latency (s)", GUIDE_P95_TOKEN_LABEL, "TTFT P50 (ms)", "TTFT P95 (ms)",
    "TPOT P50 (ms)", "TPOT P95 (ms)", "Errors", "Valid", "Scenario",
)  # fmt: skip
NODE_COLUMNS = (
    "Scenario", "Node", "Avg CPU %", "Avg Memory %", "Avg GPU Util %", "Avg GPU Memory %",
    "Net rx avg (MB/s)", "Net rx max (MB/s)", "Net tx avg (MB/s)", "Net tx max (MB/s)", "Samples", "Note",
)  # fmt: skip
DETAIL_COLUMNS = (
    "Scenario", "Replicas", "Users", "Completed", "Achieved concurrency", "E2E P50/P95/P99 (s)",
    "ITL P99 (ms)",
)  # fmt: skip
E2E_KEYS = ("median_e2el_ms", "p95_e2el_ms", "p99_e2el_ms")
CONFIG_COLUMNS = (
    "Scenario", "Model", "URL", "API", "Users", "Rate (req/s)", "Duration (s)", "Warm-up (s)",
    "Ramp (s)", "Max tokens", "Temperature", "Seed", "Prompts", "Workers",
)  # fmt: skip
COMPARED = (
    ("request_throughput", "RPS"),
    ("output_throughput", "output tok/s"),
    ("p95_e2el_ms", "P95 latency ms"),
    ("median_ttft_ms", "TTFT P50 ms"),
    ("median_tpot_ms", "TPOT P50 ms"),
    ("failed", "errors"),
)


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def guide_cells(row: dict[str, Any]) -> list[str]:
    errors = row.get("errors_by_kind") or {}
    p95 = row.get("p95_e2el_ms")
    valid = {True: "yes", False: "NO", None: "unfinished"}[row.get("valid")]
    return [
        row["inference_nodes"],
        str(row["devices"]).replace(",", "<br>"),
        str(row["gpus"]),
        _f(row["max_concurrency"]),
        _f(row.get("request_throughput"), 2),
        _f(row.get("output_throughput")),
        _f(row.get("total_token_throughput")),
        _f(None if p95 is None else p95 / 1000, 2),
        _f(row.get("guide_p95_token_latency_ms"), 2),
        _f(row.get("median_ttft_ms")),
        _f(row.get("p95_ttft_ms")),
        _f(row.get("median_tpot_ms"), 2),
        _f(row.get("p95_tpot_ms"), 2),
        (", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "0") if row.get("finished") else "-",
        valid,
        row["scenario"],
    ]


def node_cells(row: dict[str, Any]) -> list[str]:
    mb = 1e6

    def rate(key: str) -> str:
        value = row.get(key)
        return _f(None if value is None else value / mb, 2)

    return [
        row["scenario"], row["host"], _f(row.get("avg_cpu_percent")), _f(row.get("avg_mem_percent")),
        _f(row.get("avg_gpu_util_percent")) if row.get("gpu_count") else "n/a",
        _f(row.get("avg_gpu_mem_percent")) if row.get("gpu_count") else "n/a",
        rate("net_rx_avg_bytes_per_s"), rate("net_rx_max_bytes_per_s"),
        rate("net_tx_avg_bytes_per_s"), rate("net_tx_max_bytes_per_s"), str(row["samples"]), row["note"],
    ]  # fmt: skip


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
    stand_ins = [s.name for s in ordered(run) if s.deployment.engine_stand_in]
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
    invalid = [r for r in rows if r.get("valid") is False]
    if invalid:
        blocks += [
            Heading("Invalid scenarios (the load generator could not keep up)"),
            Bullets([f"**{r['scenario']}**: " + "; ".join(r["invalid_reasons"]) for r in invalid]),
        ]
    unfinished = [r["scenario"] for r in rows if not r["finished"]]
    if unfinished:
        blocks.append(Paragraph(f"Unfinished scenarios (no summary.json): {', '.join(unfinished)}"))
    blocks += availability_section(run)
    blocks += where_the_time_goes(run)
    blocks += server_section(run, server or ServerSection({}, "Server-side figures: not asked for."))
    blocks += node_section(run)
    blocks += path_cost_section(run)
    blocks += [
        Heading("Scenario details"),
        Table(
            DETAIL_COLUMNS,
            [
                [
                    r["scenario"], _f(r.get("replicas")), _f(r["max_concurrency"]), _f(r.get("completed")),
                    _f(r.get("achieved_concurrency")),
                    "/".join(_f(None if r.get(k) is None else r[k] / 1000, 2) for k in E2E_KEYS),
                    _f(r.get("p99_itl_ms"), 2),
                ]
                for r in rows
            ],
        ),
    ]  # fmt: skip
    blocks += provenance_section(run)
    blocks += [Heading("Charts"), Figures(charts)]
    if compare is not None:
        blocks += compare_section(run, charts, compare)
    return blocks


def guide_tables(rows: list[dict[str, Any]]) -> list[Block]:
    """The guide's scalability table, one per batch size per replica."""
    batches: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = str(row["users_per_replica"]) if row.get("users_per_replica") else "unspecified"
        batches.setdefault(key, []).append(row)
    blocks: list[Block] = []
    for number, (batch, group) in enumerate(batches.items(), start=1):
        blocks += [
            Heading(f"{number}. Scalability results for batch size of {batch} per replica"),
            Table(GUIDE_COLUMNS, [list(guide_cells(r)) for r in group]),
        ]
    return blocks


AVAILABILITY_COLUMNS = (
    "Scenario", "Failed", "Errors began (s)", "Errors ended (s)", "Seconds with errors",
    "SLO violated (s)", "Replicas at start -> lowest", "Replica lost at (s)", "Back at (s)",
    "Server lost at (s)",
)  # fmt: skip


def availability_section(run: Run) -> list[Block]:
    """Faults during a scenario (seconds after its load began): shown only when something happened."""
    rows: list[list[str | Image]] = []
    stories: list[str] = []
    for s in ordered(run):
        a = s.summary.availability if s.summary else None
        if a is None:
            continue
        dropped = [c for c in a.replicas if c.dropped_at_s is not None]
        if not a.failed and not dropped and a.endpoint_lost_at_s is None:
            continue
        course = dropped[0] if dropped else (a.replicas[0] if a.replicas else None)
        back = "-" if course is None or course.dropped_at_s is None else _f(course.back_at_s)
        if course is not None and course.dropped_at_s is not None and course.back_at_s is None:
            back = "not back"
        rows.append(
            [
                s.name, str(a.failed), _f(a.first_error_s), _f(a.last_error_s),
                str(a.error_seconds), _f(a.slo_violated_seconds),
                "-" if course is None else f"{course.at_start} -> {course.lowest}",
                "-" if course is None else _f(course.dropped_at_s), back, _f(a.endpoint_lost_at_s),
            ]
        )  # fmt: skip
        stories.append(f"**{s.name}**: {a.summary}")
    if not rows:
        return []
    return [
        Heading("Faults during the load (seconds after each scenario's load began)"),
        Table(AVAILABILITY_COLUMNS, rows),
        Bullets(stories),
    ]


LEG_COLUMNS = (
    "Leg", "Its share of the TTFT P50 (ms)", "Share", "Leg's own P50 (ms)", "Own P95 (ms)", "Own mean (ms)",
)  # fmt: skip


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
        rows: list[list[str | Image]] = [
            [
                leg.label, _f(leg.at_median_ms, 2), _share(leg.at_median_ms, total), _f(leg.own_ms.p50, 2),
                _f(leg.own_ms.p95, 2), _f(leg.own_ms.mean, 2),
            ]
            for leg in split.legs
        ]  # fmt: skip
        rows.append(
            [
                "**TTFT (client)**", f"**{_f(total, 2)}** (TTFT P50 {_f(split.ttft_ms.p50, 2)})", "100%",
                _f(split.ttft_ms.p50, 2), _f(split.ttft_ms.p95, 2), _f(split.ttft_ms.mean, 2),
            ]
        )  # fmt: skip
        clocks = (
            "one host, one clock"
            if split.one_clock
            else f"hosts apart; ingress clock minus client clock estimated {_f(split.clock_offset_ms, 2)} ms"
        )
        blocks += [
            Heading(s.name, 3),
            Table(LEG_COLUMNS, rows),
            Paragraph(
                f"{split.requests} requests with server timing ({split.without_timing} without); "
                f"clocks: {clocks}; requests with times out of order: {split.out_of_order}; engine "
                f"{_engines(s)}."
            ),
        ]
    return blocks


SERVER_COLUMNS = (
    "Scenario", "Serve queue wait avg / P95 (ms)", "Queued at handles avg / max",
    "Ongoing per replica avg / max", "Engine running avg / max", "Engine waiting avg / max",
    "KV cache avg / max (%)", "GPU util avg / max (%)", "GPU memory avg / max (%)", "GPU energy (J)",
    "Tokens per joule",
)  # fmt: skip


@dataclass(frozen=True)
class ServerSection:
    """What Prometheus said per scenario, or why it said nothing."""

    figures: dict[str, ServerFigures]
    missing: str | None


def _pair_cell(pair: Pair, digits: int = 1) -> str:
    return f"{_f(pair.avg, digits)} / {_f(pair.max, digits)}"


def server_section(run: Run, server: ServerSection) -> list[Block]:
    """Per scenario, the serving path's and the engines' own figures over its window (Prometheus)."""
    blocks: list[Block] = [Heading("Server-side figures (Prometheus, steady window)")]
    if server.missing:
        return [*blocks, Paragraph(server.missing)]
    rows: list[list[str | Image]] = []
    for s in ordered(run):
        f = server.figures.get(s.name)
        if f is None:
            continue
        energy = "-" if f.energy_j is None else f"{_f(f.energy_j)} ({f.energy_source})"
        rows.append(
            [
                s.name, _pair_cell(f.serve_queue_wait_ms, 2), _pair_cell(f.queued_at_handles),
                _pair_cell(f.ongoing_per_replica), _pair_cell(f.engine_running), _pair_cell(f.engine_waiting),
                _pair_cell(f.kv_cache_percent), _pair_cell(f.gpu_util_percent), _pair_cell(f.gpu_mem_percent),
                energy, _f(f.tokens_per_joule, 3),
            ]
        )  # fmt: skip
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
        Table(SERVER_COLUMNS, rows, empty="No finished scenario to ask about."),
        *engine_latency_section(run, server),
    ]


def engine_latency_section(run: Run, server: ServerSection) -> list[Block]:
    """The engine's own TTFT histogram beside the client's exact TTFT, and vLLM's prefix-cache hits."""
    rows: list[list[str | Image]] = []
    for s in ordered(run):
        f = server.figures.get(s.name)
        if (
            f is None
            or s.summary is None
            or (f.engine_ttft_p50_ms is None and f.prefix_cache_hit_percent is None)
        ):
            continue
        ttft = s.summary.metrics.ttft_ms
        rows.append(
            [
                s.name, f"{_f(f.engine_ttft_p50_ms)} / {_f(f.engine_ttft_p99_ms)}",
                f"{_f(ttft.p50 if ttft else None)} / {_f(ttft.p99 if ttft else None)}",
                _f(f.prefix_cache_hit_percent),
            ]
        )  # fmt: skip
    if not rows:
        return []
    return [
        Heading("The engine's own latency beside the client's (Prometheus)"),
        Paragraph(
            "The engine's own view of time to first token (its histogram, from the replica's receipt; "
            "percentiles interpolated within the histogram's buckets) beside the client's (exact, from "
            "every record, from the send), and the share of prompt tokens vLLM found in its prefix cache."
        ),
        Table(
            ["Scenario", "Engine TTFT P50 / P99 (ms)", "Client TTFT P50 / P99 (ms)", "Prefix cache hit (%)"],
            rows,
        ),
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
        Table(NODE_COLUMNS, [list(node_cells(n)) for n in nodes], empty="No node samples in this run."),
    ]
    missing = [f"{n['host']} ({n['scenario']})" for n in nodes if n["note"].startswith("MISSING")]
    if missing:
        blocks.append(
            Paragraph(f"**Nodes listed in the scenarios but without samples:** {', '.join(missing)}")
        )
    return blocks


PATH_COST_COLUMNS = (
    "Scenario", "Output tokens", "Proxy / HAProxy", "Ingress (router)", "Serving path", "Model replicas",
    "All nodes",
)  # fmt: skip


def path_cost_section(run: Run) -> list[Block]:
    """CPU seconds per 1,000 output tokens: the serving path beside the replicas running the engine."""
    rows: list[list[str | Image]] = []
    for s in ordered(run):
        cost = path_cost(s)
        if cost is None:
            continue
        per = cost["cpu_s_per_1k_tokens"]
        rows.append(
            [
                s.name, str(cost["output_tokens_in_window"]), _f(per["proxy"], 3), _f(per["ingress"], 3),
                _f(cost["serving_path_cpu_s_per_1k_tokens"], 3), _f(per["replicas"], 3),
                _f(cost["nodes_cpu_s_per_1k_tokens"], 3),
            ]
        )  # fmt: skip
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
        Table(PATH_COST_COLUMNS, rows),
    ]


def config_cells(s: Scenario) -> list[str]:
    spec = s.spec
    workers = _f(s.summary.client.workers) if s.summary else "-"
    if spec is None:
        return [s.name, *["-"] * 12, workers]
    return [
        s.name, spec.model, spec.url, spec.api, _f(spec.users), _f(spec.rate), _f(spec.duration_s),
        _f(spec.warmup_s), _ramp(spec), _f(spec.max_tokens), _f(spec.temperature), _f(spec.seed),
        spec.prompts or "files/prompts/prompts.jsonl", workers,
    ]  # fmt: skip


def _ramp(spec: ScenarioSpec) -> str:
    """Seconds over which closed-loop users started (the warm-up unless set; none in open loop)."""
    return "-" if spec.rate is not None else _f(spec.ramp)


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
        Table(CONFIG_COLUMNS, [list(config_cells(s)) for s in ordered(run)]),
    ]


def comparison(run: Run, other: Run) -> list[dict[str, Any]]:
    theirs = {s.name: scenario_row(s) for s in other.scenarios}
    result = []
    for s in ordered(run):
        mine, base = scenario_row(s), theirs.get(s.name)
        entry: dict[str, Any] = {"scenario": s.name, "in_other": base is not None}
        for key, _ in COMPARED:
            a, b = mine.get(key), (base or {}).get(key)
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


def compare_section(run: Run, charts: list[Image], other: Comparison) -> list[Block]:
    table = []
    for entry in comparison(run, other.run):
        cells = [entry["scenario"]]
        for key, _ in COMPARED:
            c = entry[key]
            change = "-" if c["delta_percent"] is None else f"{c['delta_percent']:+.1f}%"
            cells.append(
                f"{_f(c['this'], 2)} ({_f(c['other'], 2)}, {change})"
                if entry["in_other"]
                else _f(c["this"], 2)
            )
        table.append(cells)
    blocks: list[Block] = [
        Heading(f"Compared with {other.run.path}"),
        Paragraph("Cells: this run (other run, change)."),
        Table(["Scenario", *(label for _, label in COMPARED)], table),
        *noise_section(noise_comparison(_rows(run), _rows(other.run))),
    ]
    # The two runs side by side: their guide tables, then each chart of one beside the other's.
    for label, side in ((f"This run: {run.path.name}", run), (f"Other run: {other.run.path}", other.run)):
        blocks += [Heading(label, 3), *_demoted(guide_tables([scenario_row(s) for s in ordered(side)]))]
    theirs = {img.path.name: img for img in other.charts}
    pairs: list[list[str | Image]] = [[mine, theirs.get(mine.path.name) or "-"] for mine in charts]
    blocks += [Heading("Charts side by side", 3), Table([run.path.name, other.run.path.name], pairs)]
    return blocks


def _rows(run: Run) -> list[dict[str, Any]]:
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
    write_csv(out / "results.csv", [scenario_row(s) for s in ordered(run)])
    write_csv(out / "nodes.csv", [n for s in ordered(run) for n in node_rows(s)])
    blocks = report_blocks(run, [image(p, out) for p in charts], other, server)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(f"Benchmark report: {run.path.name}", blocks))
    written = [out / "report.md", out / "report.html", out / "results.json", out / "results.csv"]
    return [*written, out / "nodes.csv", *charts, *(img.path for img in (other.charts if other else []))]
