"""`distinfer bench run|sweep`: drive load, write raw records and a summary per scenario."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from distinfer.config import ConfigError

if TYPE_CHECKING:
    from distinfer.results import Summary

T = TypeVar("T")

ApiKeyOpt = Annotated[
    str | None, typer.Option(envvar="DISTINFER_API_KEY", help="Bearer token (or env DISTINFER_API_KEY).")
]
ApiKeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="DISTINFER_API_KEY_FILE",
        help="File holding the bearer token (or env DISTINFER_API_KEY_FILE); wins over --api-key.",
    ),
]

ProgressOpt = Annotated[
    float,
    typer.Option(
        "--progress-interval",
        help="Seconds between progress lines when stderr is not a terminal (on one, a live bar).",
        min=0.5,
    ),
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
    out: Annotated[Path, typer.Option(help="Scenario directory (results/<run-id>/scenarios/<scenario>).")],
    spec: Annotated[
        str | None,
        typer.Option(
            help="A scenario as JSON (the fields of a scenarios file's entry; - reads standard input); "
            "the options below override its fields."
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Server base URL, e.g. http://127.0.0.1:8000")] = None,
    model: Annotated[str | None, typer.Option(help="The `model` field to send.")] = None,
    users: Annotated[
        int | None, typer.Option(help="Closed loop: concurrent users. Open loop: the in-flight cap.")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds of load, warm-up included.")] = None,
    prompts: Annotated[Path | None, typer.Option(help="Prompts JSONL (default: files/prompts).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Output tokens per request [256].")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature [1.0].")] = None,
    warmup: Annotated[
        float | None, typer.Option(help="Seconds at the start left out of every metric [0].")
    ] = None,
    ramp: Annotated[
        float | None,
        typer.Option(help="Closed loop: seconds over which users start, evenly (default: the warm-up)."),
    ] = None,
    drain_timeout: Annotated[
        float | None, typer.Option(help="Seconds in-flight requests may finish [300].")
    ] = None,
    api: Annotated[str | None, typer.Option(help="chat or completions [chat].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds prompt choice and open-loop arrivals [0].")] = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    rate: Annotated[float | None, typer.Option(help="Open loop: Poisson arrivals per second.")] = None,
    scenario: Annotated[str | None, typer.Option(help="Scenario name recorded with the results.")] = None,
    meta: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the report (repeat).")] = None,
    slo: Annotated[str | None, typer.Option(help="Goodput SLOs in ms: ttft=500,tpot=50[,e2el=...].")] = None,
    workers: Annotated[int | None, typer.Option(help="Load processes (default: sized).")] = None,
    ignore_eos: Annotated[
        bool | None, typer.Option(help="Ask for exactly max_tokens (vLLM's ignore_eos) [on].")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Longest silence allowed inside one response [600].")
    ] = None,
    progress_interval: ProgressOpt = 10.0,
) -> None:
    """Run one scenario: records.jsonl as requests end, summary.json at the end.

    Either --spec (e.g. what `distinfer plan` resolved) or at least --url, --model, --users and
    --duration.

    Before any load, the results directory is checked and one probe request is sent. Exit status:
    0 valid; 2 refused before any load; 3 no request succeeded; 4 INVALID (saturation guard); 5 a
    results write failed mid-run (no summary).
    """
    from distinfer.bench.metrics import parse_slo
    from distinfer.bench.progress import make_view
    from distinfer.bench.runner import run_scenario
    from distinfer.bench.scenario import parse_meta

    fields = _read_spec(spec) if spec else {}
    try:
        meta_map = {**fields.get("meta", {}), **parse_meta(meta or [])}
        slo_model = parse_slo(slo) if slo else None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    given = {
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
    }
    fields.update({key: value for key, value in given.items() if value is not None})
    fields["meta"] = meta_map
    for key in ("replicas", "users_per_replica"):
        if key in meta_map and key not in fields:
            try:
                fields[key] = int(meta_map[key])
            except ValueError:
                raise ConfigError(f"--meta {key}={meta_map[key]!r} must be a whole number") from None
    missing = [f"--{flag}" for flag, key in _REQUIRED if key not in fields]
    if missing:
        raise ConfigError(f"bench run needs {', '.join(missing)} (or a --spec that has them)")
    run_spec = _spec(fields)
    _check_prompts(run_spec.prompts)
    bearer = _api_key(api_key, api_key_file)
    summary = _guarded(lambda: run_scenario(run_spec, out, bearer, make_view(progress_interval)))
    _print_summary(summary)
    raise typer.Exit(exit_status(summary))


_REQUIRED = (("url", "url"), ("model", "model"), ("users", "users"), ("duration", "duration_s"))


def _read_spec(source: str) -> dict[str, Any]:
    """A scenario given as JSON (a file, or - for standard input)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read --spec {source}: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--spec {source} is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--spec {source} must be a JSON object of scenario fields")
    return data


def _api_key(key: str | None, key_file: Path | None) -> str | None:
    """The key to send: given directly, or read from a file (keeps it off command lines and logs)."""
    if key_file is None:
        return key
    try:
        text = key_file.read_text().strip()
    except OSError as err:
        raise ConfigError(f"cannot read --api-key-file {key_file}: {err.strerror}") from None
    if not text:
        raise ConfigError(
            f"--api-key-file {key_file} is empty; write the key into it or leave the option out"
        )
    return text


@bench.command("sweep")
def sweep_command(
    scenarios: Annotated[Path, typer.Option(help="Scenarios YAML (files/scenarios/*.yaml).")],
    out: Annotated[Path, typer.Option(help="Run directory (results/<run-id>); re-running resumes it.")],
    url: Annotated[str | None, typer.Option(help="Override every scenario's url.")] = None,
    model: Annotated[str | None, typer.Option(help="Override every scenario's model.")] = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    progress_interval: ProgressOpt = 10.0,
) -> None:
    """Run each unfinished scenario of a file; finished ones (summary.json present) are skipped.

    A probe failure or a failed write stops the sweep (scenarios already finished stay); a
    scenario with no success or an INVALID one is finished and the sweep goes on. Exit status: the
    worst of the scenarios run (0, 3 no request succeeded, 4 INVALID), or 2 / 5 as for `run`.
    """
    from distinfer.bench.progress import make_view
    from distinfer.bench.sweep import load_sweep, run_sweep

    overrides = {k: v for k, v in (("url", url), ("model", model)) if v is not None}
    specs = load_sweep(scenarios, overrides)
    for spec in specs:
        _check_prompts(spec.prompts)
    bearer = _api_key(api_key, api_key_file)
    ran = _guarded(lambda: run_sweep(specs, out, bearer, make_view(progress_interval)))
    typer.echo(f"ran {len(ran)} scenario(s): {', '.join(ran) or 'none (all finished)'}")
    statuses = {name: exit_status(summary) for name, summary in ran.items()}
    for name, status in statuses.items():
        if status != EXIT_OK:
            typer.secho(f"scenario {name}: exit status {status}", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(max(statuses.values(), default=EXIT_OK))


def exit_status(summary: Summary) -> int:
    """0 valid, 3 when no request succeeded, 4 when the guard marked the run invalid."""
    if summary.metrics.completed == 0:
        return EXIT_ALL_FAILED
    return EXIT_OK if summary.valid else EXIT_INVALID


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


def _print_summary(summary: Summary) -> None:
    m = summary.metrics
    line = {
        "valid": summary.valid,
        "completed": m.completed,
        "failed": m.failed,
        "request_throughput": round(m.request_throughput, 3),
        "output_throughput": round(m.output_throughput, 1),
        "p50_ttft_ms": m.ttft_ms.p50,
        "p50_tpot_ms": m.tpot_ms.p50,
        "p95_e2el_ms": m.e2el_ms.p95,
    }
    json.dump(line, sys.stdout)
    sys.stdout.write("\n")
    for reason in summary.invalid_reasons:
        typer.secho(f"INVALID: {reason}", fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
