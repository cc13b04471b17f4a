"""Ray Serve LLM (Ray 2.60's `ray.serve.llm`) serving one model on vLLM for CPUs, for vllm_peers.py.

A private single-node Ray (its own temp dir and auth token), Serve's HTTP proxy on --port, the OpenAI
app from `build_openai_app` with a CPU accelerator config; blocks until SIGINT or SIGTERM, then shuts
down what it started. Run with the overlay environment vllm_peers.py makes (ray.serve.llm imports
pyarrow, which distinfer's environment does not carry).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--max-num-seqs", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--temp-dir", type=Path, required=True)
    args = parser.parse_args()
    args.temp_dir.mkdir(parents=True, exist_ok=True)
    token = args.temp_dir / "auth-token"
    token.write_text(os.urandom(16).hex())
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)

    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    # Logical CPUs for the LLM server, its router and the proxy (2 on a 2-core host are not enough).
    ray.init(_temp_dir=str(args.temp_dir), include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=8)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    config = LLMConfig(
        model_loading_config={"model_id": args.name, "model_source": args.model_dir},
        accelerator_config={"kind": "cpu"},
        engine_kwargs={"dtype": "float32", "enforce_eager": True, "max_num_seqs": args.max_num_seqs},
        deployment_config={"num_replicas": 1, "max_ongoing_requests": args.max_num_seqs},
    )
    serve.run(build_openai_app({"llm_configs": [config]}), name="rayllm", route_prefix="/", blocking=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
