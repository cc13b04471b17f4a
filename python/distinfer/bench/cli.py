"""`distinfer bench run|sweep`: drive load, write raw records and a summary per scenario."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from distinfer.bench.status import (
    EXIT_INVALID,
    EXIT_MISPLACED,
    EXIT_OK,
    EXIT_RESULTS_LOST,
    EXIT_STATUSES,
    capacity_status,
    scenario_status,
)
from distinfer.config import ConfigError

if TYPE_CHECKING:
    from distinfer.results.summary import Summary

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

bench = typer.Typer(
    help="Drive Locust load at an OpenAI-compatible server and record every request.\n\n" + EXIT_STATUSES
)


def _spec(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The scenario the options and --spec make, validated once (errors as for a scenarios file)."""
    from distinfer.results.scenario import validate_scenario

    return validate_scenario(data, "the scenario from --spec and the options")


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
    slo: Annotated[
        str | None,
        typer.Option(
            help="The SLO goodput counts against: a preset (mlperf-llama2-70b, "
            "mlperf-llama2-70b-interactive, mlperf-llama3.1-8b, mlperf-llama3.1-8b-interactive) or limits "
            "in ms ttft=500,tpot=50[,e2el=...][,p=99] (the percentile; 99 by default)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Load processes (default: sized).")] = None,
    ignore_eos: Annotated[
        bool | None, typer.Option(help="Ask for exactly max_tokens (vLLM's ignore_eos) [on].")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Longest silence allowed inside one response [600].")
    ] = None,
    watch_status: Annotated[
        bool | None,
        typer.Option(help="Sample the server's GET /status (its replicas) each second during the load [on]."),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            help="Run the scenario N times, into OUT-rep1 .. OUT-repN; the report gives each headline "
            "figure with a 95 % confidence interval [1].",
            min=1,
            max=100,
        ),
    ] = None,
    serve_dashboard: Annotated[
        str | None,
        typer.Option(
            help="The Ray dashboard (http://HEAD:8265): sample the model's replicas (running, starting, "
            "Serve's target) from Serve's REST API each second into replicas.jsonl (autoscaling)."
        ),
    ] = None,
    ray_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="RAY_AUTH_TOKEN_PATH",
            help="Ray's auth token for --serve-dashboard (or env RAY_AUTH_TOKEN_PATH).",
        ),
    ] = None,
    serve_app: Annotated[
        str | None, typer.Option(help="The Serve application of the model (default: the one that has it).")
    ] = None,
    progress_interval: ProgressOpt = 10.0,
    load_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A load host (repeat): run Locust's master here and take the load from the workers of "
            "`distinfer bench loadhost` on these hosts; no summary until `distinfer bench merge`."
        ),
    ] = None,
    master_port: Annotated[int, typer.Option(help="With --load-host: Locust's master port.")] = 24857,
) -> None:
    """Run one scenario: records.jsonl as requests end, summary.json at the end.

    Either --spec (e.g. what `distinfer plan` resolved) or at least --url, --model, --users and
    --duration.

    Before any load, the results directory is checked and one probe request is sent. Exit status:
    0 valid; 2 refused before any load; 3 no request succeeded; 4 INVALID (saturation guard); 5 a
    results write failed mid-run (no summary).
    """
    from distinfer.bench.progress import make_view
    from distinfer.bench.runner import run_scenario
    from distinfer.results.scenario import expand_repeats, parse_meta
    from distinfer.results.slo import parse_slo

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
        "watch_status": watch_status,
        "workers": workers,
        "slo": slo_model,
        "repeat": repeat,
    }
    fields.update({key: value for key, value in given.items() if value is not None})
    fields["meta"] = meta_map
    for key in ("replicas", "users_per_replica"):
        if key in meta_map and key not in fields:
            try:
                fields[key] = int(meta_map[key])
            except ValueError:
                raise ConfigError(f"--meta {key}={meta_map[key]!r} must be a whole number") from None
    trace = fields.get("trace")
    if isinstance(trace, dict) and trace.get("length_s") is not None:
        fields.setdefault("duration_s", None)  # the trace window's length sets it (ScenarioSpec)
    missing = [
        f"--{flag}"
        for flag, key in _REQUIRED
        if key not in fields and not (key == "users" and fields.get("steps"))  # steps: their peak
    ]
    if missing:
        raise ConfigError(f"bench run needs {', '.join(missing)} (or a --spec that has them)")
    run_spec = _spec(fields)
    if run_spec.capacity is not None:
        raise ConfigError(
            f"scenario {run_spec.name} has capacity: (a search for the highest rate within its SLO); run it "
            "with `distinfer bench capacity --spec ...`, or remove capacity: to load it once"
        )
    _check_prompts(run_spec.prompts)
    _check_workload(run_spec)
    bearer = _api_key(api_key, api_key_file)
    if load_host and (serve_dashboard is not None or run_spec.steps or run_spec.autoscaling):
        raise ConfigError(
            f"scenario {run_spec.name}: load steps, autoscaling and --serve-dashboard run from the control "
            "machine only for now (the replica samples are not merged across load hosts); drop --load-host"
        )
    source = None
    if serve_dashboard is not None:
        from distinfer.bench.replicas import ReplicaSource

        if ray_token_file is not None and not ray_token_file.is_file():
            raise ConfigError(f"--ray-token-file {ray_token_file} is not a file; give Ray's auth token file")
        source = ReplicaSource(serve_dashboard, ray_token_file, serve_app)
    if load_host:
        _run_on_load_hosts(run_spec, out, load_host, bearer, master_port)
        return
    runs = expand_repeats(run_spec)
    statuses = []
    view = make_view(progress_interval)
    for index, each in enumerate(runs, start=1):
        folder = out if len(runs) == 1 else out.with_name(f"{out.name}-rep{index}")
        summary = _guarded(
            lambda: run_scenario(each, folder, bearer, view, (index, len(runs)), replicas_from=source)  # noqa: B023
        )
        _print_summary(summary)
        statuses.append(scenario_status(summary))
    raise typer.Exit(max(statuses))


def _run_on_load_hosts(spec: Any, out: Path, hosts: list[str], bearer: str | None, port: int) -> None:
    from distinfer.bench.distributed import LoadgenError, run_on_load_hosts
    from distinfer.results.loadgen import check_load_hosts

    if spec.repeat > 1:
        raise ConfigError(
            f"repeat {spec.repeat} with --load-host is not supported; run the repeats one by one"
        )
    check_load_hosts([(h, h) for h in hosts], [])
    try:
        result = _guarded(lambda: run_on_load_hosts(spec, out, hosts, bearer, port))
    except LoadgenError as err:
        raise ConfigError(str(err)) from None
    for loss in result.losses:
        typer.secho(
            f"LOST: load host {loss.host} {loss.after_s:.1f} s into the load ({loss.how})",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(
        f"load done on {', '.join(hosts)}; fetch each host's folder into {out}/hosts/<host>/, then "
        f"`distinfer bench merge --out {out}`"
    )


@bench.command("merge")
def merge_command(
    out: Annotated[Path, typer.Option(help="Scenario directory that `bench run --load-host` wrote.")],
) -> None:
    """Merge the load hosts' records (OUT/hosts/<host>/) into OUT/records.jsonl and write the summary;
    exit statuses as `bench run`."""
    from distinfer.bench.distributed import LoadgenError, merge_scenario

    try:
        summary = _guarded(lambda: merge_scenario(out))
    except LoadgenError as err:
        raise ConfigError(str(err)) from None
    _print_summary(summary)
    for host in summary.load_hosts or []:
        typer.echo(
            f"load host {host.host}: {host.events_per_s:,.0f} events/s, {host.users} user(s), "
            f"loop lag P99 {_ms(host.client.loop_lag_ms_p99 if host.client else None)}, "
            f"{'valid' if host.valid else 'INVALID'}",
            err=True,
        )
    raise typer.Exit(scenario_status(summary))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


@bench.command("loadhost")
def loadhost_command(
    master: Annotated[str, typer.Option(help="HOST:PORT of the Locust master (`bench run --load-host`).")],
    name: Annotated[str, typer.Option(help="This load host's name (the inventory's).")],
    folder: Annotated[Path, typer.Option("--dir", help="Where its records and host.json go.")],
    spec: Annotated[str, typer.Option(help="The scenario as JSON (a file, or - for standard input).")],
    share: Annotated[int, typer.Option(help="How many load hosts share the scenario.", min=1)] = 1,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """On a load host: run this host's Locust workers for one scenario, then write host.json."""
    from distinfer.bench.loadhost import run_load_host

    run_spec = _spec(_read_spec(spec))
    account = run_load_host(master, name, folder, run_spec, share, _api_key(None, api_key_file))
    typer.echo(f"load host {name}: {account.processes} worker process(es), host.json in {folder}")


_REQUIRED = (("url", "url"), ("model", "model"), ("users", "users"), ("duration", "duration_s"))


def _read_spec(source: str) -> dict[str, Any]:
    """A scenario given as JSON or YAML (a file, or - for standard input)."""
    import yaml

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read --spec {source}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--spec {source} is neither JSON nor YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--spec {source} must be a mapping of scenario fields (a JSON object)")
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


@bench.command("capacity")
def capacity_command(
    out: Annotated[
        Path, typer.Option(help="Search folder (results/<run-id>/capacity/<name>); re-running resumes.")
    ],
    spec: Annotated[
        str | None,
        typer.Option(help="A scenario (JSON or YAML; - reads standard input) with slo: and capacity:."),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Server base URL, e.g. http://127.0.0.1:8000")] = None,
    model: Annotated[str | None, typer.Option(help="The `model` field to send.")] = None,
    slo: Annotated[
        str | None,
        typer.Option(help="The SLO to meet: a preset (mlperf-llama2-70b, ...) or ttft=MS,tpot=MS[,p=99]."),
    ] = None,
    start_rate: Annotated[float | None, typer.Option(help="First rate tried, requests/s [1].")] = None,
    min_rate: Annotated[float | None, typer.Option(help="Give up below this rate [0.01].")] = None,
    max_rate: Annotated[float | None, typer.Option(help="Stop above this rate [10000].")] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(help="Bisect until the failing rate is within this fraction of the passing [0.05]."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds of load per step, warm-up included.")
    ] = None,
    warmup: Annotated[
        float | None, typer.Option(help="Seconds at the start of each step left out [0].")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Output tokens per request [256].")] = None,
    users: Annotated[
        int | None,
        typer.Option(help="The deployment's replicas x per-replica cap (sizes the in-flight cap)."),
    ] = None,
    scenario: Annotated[
        str | None, typer.Option(help="The search's name, recorded with the results.")
    ] = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    progress_interval: ProgressOpt = 10.0,
) -> None:
    """Search the highest Poisson arrival rate that meets the SLO: bracket, then bisect.

    Each step is an open-loop run (its records and summary in OUT/steps/) judged against the SLO;
    one clearly failing is stopped early, one the saturation guard marks INVALID is run again and
    then taken as not passing. The result: OUT/capacity.json. A re-run over OUT reads the finished
    steps back and runs only what is missing. Exit status: 0 the search finished with a capacity; 3
    no rate passed; 2 / 5 as for `run`.
    """
    from distinfer.bench.capacity import run_capacity
    from distinfer.bench.progress import make_view
    from distinfer.results.slo import parse_slo

    fields = _read_spec(spec) if spec else {}
    given = {
        "name": scenario, "url": url, "model": model, "duration_s": duration, "warmup_s": warmup,
        "max_tokens": max_tokens, "users": users,
    }  # fmt: skip
    fields.update({key: value for key, value in given.items() if value is not None})
    try:
        if slo:
            fields["slo"] = parse_slo(slo)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    search = {
        "start_rate": start_rate, "min_rate": min_rate, "max_rate": max_rate, "tolerance": tolerance,
    }  # fmt: skip
    fields["capacity"] = {
        **(fields.get("capacity") or {}),
        **{k: v for k, v in search.items() if v is not None},
    }
    fields.setdefault("users", 1)
    missing = [
        f"--{flag}"
        for flag, key in _REQUIRED
        if key not in fields and not (key == "users" and fields.get("steps"))  # steps: their peak
    ]
    if missing:
        raise ConfigError(f"bench capacity needs {', '.join(missing)} (or a --spec that has them)")
    base = _spec(fields)
    _check_prompts(base.prompts)
    bearer = _api_key(api_key, api_key_file)
    result = _guarded(lambda: run_capacity(base, out, bearer, make_view(progress_interval)))
    typer.echo(result.model_dump_json(include={"capacity_rate", "lowest_failing_rate", "converged", "note"}))
    if result.limited_by_load_generator:
        typer.secho(
            "the load generator, not the server, bounded the search (INVALID steps): see capacity.json",
            fg=typer.colors.YELLOW,
            err=True,
        )
    raise typer.Exit(capacity_status(result))


CertifyOpt = Annotated[
    bool,
    typer.Option(
        "--certify/--no-certify",
        help="First a short self-test of the load generator against the synthetic server at the run's "
        "highest planned event rate; the report states its error and flags scenarios beyond it.",
    ),
]


@bench.command("certify")
def certify_command(
    out: Annotated[Path, typer.Option(help="Run directory (results/<run-id>): certificate.json goes there.")],
    events_per_s: Annotated[
        float, typer.Option(help="Streamed events/s to certify (users x tokens/s per user).", min=1.0)
    ],
) -> None:
    """Self-test the load generator at an event rate: its TTFT and TPOT against the synthetic server's
    truth, on this machine, into OUT/certificate.json (bench/fidelity.py). Exit 0 certified, 4 not."""
    from distinfer.bench.fidelity import certify

    certificate = _guarded(lambda: certify(out, events_per_s))
    _print_certificate(certificate)
    raise typer.Exit(EXIT_OK if certificate.certified_events_per_s is not None else EXIT_INVALID)


@bench.command("placement")
def placement_command(
    out: Annotated[Path, typer.Option(help="Scenario directory: placement.json goes there.")],
    deployment: Annotated[str, typer.Option(help="The Serve deployment of the scenario's model.")],
    state: Annotated[
        str,
        typer.Option(
            help="Ray's answers as one JSON object (a file, or - for standard input): `serve` (GET "
            "/api/serve/applications/), `nodes`, `actors` (detail) and `placement_groups` (detail) "
            "(GET /api/v0/<resource> of Ray's state API), each as the dashboard gave it."
        ),
    ] = "-",
    app_name: Annotated[str, typer.Option("--app", help="The Serve application.")] = "distinfer",
    nodes: Annotated[
        str, typer.Option(help="The inventory hosts the scenario names, comma-separated; empty: anywhere.")
    ] = "",
    label: Annotated[str, typer.Option(help="The node label naming the host.")] = "distinfer.io/host",
) -> None:
    """Record where a scenario's replicas run (OUT/placement.json), from Ray's own state, and check they
    run only on the hosts it names: exit 0 when they do, 7 when one is elsewhere or none runs."""
    from distinfer.results.placement import RayStateError, placement_from_state

    try:
        text = sys.stdin.read() if state == "-" else Path(state).read_text()
        answers = json.loads(text)
    except OSError as err:
        raise ConfigError(f"cannot read --state {state}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(f"--state {state} is not JSON: {err}") from None
    if not isinstance(answers, dict):
        raise ConfigError(f"--state {state} must be a JSON object (serve, nodes, actors, placement_groups)")
    named = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        placement = placement_from_state(answers, app_name, deployment, named, label)
    except RayStateError as err:
        raise ConfigError(f"cannot tell where the replicas run: {err}") from None
    placement.save_file(out)
    typer.echo(f"placement: {placement.line()}")
    if not placement.replicas:
        typer.secho(f"PLACEMENT: no replica of {deployment} is running", fg=typer.colors.RED, err=True)
    for line in placement.outside:
        typer.secho(f"PLACEMENT: {line}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_OK if placement.ok else EXIT_MISPLACED)


def _print_certificate(certificate: Any) -> None:
    typer.echo(certificate.line())


@bench.command("ab")
def ab_command(
    models_file: Annotated[Path, typer.Option("--models", help="Models file naming the model to test.")],
    model: Annotated[
        str, typer.Option(help="The model: synthetic with prefix_cache and truth_log, or vllm.")
    ],
    out: Annotated[Path, typer.Option(help="JSON file for every block's and each arm's figures.")],
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="The running Ray to deploy onto; default: start a private one."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Serve's HTTP address on that Ray [http://127.0.0.1:8000; private Ray: its own]."),
    ] = None,
    metrics_url: Annotated[
        str | None,
        typer.Option(
            "--metrics-url",
            help="vllm: Ray's metrics export of the replicas' node (http://HOST:PORT/metrics); default on "
            "a private Ray: its own.",
        ),
    ] = None,
    app_name: Annotated[str, typer.Option(help="Serve application (and route) name.")] = "router-ab",
    blocks: Annotated[int, typer.Option(min=2, help="Blocks, arms in ABBA order.")] = 8,
    prompts: Annotated[int, typer.Option(min=1, help="System prompts per block.")] = 8,
    requests_per_prompt: Annotated[int, typer.Option(min=1)] = 6,
    prefix_tokens: Annotated[int, typer.Option(min=1)] = 256,
    suffix_tokens: Annotated[int, typer.Option(min=1)] = 16,
    max_tokens: Annotated[int, typer.Option(min=1)] = 8,
    concurrency: Annotated[int, typer.Option(min=1)] = 1,
    imbalanced_threshold: Annotated[float, typer.Option(min=0)] = 4.0,
) -> None:
    """Router A/B (docs/router-ab.md): Serve's default router and PrefixCacheAffinityRouter in ABBA blocks
    on a shared-prefix workload; per arm TTFT P50/P99, output tokens/s, prefix-cache hit rate and
    imbalance with 95 % intervals from the blocks. Hit rates: the synthetic engine's truth log, or vLLM's
    own prefix-cache counters on Ray's metrics export."""
    import math
    import os

    import yaml

    from distinfer.bench.ab import (
        HitSource,
        SharedPrefixWorkload,
        TruthLog,
        VllmCounters,
        ab_report,
        arm_models,
        run_ab,
        serve_run_deployer,
    )
    from distinfer.config import SyntheticModel, VllmModel, cpus_reserved, load_models_file, parse_models
    from distinfer.serve.runner import connected_ray, serve_on_private_ray

    try:
        spec = load_models_file(models_file).model(model)
    except KeyError:
        raise ConfigError(f"bench ab: no model {model} in {models_file}") from None
    vllm = isinstance(spec, VllmModel)
    if not vllm and not (
        isinstance(spec, SyntheticModel) and spec.truth_log is not None and spec.prefix_cache is not None
    ):
        raise ConfigError(
            f"bench ab: model {model} must be a synthetic model with prefix_cache and truth_log (the hit "
            "rates come from its truth log) or a vllm model (from vLLM's prefix-cache counters)"
        )
    if vllm and ray_address is not None and metrics_url is None:
        raise ConfigError("bench ab: a vllm model on a given --ray-address needs --metrics-url")
    data = yaml.safe_load(models_file.read_text())
    vocabulary = None
    if isinstance(spec, VllmModel):  # prompts of the model's own one-token words, so sizes are tokens
        from distinfer.bench.traces import load_counter

        vocabulary = tuple(load_counter(spec.model if Path(spec.model).is_dir() else "smollm2").words)
    workload = SharedPrefixWorkload(
        prompts, requests_per_prompt, prefix_tokens, suffix_tokens, max_tokens, vocabulary=vocabulary
    )
    arm = parse_models(arm_models(data, model, "prefix_aware", imbalanced_threshold))
    cpus = max(os.cpu_count() or 1, math.ceil(cpus_reserved(arm)))
    with contextlib.ExitStack() as ray_stack:
        if ray_address is None:
            local, port = ray_stack.enter_context(serve_on_private_ray(num_cpus=cpus))
            base = url or f"http://127.0.0.1:{port}"
            metrics_url = metrics_url or f"http://127.0.0.1:{local.ports['--metrics-export-port']}/metrics"
        else:
            ray_stack.enter_context(connected_ray(ray_address))
            base = url or "http://127.0.0.1:8000"
        source: HitSource = (
            TruthLog(Path(str(spec.truth_log)))
            if isinstance(spec, SyntheticModel)
            else VllmCounters(str(metrics_url), model)
        )
        deploy = serve_run_deployer(data, model, base, app_name, imbalanced_threshold)
        figures = run_ab(deploy, model, workload, source, blocks=blocks, concurrency=concurrency)
    report = ab_report(figures)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for arm_name, figs in report["arms"].items():
        line = ", ".join(f"{k} {v['mean']:.3g} ± {v['ci95_half_width']:.2g}" for k, v in figs.items())
        typer.echo(f"{arm_name}: {line}")


@bench.command("sweep")
def sweep_command(
    scenarios: Annotated[Path, typer.Option(help="Scenarios YAML (files/scenarios/*.yaml).")],
    out: Annotated[Path, typer.Option(help="Run directory (results/<run-id>); re-running resumes it.")],
    url: Annotated[str | None, typer.Option(help="Override every scenario's url.")] = None,
    model: Annotated[str | None, typer.Option(help="Override every scenario's model.")] = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    certify: CertifyOpt = True,
    progress_interval: ProgressOpt = 10.0,
) -> None:
    """Run each unfinished scenario of a file; finished ones (summary.json present) are skipped.

    A probe failure or a failed write stops the sweep (scenarios already finished stay); a
    scenario with no success or an INVALID one is finished and the sweep goes on. Exit status: the
    worst of the scenarios run (0, 3 no request succeeded, 4 INVALID), or 2 / 5 as for `run`.
    """
    from distinfer.bench.progress import make_view
    from distinfer.bench.sweep import run_sweep
    from distinfer.results.scenario import load_sweep

    overrides = {k: v for k, v in (("url", url), ("model", model)) if v is not None}
    specs = load_sweep(scenarios, overrides)
    for spec in specs:
        _check_prompts(spec.prompts)
        _check_workload(spec)
    bearer = _api_key(api_key, api_key_file)
    if certify:
        _certify_once(out, specs)
    statuses = _guarded(lambda: run_sweep(specs, out, bearer, make_view(progress_interval)))
    typer.echo(f"ran {len(statuses)} scenario(s): {', '.join(statuses) or 'none (all finished)'}")
    for name, status in statuses.items():
        if status != EXIT_OK:
            typer.secho(f"scenario {name}: exit status {status}", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(max(statuses.values(), default=EXIT_OK))


def _certify_once(out: Path, specs: list[Any]) -> None:
    """The sweep's certificate, unless the run already holds one at this rate (a resumed sweep)."""
    from distinfer.bench.fidelity import certify
    from distinfer.results.certificate import certificate_covers, planned_events_per_s

    target = planned_events_per_s(specs)
    if target <= 0 or certificate_covers(out, target):
        return
    _print_certificate(_guarded(lambda: certify(out, target)))


def _guarded(action: Callable[[], T]) -> T:
    from distinfer.bench.storage import ResultsWriteError

    try:
        return action()
    except ResultsWriteError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_RESULTS_LOST) from None


def _check_workload(spec: Any) -> None:
    """A trace window with rows, a sessions file that reads: before any load (exit 2 otherwise)."""
    from distinfer.bench.sessions import plan_sessions
    from distinfer.bench.traces import TraceError, read_trace, window

    try:
        if spec.trace is not None:
            trace = spec.trace
            if not window(read_trace(trace.file, trace.format), trace, spec.duration_s):
                raise TraceError(
                    f"scenario {spec.name}: trace {trace.file} has no row in its window "
                    f"[{trace.start_s:g} s, {trace.start_s + spec.duration_s * trace.time_scale:g} s); "
                    "move start_s or lengthen "
                    "length_s (the trace's arrivals come in bursts with gaps)"
                )
        if spec.sessions is not None:
            plan_sessions(spec.sessions, spec.seed)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_prompts(path: str | None) -> None:
    from distinfer.bench.prompts import load_prompts

    try:
        load_prompts(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _print_summary(summary: Summary) -> None:
    m = summary.metrics
    line: dict[str, Any] = {
        "valid": summary.valid,
        "completed": m.completed,
        "failed": m.failed,
        "request_throughput": round(m.request_throughput, 3),
        "output_throughput": round(m.output_throughput, 1),
        "p50_ttft_ms": m.ttft_ms.p50,
        "p50_tpot_ms": m.tpot_ms.p50,
        "p95_e2el_ms": m.e2el_ms.p95,
    }
    verdict = m.slo_result
    if verdict is not None:
        line.update(
            slo_met=verdict.passed,
            slo_share_meeting=verdict.share_meeting,
            request_goodput=round(verdict.request_goodput, 3),
            output_goodput=round(verdict.output_goodput, 1),
        )
    scaling = summary.autoscaling
    if scaling is not None:
        line.update(
            replicas_lowest=scaling.lowest_running,
            replicas_highest=scaling.highest_running,
            scale_up_serving_s=[u.serving_s for u in scaling.scale_ups],
            replica_seconds=scaling.replica_seconds,
        )
    json.dump(line, sys.stdout)
    sys.stdout.write("\n")
    for reason in summary.invalid_reasons:
        typer.secho(f"INVALID: {reason}", fg=typer.colors.YELLOW, err=True)
    faults = summary.availability
    if faults is not None and (faults.failed or any(c.dropped_at_s is not None for c in faults.replicas)):
        typer.secho(f"FAULTS: {faults.summary}", fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
