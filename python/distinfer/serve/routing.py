"""Ray Serve request routers a models file can name (`request_router`, config.RequestRouterChoice).

`PrefixCacheAffinityRouter` is Ray's own (ray.serve.llm.request_router), taken from the module that
defines it: Ray's public path imports all of Ray Serve LLM, which needs pyarrow (the `ray[llm]` extra),
not installed with `ray[serve]`. One change: Ray's router reads a chat request's messages as dicts, and
distinfer's are pydantic models, which it would read as empty text (and then divide by its length, as
for an empty prompt); here they become their contents, so chat and completions requests are both
matched on their text.

A second change: Ray keeps the prefix tree in a detached actor per deployment, which outlives the
router; a router learns only of replicas that leave while it runs. Replicas replaced while another
router served the deployment (an A/B that switches routers, docs/router-ab.md) stayed in the tree,
and Ray's router then picked one of them as the "smallest tenant" and failed every request with a
KeyError (the request hung). Here every update of the replica set drops the tree's other tenants.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
    PrefixCacheAffinityRouter as _RayPrefixCacheAffinityRouter,
)


class PrefixCacheAffinityRouter(_RayPrefixCacheAffinityRouter):  # type: ignore[misc]
    def update_replicas(self, replicas: list[Any]) -> None:
        super().update_replicas(replicas)
        current = {rid.to_full_id_str() for rid in self._replica_id_set}
        known = ray.get(self._tree_actor.getattr.remote("tenant_to_char_count"))
        stale = [tenant for tenant in known if tenant not in current]
        if stale:
            ray.get(self._tree_actor.remove_tenants.remote(stale))

    def _normalize_prompt_to_string(self, prompt: Any) -> str:
        if isinstance(prompt, list):
            prompt = [m.model_dump() if hasattr(m, "model_dump") else m for m in prompt]
        text: str = super()._normalize_prompt_to_string(prompt)
        return text or " "  # Ray's router divides by the text's length: an empty prompt matches " "
