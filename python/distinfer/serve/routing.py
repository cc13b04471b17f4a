"""Ray Serve request routers a models file can name (`request_router`, config.RequestRouterChoice).

`PrefixCacheAffinityRouter` is Ray's own (ray.serve.llm.request_router), taken from the module that
defines it: Ray's public path imports all of Ray Serve LLM, which needs pyarrow (the `ray[llm]` extra),
not installed with `ray[serve]`. One change: Ray's router reads a chat request's messages as dicts, and
distinfer's are pydantic models, which it would read as empty text (and then divide by its length, as
for an empty prompt); here they become their contents, so chat and completions requests are both
matched on their text.
"""

from __future__ import annotations

from typing import Any

from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
    PrefixCacheAffinityRouter as _RayPrefixCacheAffinityRouter,
)


class PrefixCacheAffinityRouter(_RayPrefixCacheAffinityRouter):  # type: ignore[misc]
    def _normalize_prompt_to_string(self, prompt: Any) -> str:
        if isinstance(prompt, list):
            prompt = [m.model_dump() if hasattr(m, "model_dump") else m for m in prompt]
        text: str = super()._normalize_prompt_to_string(prompt)
        return text or " "  # Ray's router divides by the text's length: an empty prompt matches " "
