"""`distinfer bench run|sweep`: drive load, write raw records and a summary per scenario."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from distinfer.config import ConfigError

T = TypeVar("T")

ApiKeyOpt = Annotated[
    str | None, typer.Option(envvar="DISTINFER_API_KEY", help="Bearer token (or env DISTINFER_API_KEY).")
]

EXIT_STATUSES = """Exit status: 0 the run finished and is valid; 2 refused before any load (bad options, an
unusable results directory, or the probe request found the URL unreachable, the model unknown or
the API key missing or wrong; the message names the fix); 3 no request succeeded; 4 the saturation
guard marked the run INVALID (summary.json says why); 5 a results write failed mid-run (no
summary.json: a resumed sweep runs the scenario again). A sweep exits with the worst of its
scenarios' statuses."""

EXIT_OK, EXIT_ALL_FAILED, EXIT_INVALID, EXIT_RESULTS_LOST = 0, 3, 4, 5

bench = typer.Typer(
    help="Drive Locust load at an OpenAI-compatible server and record every request.\n\n" + EXIT_STATUSES
)


def _spec(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    from distinfer.bench.scenario import ScenarioSpec

    try:
        return ScenarioSpec.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'scenario'}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ConfigError(f"invalid bench options: {problems}") from None


@bench.command("run")
def run_command(
    url: Annotated[str, typer.Option(help="Server base URL, e.g. http://127.0.0.1:8000")],
    model: Annotated[str, typer.Option(help="The `model` field to send.")],
    users: Annotated[int, typer.Option(help="Closed loop: concurrent users. Open loop: the in-flight cap.")],
    duration: Annotated[float, typer.Option(help="Seconds of load, warm-up included.")],
    out: Annotated[Path, typer.Option(help="Scenario directory (results/<run-id>/scenarios/<scenario>).")],
    prompts: Annotated[Path | None, typer.Option(help="Prompts JSONL (default: files/prompts).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Output tokens per request.")] = 256,
    temperature: Annotated[float, typer.Option()] = 1.0,
    warmup: Annotated[float, typer.Option(help="Seconds at the start left out of every metric.")] = 0.0,
    ramp: Annotated[
        float | None,
        typer.Option(help="Closed loop: seconds over which users start, evenly (default: the warm-up)."),
    ] = None,
    drain_timeout: Annotated[float, typer.Option(help="Seconds in-flight requests may finish.")] = 300.0,
    api: Annotated[str, typer.Option(help="chat or completions.")] = "chat",
    seed: Annotated[int, typer.Option(help="Seeds prompt choice and open-loop arrivals.")] = 0,
    api_key: ApiKeyOpt = None,
    rate: Annotated[float | None, typer.Option(help="Open loop: Poisson arrivals per second.")] = None,
    scenario: Annotated[str, typer.Option(help="Scenario name recorded with the results.")] = "default",
    meta: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the report (repeat).")] = None,
    slo: Annotated[str | None, typer.Option(help="Goodput SLOs in ms: ttft=500,tpot=50[,e2el=...].")] = None,
    workers: Annotated[int | None, typer.Option(help="Load processes (default: sized).")] = None,
    ignore_eos: Annotated[bool, typer.Option(help="Ask for exactly max_tokens (vLLM's ignore_eos).")] = True,
    timeout: Annotated[float, typer.Option(help="Longest silence allowed inside one response.")] = 600.0,
) -> None:
    """Run one scenario: records.jsonl as requests end, summary.json at the end.

    Before any load, the results directory is checked and one probe request is sent. Exit status:
    0 valid; 2 refused before any load; 3 no request succeeded; 4 INVALID (saturation guard); 5 a
    results write failed mid-run (no summary).
    """
    from distinfer.bench.metrics import parse_slo
    from distinfer.bench.runner import run_scenario
    from distinfer.bench.scenario import parse_meta

    try:
        meta_map = parse_meta(meta or [])
        slo_model = parse_slo(slo) if slo else None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    fields = {
        "name": scenario,
        "model": model,
        "url": url,
        "users": users,
        "duration_s": duration,
        "warmup_s": warmup,
        "ramp_s": ramp,
        "drain_timeout_s": drain_timeout,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "api": api,
        "rate": rate,
        "prompts": str(prompts) if prompts else None,
        "seed": seed,
        "ignore_eos": ignore_eos,
        "timeout_s": timeout,
        "workers": workers,
        "slo": slo_model,
        "meta": meta_map,
    }
    for key in ("replicas", "users_per_replica"):
        if key in meta_map:
            try:
                fields[key] = int(meta_map[key])
            except ValueError:
                raise ConfigError(f"--meta {key}={meta_map[key]!r} must be a whole number") from None
    spec = _spec(fields)
    _check_prompts(spec.prompts)
    summary = _guarded(lambda: run_scenario(spec, out, api_key))
    _print_summary(summary)
    raise typer.Exit(exit_status(summary))


@bench.command("sweep")
def sweep_command(
    scenarios: Annotated[Path, typer.Option(help="Scenarios YAML (files/scenarios/*.yaml).")],
    out: Annotated[Path, typer.Option(help="Run directory (results/<run-id>); re-running resumes it.")],
    url: Annotated[str | None, typer.Option(help="Override every scenario's url.")] = None,
    model: Annotated[str | None, typer.Option(help="Override every scenario's model.")] = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Run each unfinished scenario of a file; finished ones (summary.json present) are skipped.

    A probe failure or a failed write stops the sweep (scenarios already finished stay); a
    scenario with no success or an INVALID one is finished and the sweep goes on. Exit status: the
    worst of the scenarios run (0, 3 no request succeeded, 4 INVALID), or 2 / 5 as for `run`.
    """
    from distinfer.bench.sweep import load_sweep, run_sweep

    overrides = {k: v for k, v in (("url", url), ("model", model)) if v is not None}
    specs = load_sweep(scenarios, overrides)
    for spec in specs:
        _check_prompts(spec.prompts)
    ran = _guarded(lambda: run_sweep(specs, out, api_key))
    typer.echo(f"ran {len(ran)} scenario(s): {', '.join(ran) or 'none (all finished)'}")
    statuses = {name: exit_status(summary) for name, summary in ran.items()}
    for name, status in statuses.items():
        if status != EXIT_OK:
            typer.secho(f"scenario {name}: exit status {status}", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(max(statuses.values(), default=EXIT_OK))


def exit_status(summary: dict[str, Any]) -> int:
    """0 valid, 3 when no request succeeded, 4 when the guard marked the run invalid."""
    if summary["metrics"]["completed"] == 0:
        return EXIT_ALL_FAILED
    return EXIT_OK if summary["valid"] else EXIT_INVALID


def _guarded(action: Callable[[], T]) -> T:
    from distinfer.bench.storage import ResultsWriteError

    try:
        return action()
    except ResultsWriteError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_RESULTS_LOST) from None


def _check_prompts(path: str | None) -> None:
    from distinfer.bench.prompts import load_prompts

    try:
        load_prompts(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _print_summary(summary: dict[str, Any]) -> None:
    m = summary["metrics"]
    line = {
        "valid": summary["valid"],
        "completed": m["completed"],
        "failed": m["failed"],
        "request_throughput": round(m["request_throughput"], 3),
        "output_throughput": round(m["output_throughput"], 1),
        "p50_ttft_ms": m["ttft_ms"]["p50"],
        "p50_tpot_ms": m["tpot_ms"]["p50"],
        "p95_e2el_ms": m["e2el_ms"]["p95"],
    }
    json.dump(line, sys.stdout)
    sys.stdout.write("\n")
    for reason in summary["invalid_reasons"]:
        typer.secho(f"INVALID: {reason}", fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
