"""The deployment plan: what runs where, computed once from the inventory and the models file.

`distinfer plan --request FILE` reads a `PlanRequest` (JSON: the inventory's hosts and choices, as
the preflight role gathers them) and prints a `Plan` (JSON) that the roles only apply: replicas per
model (GPUs / tensor_parallel_size on GPU hosts), the Serve config (for `serve deploy` on the local
platform, or the RayService's serveConfigV2), the RayService's worker groups, the API key variable,
the endpoint the benchmark loads, and the benchmark's scenarios, each resolved with the Serve config
it needs. Ansible keeps no copy of these rules; every rejection names the inventory variable (or
scenarios-file field) at fault, the value and the fix, before anything changes on a host.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field, ValidationError

from distinfer.airgap import AirgapPlan, AirgapSettings, airgap_plan
from distinfer.config import (
    DEFAULT_APP_NAME,
    HOST_LABEL,
    AutoscalingOptions,
    ConfigError,
    EngineStandIn,
    HfModel,
    ModelsFile,
    SyntheticModel,
    VllmModel,
    check_replicas_or_autoscaling,
    deployment_name,
    load_models_file,
    parse_models,
    pin_to_hosts,
    serve_config,
)
from distinfer.errors import format_validation_error
from distinfer.results.base import Strict
from distinfer.results.capacity import RESULT_FILE as CAPACITY_RESULT
from distinfer.results.certificate import planned_events_per_s
from distinfer.results.loadgen import check_load_hosts
from distinfer.results.placement import STATE_PATHS
from distinfer.results.scenario import (
    Deployment,
    ScenarioSpec,
    SweepFile,
    check_unique_names,
    default_scenario_name,
    expand_repeats,
    parse_sweep,
    read_sweep,
    scenario_nodes,
    validate_scenario,
)
from distinfer.results.summary import SUMMARY_FILE

Platform = Literal["kubernetes", "local"]
# The API key variable the app reads when the inventory sets a key and the models file names none.
DEFAULT_API_KEY_ENV = "DISTINFER_API_KEY"
# Where the benchmark reaches the RayService from outside the cluster (a NodePort) by default.
DEFAULT_NODE_PORT = 30800
# The port Ray Serve's proxies listen on inside the RayService's pods (KubeRay's `serve` port).
KUBERAY_SERVE_PORT = 8000
# Where the report reaches Prometheus: the hosts' own (prometheus_local, away from Ray's 24xxx ports and
# the API's 24800) or kube-prometheus-stack's through a NodePort (kube_prometheus).
DEFAULT_PROMETHEUS_PORT = {"local": 24090, "kubernetes": 30090}

Spec = VllmModel | HfModel | SyntheticModel


class PlanHost(Strict):
    """One inventory host, as the preflight role reads it."""

    name: str = Field(description="Inventory hostname.")
    address: str = Field(description="Where the control machine reaches it (ansible_host).")
    gpus: int = Field(0, ge=0, description="distinfer_gpu_count.")
    gpu_vendor: Literal["nvidia", "amd", "none"] = "none"
    gpu_model: str = Field("", description="distinfer_gpu_model, a label such as a100-sxm-80gb.")
    replica_slots: int = Field(1, ge=0, description="distinfer_replica_slots (local platform).")
    device: str = Field("", description="distinfer_device: what the report calls the machine.")


class LoadHost(Strict):
    """One host of the inventory group `loadgen` (results/loadgen.py)."""

    name: str
    address: str = Field(description="ansible_host (or the name).")


class PlanRequest(Strict):
    platform: Platform
    models_file: str = Field(description="distinfer_models_file, absolute.")
    hosts: list[PlanHost] = Field(min_length=1)
    head: str = Field(description="The host that runs the Ray head (and the Serve endpoint).")
    replicas: dict[str, int] = Field(default_factory=dict, description="distinfer_replicas.")
    api_key: bool = Field(False, description="Whether distinfer_api_key is set (never the key itself).")
    engine_stand_in: EngineStandIn | None = Field(None, description="distinfer_engine_stand_in.")
    scenarios: dict[str, Any] | None = Field(None, description="distinfer_scenarios, inline.")
    scenarios_file: str | None = Field(None, description="distinfer_scenarios_file, absolute.")
    scenario_overrides: dict[str, Any] = Field(default_factory=dict)
    scenarios_only: list[str] = Field(default_factory=list)
    endpoint_port: int | None = Field(None, ge=1, le=65535, description="distinfer_endpoint_port.")
    prometheus_port: int | None = Field(None, ge=1, le=65535, description="distinfer_prometheus_port.")
    airgap: AirgapSettings | None = Field(None, description="distinfer_airgap (without registry_config).")
    images: dict[str, str] = Field(
        default_factory=dict, description="ray_service_images: put on the registry mirror under air gap."
    )
    loadgen: list[LoadHost] = Field(
        default_factory=list, description="The inventory group loadgen: the machines that generate load."
    )


class PlannedModel(Strict):
    name: str
    engine: str
    gpus_per_replica: float
    replicas: int
    max_replicas: int | None = Field(description="What the inventory's GPUs allow (GPU models).")
    max_ongoing_requests: int
    batch_limit: int | None = Field(description="The engine's own batch limit where the file sets one.")


class WorkerGroup(Strict):
    """RayService worker group: one pod per host of the same GPU vendor, model and count.

    Its pods find their nodes by `node_selector` (labels the K3s roles put on each node, from
    `Plan.node_labels`), never by host name: a host added to the inventory changes only the group's
    replica counts, which KubeRay applies without building a new RayCluster (roles/ray_service/README.md).
    """

    name: str
    vendor: str
    gpu_model: str
    gpus: int
    hosts: list[str]
    node_selector: dict[str, str] = Field(description="Node labels its pods require.")
    min_hosts: int | None = Field(
        None,
        description="Under autoscaling: the group's fewest pods (KubeRay's minReplicas), the hosts the "
        "models' least replicas need (an autoscaling model's min_replicas); None: every host, fixed.",
    )


class PlannedScenario(Strict):
    name: str
    kind: Literal["load", "capacity"] = Field(
        description="load: `distinfer bench run` once; capacity: `distinfer bench capacity` (a search)."
    )
    folder: str = Field(
        description="Its results, under the run's folder: scenarios/<name> or capacity/<name>."
    )
    done_file: str = Field(description="The file in `folder` whose presence means it finished.")
    model: str
    replicas: int
    users_per_replica: int | None
    users: int
    duration_s: float = Field(description="Seconds of load (a capacity search: of one step at least).")
    nodes: list[str] = Field(
        default_factory=list,
        description="The inventory hosts its model's replicas are pinned to (its `nodes:`; Ray's label "
        "selector on `host_label` in its serve_config); empty: anywhere.",
    )
    deployment: str = Field(description="The Serve deployment of its model (whose replicas are placed).")
    spec: dict[str, Any] = Field(description="The ScenarioSpec `distinfer bench run|capacity` gets.")
    serve_config: dict[str, Any] = Field(description="What must be deployed while it runs.")


class Plan(Strict):
    platform: Platform
    app_name: str = Field(description="The Serve application's name.")
    models_file: str
    head: str
    hosts: list[str]
    endpoint: str
    endpoint_port: int
    serve_port: int
    prometheus_url: str = Field(description="Where the report asks Prometheus (the head's address).")
    prometheus_port: int
    api_key_env: str | None
    engine_stand_in: bool
    models: list[PlannedModel]
    replicas: dict[str, int]
    serve_config: dict[str, Any]
    worker_groups: list[WorkerGroup]
    node_labels: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per host: the labels the K3s roles put on its node (kubernetes platform).",
    )
    host_label: str = Field(
        HOST_LABEL,
        description="The Ray node label naming each node's inventory host (ray_local's `ray start --labels`, "
        "the RayService's pods from their node name); scenarios' replicas select it.",
    )
    ray_state_paths: dict[str, str] = Field(
        default_factory=lambda: dict(STATE_PATHS),
        description="The dashboard paths whose answers `distinfer bench placement` judges, by key.",
    )
    scenarios: list[PlannedScenario]
    autoscaling: bool = Field(
        False,
        description="A model or scenario autoscales: the RayService enables KubeRay's in-tree autoscaler "
        "and its worker groups grow from min_hosts to every host (roles/ray_service).",
    )
    certify_events_per_s: float = Field(
        0.0, description="The scenarios' highest planned event rate: the load generator's self-test rate."
    )
    loadgen: list[str] = Field(
        default_factory=list,
        description="The load hosts (group loadgen) the benchmark runs Locust's workers on; empty: the "
        "control machine generates the load (no group, or only localhost).",
    )
    airgap: AirgapPlan | None = Field(
        None, description="Under distinfer_airgap: the bundle's files and the mirror the roles use instead."
    )


def load_request(text: str, source: str) -> PlanRequest:
    try:
        return PlanRequest.model_validate_json(text)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, "a valid plan request")) from None


def build_plan(request: PlanRequest) -> Plan:
    names = [h.name for h in request.hosts]
    if request.head not in names:
        raise ConfigError(f"the head {request.head!r} is not among the hosts {names}")
    for name in names:
        if not _RAY_LABEL_VALUE.match(name):
            raise ConfigError(
                f"{name}: the inventory host name becomes the Ray node label {HOST_LABEL}={name}, which Ray "
                "refuses (at most 63 letters, digits, '-', '.', '_', starting and ending with a letter or "
                "digit); rename the host in hosts.yml (ansible_host keeps its address)"
            )
    try:
        loaded = load_models_file(request.models_file)
    except ConfigError as err:
        raise ConfigError(f"distinfer_models_file: {err}") from None
    models = _with_api_key(loaded, request)
    if request.engine_stand_in is not None:
        models = models.model_copy(update={"engine_stand_in": request.engine_stand_in})
    for spec in models.models:
        _check_cap(
            spec,
            spec.max_ongoing_requests,
            f"{request.models_file}: model {spec.name}",
            "max_ongoing_requests",
        )
    capacity = _gpu_capacity(models, request)
    replicas = _replicas(models, request, capacity)
    deployed = models.with_replicas(replicas)
    endpoint_port = request.endpoint_port or (
        DEFAULT_NODE_PORT if request.platform == "kubernetes" else models.http.port
    )
    head = next(h for h in request.hosts if h.name == request.head)
    prometheus_port = request.prometheus_port or DEFAULT_PROMETHEUS_PORT[request.platform]
    plan = Plan(
        platform=request.platform,
        app_name=DEFAULT_APP_NAME,
        models_file=request.models_file,
        head=request.head,
        hosts=names,
        endpoint=f"http://{head.address}:{endpoint_port}",
        endpoint_port=endpoint_port,
        serve_port=KUBERAY_SERVE_PORT if request.platform == "kubernetes" else models.http.port,
        prometheus_url=f"http://{head.address}:{prometheus_port}",
        prometheus_port=prometheus_port,
        api_key_env=models.api_key_env,
        engine_stand_in=request.engine_stand_in is not None,
        models=[_planned_model(spec, replicas[spec.name], capacity.get(spec.name)) for spec in models.models],
        replicas=replicas,
        serve_config=_serve_config(deployed, request.platform),
        worker_groups=_worker_groups(request) if request.platform == "kubernetes" else [],
        node_labels=_node_labels(request) if request.platform == "kubernetes" else {},
        host_label=HOST_LABEL,
        ray_state_paths=dict(STATE_PATHS),
        scenarios=[],
        autoscaling=False,
        certify_events_per_s=0.0,
        airgap=_airgap(request),
    )
    plan.scenarios = _scenarios(request, models, plan, capacity)
    plan.autoscaling = any(m.autoscaling is not None for m in models.models) or any(
        s.spec.get("autoscaling") is not None for s in plan.scenarios
    )
    if plan.autoscaling:
        plan.worker_groups = _autoscaled_groups(plan.worker_groups, models, replicas, request)
    plan.certify_events_per_s = planned_events_per_s(
        [ScenarioSpec.model_validate(s.spec) for s in plan.scenarios]
    )
    plan.loadgen = check_load_hosts(
        [(h.name, h.address) for h in request.loadgen],
        names,
        [s.name for s in plan.scenarios if s.kind == "capacity"],
        [s.name for s in plan.scenarios if s.spec.get("steps") or s.spec.get("autoscaling")],
    )
    return plan


def _airgap(request: PlanRequest) -> AirgapPlan | None:
    """The bundle's files and the mirror, when the inventory turns the air gap on (docs/airgap.md)."""
    settings = request.airgap
    if settings is None or not settings.enabled:
        return None
    if request.platform != "kubernetes":
        raise ConfigError(
            "distinfer_airgap is enabled on the local platform, which uses none of what the bundle carries "
            "(K3s, Helm, charts, images); turn it off, or use it with inventory/poweredge (kubernetes)"
        )
    settings.check_enabled()
    if "none" not in request.images:
        raise ConfigError("ray_service_images has no `none` entry (the edge's and the chat page's image)")
    return airgap_plan(settings, request.images)


# ---- models and replicas ------------------------------------------------------------------------


def _with_api_key(models: ModelsFile, request: PlanRequest) -> ModelsFile:
    """The app asks for a key exactly when the inventory sets one."""
    if models.api_key_env and not request.api_key:
        raise ConfigError(
            f"{request.models_file} asks for an API key (api_key_env: {models.api_key_env}) but "
            "distinfer_api_key is empty; export DISTINFER_API_KEY (or set distinfer_api_key from a "
            "vault) on the control machine, or remove api_key_env from the models file"
        )
    if request.api_key and not models.api_key_env:
        return models.model_copy(update={"api_key_env": DEFAULT_API_KEY_ENV})
    return models


def _gpu_models(models: ModelsFile) -> list[Spec]:
    return [spec for spec in models.models if spec.gpus_per_replica >= 1]


def _derives_from_gpus(request: PlanRequest) -> bool:
    """GPU models get replicas from the GPUs on a cluster, and locally where hosts declare GPUs."""
    return request.platform == "kubernetes" or any(h.gpus for h in request.hosts)


def _gpu_capacity(models: ModelsFile, request: PlanRequest) -> dict[str, int]:
    """Replicas each GPU model could have alone: sum over hosts of GPUs // GPUs per replica."""
    if not _derives_from_gpus(request):
        return {}
    capacity = {}
    for spec in _gpu_models(models):
        per = int(spec.gpus_per_replica)
        for host in request.hosts:
            if host.gpus % per:
                raise ConfigError(
                    f"{host.name}: distinfer_gpu_count is {host.gpus}, not a multiple of model "
                    f"{spec.name}'s {per} GPUs per replica (tensor_parallel_size; a replica stays on one "
                    "node); set distinfer_gpu_count to a multiple of it (or 0) for this host"
                )
        capacity[spec.name] = sum(host.gpus // per for host in request.hosts)
    return capacity


def _replicas(models: ModelsFile, request: PlanRequest, capacity: dict[str, int]) -> dict[str, int]:
    known = [m.name for m in models.models]
    for name, count in request.replicas.items():
        if name not in known:
            raise ConfigError(
                f"distinfer_replicas names {name!r}, which is not in {request.models_file} "
                f"(models: {', '.join(known)}); fix the name or remove it"
            )
        if count < 1:
            raise ConfigError(f"distinfer_replicas.{name} is {count}; give at least 1 (or remove it)")
    for spec in models.models:
        if spec.autoscaling is not None and spec.name in request.replicas:
            raise ConfigError(
                f"distinfer_replicas.{spec.name} is set but {request.models_file} gives {spec.name} "
                "autoscaling: (its replicas move between min_replicas and max_replicas); remove one of "
                "the two"
            )
    derived = [
        name for name in capacity if name not in request.replicas and models.model(name).autoscaling is None
    ]
    if len(derived) > 1:
        raise ConfigError(
            f"several GPU models ({', '.join(derived)}) would each take every GPU; set distinfer_replicas "
            "in group_vars/all to split the GPUs between them"
        )
    gpu_hosts = [h for h in request.hosts if h.gpus]
    total_gpus = sum(h.gpus for h in gpu_hosts)
    slots = sum(h.replica_slots for h in request.hosts)
    replicas: dict[str, int] = {}
    for spec in models.models:
        if spec.autoscaling is not None:  # the most it may scale to must fit
            replicas[spec.name] = spec.autoscaling.max_replicas
        elif spec.name in request.replicas:
            replicas[spec.name] = request.replicas[spec.name]
        elif spec.name in capacity:
            if capacity[spec.name] < 1:
                raise ConfigError(
                    f"model {spec.name} needs {int(spec.gpus_per_replica)} GPUs per replica but the "
                    f"inventory gives {total_gpus} GPUs on "
                    f"{', '.join(h.name for h in gpu_hosts) or 'no host'}; raise distinfer_gpu_count on a "
                    "host or add one"
                )
            replicas[spec.name] = capacity[spec.name]
        elif request.platform == "local":
            replicas[spec.name] = max(slots, 1)
        else:
            replicas[spec.name] = spec.replicas
    _check_fits(models, replicas, request, "distinfer_replicas")
    return replicas


def _check_fits(
    models: ModelsFile,
    replicas: dict[str, int],
    request: PlanRequest,
    what: str,
    pinned: dict[str, list[str]] | None = None,
) -> None:
    """Every GPU model's replicas fit on the hosts' GPUs, each replica's GPUs on one host, and a model
    in `pinned` on those hosts only.

    First fit, largest replicas first (pinned models first among equals): the same packing Ray's
    STRICT_PACK placement groups need.
    """
    if not _derives_from_gpus(request):
        return
    pinned = pinned or {}
    free = {h.name: h.gpus for h in request.hosts}
    for spec in sorted(_gpu_models(models), key=lambda s: (-s.gpus_per_replica, s.name not in pinned)):
        per = int(spec.gpus_per_replica)
        allowed = pinned.get(spec.name) or list(free)
        for placed in range(replicas[spec.name]):
            host = next((name for name in allowed if free[name] >= per), None)
            if host is None:
                alone = sum(h.gpus // per for h in request.hosts)
                raise ConfigError(
                    f"{what} asks {replicas[spec.name]} replica(s) of {spec.name} ({per} GPUs each, on one "
                    f"node) but only {placed} fit on the inventory's GPUs "
                    f"({', '.join(f'{h.name}: {h.gpus}' for h in request.hosts if h.gpus) or 'none'}; "
                    f"{alone} alone); lower it to at most {placed} or add GPU hosts"
                )
            free[host] -= per


def _batch_limit(spec: Spec) -> int | None:
    if isinstance(spec, VllmModel):
        return spec.max_num_seqs
    if isinstance(spec, HfModel):
        return spec.max_batch_size
    return None


def _check_cap(spec: Spec, cap: int, where: str, field: str) -> None:
    """A replica's cap on requests in flight must not exceed what its engine decodes together."""
    limit = _batch_limit(spec)
    if limit is not None and cap > limit:
        own = "max_num_seqs" if isinstance(spec, VllmModel) else "max_batch_size"
        raise ConfigError(
            f"{where}: {field} {cap} is above the engine's {own} {limit}: the engine would queue what "
            f"Serve admitted, outside every admission limit; remove {own} from the models file (it then "
            f"follows the per-replica cap) or lower {field} to {limit}"
        )


def _planned_model(spec: Spec, replicas: int, max_replicas: int | None) -> PlannedModel:
    return PlannedModel(
        name=spec.name,
        engine=spec.engine,
        gpus_per_replica=spec.gpus_per_replica,
        replicas=replicas,
        max_replicas=max_replicas,
        max_ongoing_requests=spec.max_ongoing_requests,
        batch_limit=_batch_limit(spec),
    )


def _serve_config(models: ModelsFile, platform: Platform) -> dict[str, Any]:
    config = serve_config(models)
    if platform == "kubernetes":
        # KubeRay's serve service targets the pods' `serve` port on every pod.
        config["http_options"] = {"host": "0.0.0.0", "port": KUBERAY_SERVE_PORT}
    return config


# Node labels (the K3s roles put them on each node; the worker groups select by them). A label value
# is at most 63 characters of [A-Za-z0-9._-], starting and ending with a letter or digit (Kubernetes).
LABEL_PREFIX = "distinfer.io/"
GROUP_LABEL = LABEL_PREFIX + "worker-group"
NO_GPU = "none"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
# Ray's rule for a node label's value (ray/_private/label_utils.py, LABEL_REGEX): the same, not empty.
_RAY_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def _group_name(host: PlanHost) -> str:
    return _label_value(f"{host.gpu_vendor}-{host.gpu_model}-x{host.gpus}")


def _node_labels(request: PlanRequest) -> dict[str, dict[str, str]]:
    """Every host's node labels: GPU vendor, model and count, and its worker group (`none` without
    GPUs). A host joining an existing kind gets the same labels as its peers, so the group's pod
    template is unchanged and only its replicas grow."""
    out: dict[str, dict[str, str]] = {}
    for host in request.hosts:
        labels = {
            LABEL_PREFIX + "gpu-vendor": host.gpu_vendor,
            LABEL_PREFIX + "gpu-model": _label_value(host.gpu_model) if host.gpus else NO_GPU,
            LABEL_PREFIX + "gpu-count": str(host.gpus),
            GROUP_LABEL: _group_name(host) if host.gpus else NO_GPU,
        }
        for key, value in labels.items():
            if not _LABEL_VALUE.match(value):
                raise ConfigError(
                    f"{host.name}: distinfer_gpu_model {host.gpu_model!r} makes the node label "
                    f"{key}={value!r}, which Kubernetes refuses (at most 63 letters, digits, '-', "
                    "'.', '_', starting and ending with a letter or digit); shorten distinfer_gpu_model "
                    "(e.g. a100-sxm-80gb) in hosts.yml"
                )
        out[host.name] = labels
    return out


def _worker_groups(request: PlanRequest) -> list[WorkerGroup]:
    """One group per kind of GPU host, in the order the inventory first names each kind (a kind added
    after the existing hosts appends its group: KubeRay updates the cluster in place)."""
    groups: dict[str, WorkerGroup] = {}
    for host in request.hosts:
        if not host.gpus:
            continue
        name = _group_name(host)
        group = groups.setdefault(
            name,
            WorkerGroup(
                name=name,
                vendor=host.gpu_vendor,
                gpu_model=host.gpu_model,
                gpus=host.gpus,
                hosts=[],
                node_selector={GROUP_LABEL: name},
                min_hosts=None,
            ),
        )
        group.hosts.append(host.name)
    return list(groups.values())


def _autoscaled_groups(
    groups: list[WorkerGroup], models: ModelsFile, replicas: dict[str, int], request: PlanRequest
) -> list[WorkerGroup]:
    """The worker groups with their fewest pods: the hosts the GPU models' least replicas take (an
    autoscaling model's min_replicas, the others' fixed count), placed first fit in inventory order as
    _check_fits does; at least one pod in the first group, so the cluster has somewhere to grow from."""
    free = {h.name: h.gpus for h in request.hosts}
    used: set[str] = set()
    for spec in sorted(_gpu_models(models), key=lambda s: -s.gpus_per_replica):
        per = int(spec.gpus_per_replica)
        least = spec.autoscaling.min_replicas if spec.autoscaling is not None else replicas[spec.name]
        for _ in range(least):
            host = next((name for name in free if free[name] >= per), None)
            if host is not None:
                free[host] -= per
                used.add(host)
    out = []
    for index, group in enumerate(groups):
        least = sum(1 for host in group.hosts if host in used)
        out.append(group.model_copy(update={"min_hosts": max(least, 1 if index == 0 else 0)}))
    return out


# ---- the benchmark's scenarios ------------------------------------------------------------------


def _sweep(request: PlanRequest) -> tuple[SweepFile | None, str]:
    if request.scenarios is not None:
        return parse_sweep(request.scenarios, "distinfer_scenarios"), "distinfer_scenarios"
    if request.scenarios_file:
        return read_sweep(Path(request.scenarios_file)), request.scenarios_file
    return None, ""


def _scenarios(
    request: PlanRequest, models: ModelsFile, plan: Plan, capacity: dict[str, int]
) -> list[PlannedScenario]:
    sweep, source = _sweep(request)
    if sweep is None:
        return []
    entries = sweep.entries(request.scenario_overrides)
    for data in entries:
        data.setdefault("model", models.models[0].name)
        try:
            check_replicas_or_autoscaling(data, f"{source}: scenario {data.get('name', '(unnamed)')!r}: ")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        _autoscaling_defaults(data, models)
        data.setdefault("replicas", plan.replicas.get(data["model"], 1))
        data.setdefault("name", default_scenario_name(data, prefix=f"{len(request.hosts)}n-"))
    try:
        check_unique_names([d["name"] for d in entries])
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    unknown = sorted(set(request.scenarios_only) - {d["name"] for d in entries})
    if unknown:
        raise ConfigError(
            f"distinfer_scenarios_only names {unknown}, which {source} does not have "
            f"(scenarios: {', '.join(d['name'] for d in entries)}); fix the names or leave it empty"
        )
    chosen = [d for d in entries if not request.scenarios_only or d["name"] in request.scenarios_only]
    planned = [each for data in chosen for each in _scenario(data, request, models, plan, capacity, source)]
    try:
        check_unique_names([p.name for p in planned])  # a repeat's <name>-rep<k> may meet another name
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return planned


def _autoscaling_defaults(data: dict[str, Any], models: ModelsFile) -> None:
    """A scenario of an autoscaling model (its own `autoscaling:`, else its model's) is planned at the most
    replicas it may scale to (the fits are checked there), and carries the block the report reads."""
    spec = next((m for m in models.models if m.name == data["model"]), None)
    if data.get("autoscaling") is None and spec is not None and spec.autoscaling is not None:
        data["autoscaling"] = spec.autoscaling.model_dump(exclude_none=True)
    try:
        scaling = AutoscalingOptions.model_validate(data["autoscaling"]) if data.get("autoscaling") else None
    except ValidationError:
        return  # validate_scenario names the problem, with the scenario's name
    if scaling is not None:
        data["replicas"] = scaling.max_replicas


def _scenario(
    data: dict[str, Any],
    request: PlanRequest,
    models: ModelsFile,
    plan: Plan,
    capacity: dict[str, int],
    source: str,
) -> list[PlannedScenario]:
    where = f"{source}: scenario {data['name']!r}"
    try:
        spec = models.model(data["model"])
    except KeyError:
        raise ConfigError(
            f"{where} asks for model {data['model']!r}, which {request.models_file} does not serve "
            f"(models: {', '.join(m.name for m in models.models)}); set its model: to one of them"
        ) from None
    upr = data.get("users_per_replica")
    if upr is not None and (not isinstance(upr, int) or upr < 1):
        raise ConfigError(
            f"{where}: users_per_replica is {upr!r}; give a whole number >= 1 (it is the per-replica cap "
            "on requests in flight, the guide's batch size per replica)"
        )
    replicas = data["replicas"]
    if upr is not None:
        _check_cap(spec, upr, f"{where}: model {spec.name}", "users_per_replica")
    nodes = _named_nodes(data, request, where)
    if nodes:
        _check_named_fit(spec, replicas, nodes, request, where)
    scaled = {**plan.replicas, spec.name: replicas}
    _check_fits(models, scaled, request, f"{where}: replicas", {spec.name: nodes} if nodes else None)
    closed_steps = bool(data.get("steps")) and all(
        isinstance(s, dict) and "users" in s for s in data["steps"]
    )
    if not closed_steps:  # closed-loop steps: the users are their peak (ScenarioSpec)
        data["users"] = data.get("users") or replicas * (upr or spec.max_ongoing_requests)
    data["url"] = plan.endpoint
    data["meta"] = _scenario_meta(data, request, plan, nodes)
    validated = validate_scenario(data, where)
    deployed = models.with_replicas(scaled)
    if validated.autoscaling is not None and validated.autoscaling != spec.autoscaling:
        deployed = _rescaled(deployed, spec.name, validated.autoscaling, where)
    if upr is not None:  # the per-replica cap of the model under load (vLLM's max_num_seqs follows it)
        capped = [
            m.model_copy(update={"max_ongoing_requests": upr}) if m.name == spec.name else m
            for m in deployed.models
        ]
        # Validated again as a whole: a cap below an explicit max_num_seqs is refused as in a file.
        deployed = parse_models(
            deployed.model_copy(update={"models": capped}).model_dump(mode="json", exclude_none=True),
            f"{where}: the models file with users_per_replica {upr}",
        )
    capacity_search = validated.capacity is not None
    config = _serve_config(deployed, request.platform)
    if nodes:
        config = _pinned(config, deployment_name(spec.name), nodes)
    return [
        PlannedScenario(
            name=each.name,
            kind="capacity" if capacity_search else "load",
            folder=f"{'capacity' if capacity_search else 'scenarios'}/{each.name}",
            done_file=CAPACITY_RESULT if capacity_search else SUMMARY_FILE,
            model=spec.name,
            replicas=replicas,
            users_per_replica=upr,
            users=each.users,
            duration_s=each.duration_s,
            nodes=nodes or [],
            deployment=deployment_name(spec.name),
            spec=each.model_dump(mode="json", exclude_none=True),
            serve_config=config,
        )
        for each in expand_repeats(
            validated
        )  # a repeated scenario: each run redeploys, as run-to-run noise should
    ]


def _rescaled(models: ModelsFile, name: str, scaling: AutoscalingOptions, where: str) -> ModelsFile:
    """The models file with model `name` autoscaling as a scenario asks, validated again as a whole (its
    target against the model's per-replica cap)."""
    data = models.model_dump(mode="json", exclude_none=True)
    for entry in data["models"]:
        if entry["name"] == name:
            entry.pop("replicas", None)
            entry["autoscaling"] = scaling.model_dump(exclude_none=True)
    return parse_models(data, f"{where}: the models file with its autoscaling")


def _named_nodes(data: dict[str, Any], request: PlanRequest, where: str) -> list[str] | None:
    """The inventory hosts a scenario names for its replicas (`nodes:`, or the older `meta: {nodes:}`
    label, which always meant the same), checked against the inventory; None when it names none."""
    nodes = scenario_nodes(data, where)
    label = data.get("meta", {}).get("nodes")
    if label is not None:
        from_label = scenario_nodes({"nodes": label}, f"{where}: meta")
        if nodes is None:
            nodes = from_label
        elif from_label != nodes:
            raise ConfigError(
                f"{where}: nodes {nodes} and meta.nodes {label!r} disagree; keep nodes: (where its replicas "
                "run) and remove nodes from meta"
            )
    if nodes is None:
        return None
    names = [h.name for h in request.hosts]
    unknown = [n for n in nodes if n not in names]
    if unknown:
        raise ConfigError(
            f"{where}: nodes names {', '.join(unknown)}, which the inventory does not have (its hosts: "
            f"{', '.join(names)}); name inventory hosts (their names in hosts.yml), or add the host"
        )
    return [n for n in names if n in nodes]  # in the inventory's order


def _check_named_fit(spec: Spec, replicas: int, nodes: list[str], request: PlanRequest, where: str) -> None:
    """A GPU model's replicas (each its tensor_parallel_size GPUs on one node) fit on the GPUs of the
    hosts its scenario names."""
    if not _derives_from_gpus(request) or spec.gpus_per_replica < 1:
        return
    per = int(spec.gpus_per_replica)
    hosts = [h for h in request.hosts if h.name in nodes]
    holds = sum(h.gpus // per for h in hosts)
    if replicas > holds:
        raise ConfigError(
            f"{where} asks {replicas} replica(s) of {spec.name}, {replicas} x {per} = {replicas * per} GPUs "
            f"({per} per replica, tensor_parallel_size, on one node), but its nodes "
            f"{', '.join(f'{h.name} ({h.gpus} GPUs)' for h in hosts)} hold {holds} replica(s) "
            f"({sum(h.gpus for h in hosts)} GPUs); lower its replicas to {holds} or name more hosts in its "
            "nodes:"
        )


def _pinned(config: dict[str, Any], deployment: str, nodes: list[str]) -> dict[str, Any]:
    """The Serve config with `deployment`'s replicas placed only on Ray nodes of `nodes`."""
    (app,) = config["applications"]
    deployments = [pin_to_hosts(d, nodes) if d["name"] == deployment else d for d in app["deployments"]]
    return {**config, "applications": [{**app, "deployments": deployments}]}


def _scenario_meta(
    data: dict[str, Any], request: PlanRequest, plan: Plan, nodes: list[str] | None
) -> dict[str, str]:
    """What the report shows about the deployment: the hosts named for it (all, when it names none);
    the file's own labels win (the guide's)."""
    hosts = [h for h in request.hosts if not nodes or h.name in nodes]
    deployment = Deployment(
        nodes=[h.name for h in hosts],
        devices=",".join(h.device or h.name for h in hosts),
        gpus=str(sum(h.gpus for h in hosts)),
        replicas=data["replicas"],
        platform=request.platform,
        # The report asks this Prometheus for the server-side figures of the scenario's window.
        prometheus=plan.prometheus_url,
        users_per_replica=data.get("users_per_replica"),
        engine_stand_in="synthetic (rehearsal: not a measurement of the model)"
        if plan.engine_stand_in
        else None,
    )
    meta = {**deployment.to_meta(), **data.get("meta", {})}
    if nodes:
        meta["nodes"] = ",".join(nodes)  # as checked, in the inventory's order
    return meta


def plan_command(
    request: Annotated[
        str, typer.Option("--request", help="Plan request JSON file, or - for standard input.")
    ] = "-",
) -> None:
    """Print the deployment plan (JSON) for an inventory: replicas, Serve config, scenarios.

    The preflight role runs it once and every other role applies its output.
    """
    if request == "-":
        text, source = sys.stdin.read(), "the plan request on standard input"
    else:
        try:
            text, source = Path(request).read_text(), request
        except OSError as err:
            raise ConfigError(f"cannot read plan request {request}: {err.strerror}") from None
    typer.echo(build_plan(load_request(text, source)).model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
