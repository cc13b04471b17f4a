"""PNG charts a person can read at a glance. matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distinfer.report.tables import Latency, ScenarioRow, _physical_rates, ordered, scenario_row
from distinfer.results.autoscaling import read_replicas
from distinfer.results.load import Run, Scenario
from distinfer.results.metrics import steady_population, tpot_ms, ttft_ms
from distinfer.results.nodes import NodeSample
from distinfer.results.records import RECORDS_FILE, iter_records
from distinfer.results.workload import level_at


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def _save(fig: Any, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _by_batch(rows: list[ScenarioRow]) -> dict[str, list[ScenarioRow]]:
    groups: dict[str, list[ScenarioRow]] = {}
    for row in rows:
        if row.request_throughput is None:
            continue
        label = f"{row.users_per_replica} per replica" if row.users_per_replica else "unspecified"
        groups.setdefault(label, []).append(row)
    return groups


def throughput_vs_replicas(run: Run, out: Path) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    rows = [scenario_row(s) for s in ordered(run)]
    fig, (ax_tok, ax_rps) = plt.subplots(1, 2, figsize=(10, 4))
    for label, group in _by_batch(rows).items():
        group = sorted(group, key=lambda r: r.replicas or r.max_concurrency or 0)
        x = [r.replicas or r.max_concurrency for r in group]
        ax_tok.plot(x, [r.output_throughput for r in group], marker="o", label=f"output, {label}")
        ax_tok.plot(
            x, [r.total_token_throughput for r in group], marker=".", ls="--", label=f"total, {label}"
        )
        ax_rps.plot(x, [r.request_throughput for r in group], marker="o", label=label)
    has_replicas = any(r.replicas for r in rows)
    for ax, title, ylabel in (
        (ax_tok, "Token throughput", "tokens/s"),
        (ax_rps, "Request throughput", "requests/s"),
    ):
        ax.set_title(title)
        ax.set_xlabel("replicas" if has_replicas else "concurrent users")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # replicas and users are whole numbers
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    return _save(fig, out / "throughput_vs_replicas.png", "Throughput as the cluster grows (steady window)")


def latency_vs_concurrency(run: Run, out: Path) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in (scenario_row(s) for s in ordered(run)) if r.e2el.median is not None]
    rows.sort(key=lambda r: r.max_concurrency or 0)
    x = [r.max_concurrency or 0 for r in rows]
    fig, (ax_e2e, ax_tok) = plt.subplots(1, 2, figsize=(10, 4))
    percentiles: tuple[tuple[str, str, Callable[[Latency], Any]], ...] = (
        ("median", "-", lambda d: d.median),
        ("p95", "--", lambda d: d.p95),
        ("p99", ":", lambda d: d.p99),
    )
    for p, style, at in percentiles:
        ax_e2e.plot(x, [at(r.e2el) / 1000 for r in rows], ls=style, marker="o", label=f"e2e {p}")
        ax_tok.plot(x, [at(r.ttft) for r in rows], ls=style, marker="o", color="C1", label=f"TTFT {p}")
        ax_tok.plot(x, [at(r.tpot) for r in rows], ls=style, marker="s", color="C2", label=f"TPOT {p}")
    ax_e2e.set_title("Request latency")
    ax_e2e.set_ylabel("seconds")
    ax_tok.set_title("Time to first token and per output token")
    ax_tok.set_ylabel("milliseconds")
    ax_tok.set_yscale("log")
    for ax in (ax_e2e, ax_tok):
        ax.set_xlabel("concurrent users")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(x)) > 1 and max(x) / max(min(x), 1) >= 8:
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    ax_e2e.set_ylim(bottom=0)
    title = "Latency percentiles vs concurrency (exact, from every request)"
    return _save(fig, out / "latency_vs_concurrency.png", title)


def steady_latencies(s: Scenario) -> tuple[list[float], list[float]]:
    """TTFT and TPOT (ms) of every successful request of the steady window, from records.jsonl."""
    if s.folder is None or s.window is None:
        return [], []
    good = [r for r in steady_population(iter_records(s.folder / RECORDS_FILE), *s.window) if r.ok]
    ttft = [t for t in (ttft_ms(r) for r in good) if t is not None]
    return ttft, [t for t in (tpot_ms(r) for r in good) if t is not None]


def token_latency_distributions(run: Run, out: Path) -> Path | None:
    """Each scenario's TTFT and TPOT as cumulative distributions (every request, no binning)."""
    plt = _pyplot()
    import numpy as np
    from matplotlib.ticker import NullFormatter

    latencies = {s.name: steady_latencies(s) for s in ordered(run)}
    if not any(ttft or tpot for ttft, tpot in latencies.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for index, title in enumerate(("Time to first token", "Time per output token")):
        ax = axes[index]
        for name, values in latencies.items():
            data = np.sort(np.asarray(values[index]))
            if data.size:
                ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=name)
        ax.set_title(title)
        ax.set_xlabel("milliseconds (log)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
        ax.set_ylabel("share of requests at or below")
        ax.set_ylim(0, 1.02)
        for share in (0.5, 0.95):
            ax.axhline(share, color="grey", lw=0.6, ls=":")
        ax.legend(fontsize=7)
    title = "TTFT and TPOT distributions (steady window; dotted: P50, P95)"
    return _save(fig, out / "ttft_tpot_distribution.png", title)


# A scenario's point by its SLO verdict: marker, colour, legend.
SLO_MARKERS = {
    True: ("o", "C2", "meets the SLO"),
    False: ("x", "C3", "misses the SLO"),
    None: ("s", "grey", "no SLO set"),
}


def pareto_chart(run: Run, out: Path) -> Path | None:
    """MLPerf Endpoints' view: output tokens/s against tokens/s per user, the front as a step."""
    from distinfer.report.goodput import configuration, pareto_front, tokens_per_user

    rows = [r for r in (scenario_row(s) for s in ordered(run)) if tokens_per_user(r) is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    front = pareto_front(rows)
    # For each interactivity, the most throughput reached at it or faster: a falling staircase.
    xs = [tokens_per_user(r) or 0.0 for r in front]
    ys = [r.output_throughput or 0.0 for r in front]
    ax.step([0.0, *xs], [ys[0], *ys], where="pre", color="C0", lw=1.5, label="Pareto front")
    ax.plot([xs[-1], xs[-1]], [ys[-1], 0], color="C0", lw=1.5)
    for row in rows:
        x, y = tokens_per_user(row), row.output_throughput
        marker, color, _ = SLO_MARKERS[row.slo_met]
        ax.scatter([x], [y], marker=marker, color=color, s=40, zorder=3)
        ax.annotate(configuration(row), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for meets, (marker, color, label) in SLO_MARKERS.items():
        if any(r.slo_met is meets for r in rows):
            ax.scatter([], [], marker=marker, color=color, label=label)
    ax.set_xlabel("tokens/s per user (1000 / P90 TPOT)")
    ax.set_ylabel("system output tokens/s")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    title = "Throughput against interactivity (labels: replicas x per-replica cap)"
    return _save(fig, out / "pareto_front.png", title)


OUTCOME_MARKERS = {"pass": ("o", "C2"), "fail": ("x", "C3"), "invalid": ("^", "C1")}


def capacity_chart(run: Run, out: Path) -> Path | None:
    """Each capacity search's steps: share of requests meeting the SLO against the rate asked."""
    if not run.capacity:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for index, result in enumerate(run.capacity):
        colour = f"C{index % 10}"
        steps = sorted(result.steps, key=lambda st: st.rate)
        shown = [st for st in steps if st.share_meeting is not None]
        ax.plot(
            [st.rate for st in shown], [100 * (st.share_meeting or 0) for st in shown], color=colour, lw=0.8
        )
        for step in shown:
            marker, edge = OUTCOME_MARKERS[step.outcome]
            ax.scatter([step.rate], [100 * (step.share_meeting or 0)], marker=marker, color=edge, zorder=3)
        ax.axhline(result.slo.percentile, color=colour, ls=":", lw=0.8)
        if result.capacity_rate is not None:
            ax.axvline(result.capacity_rate, color=colour, ls="--", lw=0.8, label=f"{result.name}: capacity")
    for outcome, (marker, colour) in OUTCOME_MARKERS.items():
        ax.scatter([], [], marker=marker, color=colour, label=outcome)
    ax.set_xscale("log")
    ax.set_xlabel("Poisson arrivals asked (requests/s, log)")
    ax.set_ylabel("requests meeting the SLO (%)")
    ax.legend(fontsize=7)
    return _save(fig, out / "capacity_search.png", "Capacity searches (dotted: the SLO's percentile)")


def node_utilisation(run: Run, out: Path) -> Path | None:
    plt = _pyplot()
    series: dict[str, list[NodeSample]] = {}
    for s in run.scenarios:
        for host, node in s.nodes.items():
            series.setdefault(host, []).extend(node.samples)
    if not series:
        return None
    t0 = min(x.time for samples in series.values() for x in samples) if any(series.values()) else 0.0
    panels: tuple[tuple[str, Callable[[NodeSample], float | None]], ...] = (
        ("CPU %", lambda x: x.cpu_percent),
        ("memory %", lambda x: x.mem_percent),
        ("GPU util % (mean of GPUs)", _gpu_mean("util_percent")),
        ("network rx+tx MB/s", lambda x: sum(_physical_rates(x)) / 1e6),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 9), sharex=True)
    for ax, (title, value) in zip(axes, panels, strict=True):
        for host, samples in sorted(series.items()):
            samples = sorted(samples, key=lambda x: x.time)
            pairs = [(x.time - t0, value(x)) for x in samples]
            pairs = [(t, v) for t, v in pairs if v is not None]
            if pairs:
                ax.plot([t for t, _ in pairs], [v for _, v in pairs], lw=1, label=host)
        for s in run.scenarios:
            if s.window:
                ax.axvspan(s.window[0] - t0, s.window[1] - t0, color="grey", alpha=0.12)
        ax.set_ylabel(title, fontsize=8)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[0].set_title("Each node over time (shaded: scenarios' steady windows)")
    axes[-1].set_xlabel("seconds since the first sample")
    if not any(x.gpus for samples in series.values() for x in samples):
        axes[2].text(
            0.5, 0.5, "no GPU on these nodes", transform=axes[2].transAxes, ha="center", color="grey"
        )
    fig.tight_layout()
    path = out / "node_utilisation.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _gpu_mean(key: str) -> Callable[[NodeSample], float | None]:
    def value(sample: NodeSample) -> float | None:
        values = [v for v in (getattr(g, key) for g in sample.gpus) if v is not None]
        return sum(values) / len(values) if values else None

    return value


def autoscaling_chart(run: Run, out: Path) -> Path | None:
    """Each autoscaling scenario's replicas (RUNNING, Serve's target) and its load's level over time."""
    shown = [
        s
        for s in ordered(run)
        if s.spec is not None and s.spec.autoscaling is not None and s.folder is not None
    ]
    series = []
    for s in shown:
        assert s.spec is not None and s.folder is not None
        samples, _ = read_replicas(s.folder, s.spec.model)
        start = s.summary.started if s.summary is not None else (samples[0].t if samples else 0.0)
        if samples:
            series.append((s, samples, start))
    if not series:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(series), 1, figsize=(8, 3 * len(series)), squeeze=False)
    for ax, (s, samples, start) in zip(axes[:, 0], series, strict=True):
        assert s.spec is not None
        t = [x.t - start for x in samples]
        ax.step(t, [x.running for x in samples], where="post", label="running")
        if any(x.target is not None for x in samples):
            ax.step(t, [x.target for x in samples], where="post", ls="--", label="Serve's target")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{s.name}: replicas")
        ax.set_xlabel("seconds after the load began")
        if s.spec.steps:
            level = ax.twinx()
            grid = [i * s.spec.duration_s / 400 for i in range(401)]
            unit = "req/s" if s.spec.rate_steps else "users"
            level.plot(grid, [level_at(s.spec.steps, x) for x in grid], color="grey", lw=0.8, label=unit)
            level.set_ylabel(f"load ({unit})")
            level.grid(False)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out / "autoscaling.png", "Autoscaling: replicas against the load (grey)")


def all_charts(run: Run, out: Path) -> list[Path]:
    charts: list[Path | None] = []
    if run.scenarios:
        charts += [throughput_vs_replicas(run, out), latency_vs_concurrency(run, out)]
        charts += [token_latency_distributions(run, out), pareto_chart(run, out)]
    charts += [capacity_chart(run, out), node_utilisation(run, out), autoscaling_chart(run, out)]
    return [path for path in charts if path is not None]
