"""The shipped vLLM CPU models files, served as shipped by `distinfer serve --models`.

`files/models/smollm2.yaml` (the demo's: one model, so Serve's direct ingress behind HAProxy, the
default path) and `files/models/cpu-two-models.yaml` (SmolLM2 on vLLM and the tiny Llama on hf, routed
by name), each exactly as shipped but for its model folders (pointed at the session's copies of
/var/lib/distinfer/models/<model>) and the port. The official `openai` client streams a chat answer
from every model in the file, with its usage, and each answer names the engine its entry asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from distinfer.serve.launch import free_port, served
from vllmapp import need_vllm, shipped_models_file

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", params=["smollm2.yaml", "cpu-two-models.yaml"])
def shipped(
    request: pytest.FixtureRequest,
    smollm2_dir: Path,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, Any]]]:
    need_vllm()
    data = shipped_models_file(request.param, {"smollm2": smollm2_dir, "tiny": tiny_model_dir})
    work = tmp_path_factory.mktemp("shipped")
    (work / "models.yaml").write_text(yaml.safe_dump(data))
    port = free_port()
    with served(work / "models.yaml", port, work / "serve.log", bare=False, timeout_s=300):
        yield f"http://127.0.0.1:{port}", data


def test_the_openai_client_streams_every_model_with_usage(shipped: tuple[str, dict[str, Any]]) -> None:
    url, data = shipped
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    listed = {card.id: (card.model_extra or {})["engine"] for card in client.models.list().data}
    assert listed == {entry["name"]: entry["engine"] for entry in data["models"]}
    assert "vllm" in listed.values()
    for entry in data["models"]:
        stream = client.chat.completions.create(
            model=entry["name"],
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        final = chunks[-1]
        assert text, entry["name"]
        assert final.usage is not None and 1 <= final.usage.completion_tokens <= 8
        assert final.usage.prompt_tokens > 0
        assert (final.model_extra or {})["server_timing"]["engine"] == entry["engine"]
