"""The `vllm` engine: vLLM's async engine (`AsyncLLM`) behind the engine interface of engines/base.py.

Install: vLLM is an optional extra, `pip install 'distinfer[vllm]'` (pins vllm==0.33.0; it brings
its own torch build with CUDA). It is imported only inside `VllmEngine.start()`, so every other part
of distinfer (and its tests) runs without it. Needs a GPU supported by that vLLM build.

How a replica is laid out (see config.py `model_deployment_options`):
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

The pure parts (`engine_args`, `sampling_kwargs`) do not import vLLM and are unit-tested; the
engine itself needs a GPU and is exercised on GPU machines only.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from distinfer.config import VllmModel, effective_max_num_seqs
from distinfer.engines.base import (
    ChatMessage,
    Engine,
    EngineError,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenDelta,
    simple_chat_prompt,
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
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        # vLLM labels its metrics with this (model_name): the models file's name, as every engine's.
        "served_model_name": spec.name,
    }
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

    async def start(self) -> None:
        try:
            from vllm import SamplingParams as VllmSamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as err:
            raise EngineError(
                f"model {self._spec.name!r} uses engine vllm but vLLM is not importable ({err}); "
                "install the extra on the GPU nodes: pip install 'distinfer[vllm]'"
            ) from None
        args = engine_args(self._spec)
        log.info("starting vLLM for %s with %s", self._spec.name, args)
        loggers = ray_stat_loggers()
        engine_args_obj = AsyncEngineArgs(**args)
        self._engine = (
            AsyncLLM.from_engine_args(engine_args_obj, stat_loggers=loggers)
            if loggers
            else AsyncLLM.from_engine_args(engine_args_obj)
        )
        tokenizer = self._engine.get_tokenizer()
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        self._max_model_len = int(self._engine.model_config.max_model_len)
        # DELTA: each output carries only the new tokens, so streaming costs O(1) per token.
        self._output_kind = RequestOutputKind.DELTA
        self._sampling_cls = VllmSamplingParams

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def tokenize(self, text: str) -> tuple[int, ...]:
        bos = getattr(self._tokenizer, "bos_token", None)
        # A chat template already starts with BOS; adding it again would change the prompt.
        special = not (bos and text.startswith(bos))
        return tuple(self._tokenizer.encode(text, add_special_tokens=special))

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
