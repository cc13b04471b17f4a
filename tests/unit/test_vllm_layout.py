"""The vLLM replica layout, without vLLM or a GPU: engine args, placement groups, admission caps.

These are the pure functions the vllm engine and the Serve deployment are built from; the engine
itself needs a GPU and runs only on GPU machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from distinfer.config import (
    ConfigError,
    effective_max_num_seqs,
    model_deployment_options,
    parse_models,
    serve_config,
)
from distinfer.engines.base import SamplingParams
from distinfer.engines.vllm import engine_args, engine_env, sampling_kwargs

LLAMA = "meta-llama/Llama-2-70b-chat-hf"


def vllm_entry(**fields: Any) -> dict[str, Any]:
    return {"name": "llama", "engine": "vllm", "model": LLAMA, **fields}


def one(**fields: Any) -> Any:
    return parse_models({"models": [vllm_entry(**fields)]}).models[0]


# Every vLLM replica runs its code on Serve's event loop (config.VLLM_REPLICA_ENV); hf keeps the thread.
MAIN_LOOP = {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}


def test_tp4_replica_reserves_four_gpu_bundles_on_one_node() -> None:
    spec = one(tensor_parallel_size=4, max_ongoing_requests=32)
    options = model_deployment_options(spec)
    bundles = options["placement_group_bundles"]
    assert len(bundles) == 4
    assert all(bundle["GPU"] == 1.0 for bundle in bundles)
    assert options["placement_group_strategy"] == "STRICT_PACK"
    # The replica actor lives in bundle 0: its own demand must fit there, and it takes no GPU
    # (the four GPUs are for vLLM's tensor-parallel workers).
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0, "runtime_env": MAIN_LOOP}
    assert bundles[0]["CPU"] >= options["ray_actor_options"]["num_cpus"]
    assert options["max_ongoing_requests"] == 32
    args = engine_args(spec)
    assert args["tensor_parallel_size"] == 4
    assert args["distributed_executor_backend"] == "ray"
    # vLLM's metrics carry the models file's name as model_name, as the other engines' do.
    assert args["served_model_name"] == spec.name


def test_only_vllm_replicas_run_their_code_on_serves_loop() -> None:
    hf, syn = parse_models(
        {"models": [{"name": "t", "engine": "hf", "model": "/m"}, {"name": "s", "engine": "synthetic"}]}
    ).models
    assert "runtime_env" not in model_deployment_options(hf)["ray_actor_options"]
    assert "runtime_env" not in model_deployment_options(syn)["ray_actor_options"]
    # The Serve config carries it, so the local platform and the RayService run it the same way.
    (app,) = serve_config(parse_models({"models": [vllm_entry()]}))["applications"]
    (deployment,) = [d for d in app["deployments"] if d["name"] == "model-llama"]
    assert deployment["ray_actor_options"]["runtime_env"] == MAIN_LOOP


def test_tp1_replica_holds_its_gpu_without_placement_group() -> None:
    spec = one()
    options = model_deployment_options(spec)
    assert "placement_group_bundles" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0, "runtime_env": MAIN_LOOP}
    assert "distributed_executor_backend" not in engine_args(spec)


def test_a_cpu_replica_reserves_cpus_no_gpu_and_sizes_its_kv_cache_by_env() -> None:
    spec = one(device="cpu", num_cpus=2, cpu_kvcache_space_gib=2, cpu_reserved_cores=0)
    options = model_deployment_options(spec)
    assert options["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.0, "runtime_env": MAIN_LOOP}
    assert "placement_group_bundles" not in options
    assert spec.gpus_per_replica == 0
    args = engine_args(spec)
    assert "gpu_memory_utilization" not in args  # sized by VLLM_CPU_KVCACHE_SPACE on CPUs
    assert engine_env(spec) == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert engine_env(one()) == {}


def test_max_num_seqs_defaults_to_and_is_capped_by_max_ongoing_requests() -> None:
    assert engine_args(one(max_ongoing_requests=256))["max_num_seqs"] == 256
    assert effective_max_num_seqs(one(max_ongoing_requests=32, max_num_seqs=16)) == 16
    with pytest.raises(ConfigError) as err:
        one(max_ongoing_requests=32, max_num_seqs=64)
    message = str(err.value)
    assert "max_num_seqs=64 exceeds max_ongoing_requests=32" in message
    assert "set max_num_seqs to at most max_ongoing_requests" in message


def test_engine_args_pass_through_after_typed_fields() -> None:
    spec = one(
        dtype="bfloat16",
        max_model_len=4096,
        gpu_memory_utilization=0.85,
        engine_args={"enable_prefix_caching": True, "swap_space": 8, "quantization": "awq"},
    )
    args = engine_args(spec)
    assert args == {
        "model": LLAMA,
        "tensor_parallel_size": 1,
        "dtype": "bfloat16",
        "max_num_seqs": 32,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "served_model_name": spec.name,
        "enable_prefix_caching": True,
        "swap_space": 8,
        "quantization": "awq",
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"engine_args": {"tensor_parallel_size": 8}}, "engine_args.tensor_parallel_size repeats a field"),
        ({"engine_args": {"max_num_seqs": 8}}, "set `max_num_seqs:` on the model entry itself"),
        ({"engine_args": {"pipeline_parallel_size": 2}}, "scale out with `replicas` instead"),
        (
            {"tensor_parallel_size": 2, "engine_args": {"distributed_executor_backend": "mp"}},
            "remove the key (distinfer sets 'ray')",
        ),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size: Input should be greater than or equal to 1"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"device": "cpu", "tensor_parallel_size": 2}, "set tensor_parallel_size to 1"),
        ({"cpu_kvcache_space_gib": 1}, "remove it, or set `device: cpu`"),
        ({"cpu_reserved_cores": 0}, "runs no model threads on the CPU; remove it"),
        ({"device": "tpu"}, "device"),
        ({"engine_args": {"device": "cpu"}}, "set `device:` on the model entry itself"),
    ],
)
def test_bad_vllm_combinations_are_refused_with_the_fix(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        one(**fields)
    assert expected in str(err.value)


def test_sampling_kwargs_carry_every_request_field() -> None:
    params = SamplingParams(
        max_tokens=256, temperature=0.7, top_p=0.9, stop=("\n\n",), seed=7, ignore_eos=True
    )
    assert sampling_kwargs(params) == {
        "n": 1,
        "max_tokens": 256,
        "temperature": 0.7,
        "top_p": 0.9,
        "ignore_eos": True,
        "stop": ["\n\n"],
        "seed": 7,
    }
    assert "seed" not in sampling_kwargs(SamplingParams(max_tokens=1))
    assert "stop" not in sampling_kwargs(SamplingParams(max_tokens=1))


def test_engine_module_imports_without_vllm() -> None:
    # vLLM is an optional extra: importing the engine module must not need it.
    code = (
        "import sys; import distinfer.engines.vllm, distinfer.serve.app; "
        "print(json.dumps('vllm' in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) is False


def test_ray_serve_accepts_the_tp4_deployment_options() -> None:
    # Ray Serve's own schema (the one `serve deploy` and KubeRay validate with) takes our config.
    # In a subprocess: importing ray here would break locust's gevent patching later in the session.
    config = serve_config(parse_models({"models": [vllm_entry(tensor_parallel_size=4)]}))
    code = (
        "import json, sys\n"
        "from ray.serve.schema import ServeDeploySchema\n"
        "schema = ServeDeploySchema.model_validate(json.load(sys.stdin))\n"
        "dep = schema.applications[0].deployments[-1]\n"
        "print(json.dumps([dep.placement_group_bundles, dep.placement_group_strategy]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(config), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    bundles, strategy = json.loads(done.stdout.strip().splitlines()[-1])
    assert strategy == "STRICT_PACK"
    assert [b["GPU"] for b in bundles] == [1.0, 1.0, 1.0, 1.0]
