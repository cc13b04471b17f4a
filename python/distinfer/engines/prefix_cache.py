"""The synthetic engine's prefix-cache model: vLLM's automatic prefix caching, reduced to its arithmetic.

A prompt is cut into full blocks of `block_size` tokens; block i is named by the hash of every token up
to its end (a chain, as vLLM names blocks), so two prompts share block i only when they agree on all
tokens before it. A lookup counts the prompt's leading blocks already held as hits (in tokens), stops at
the first block not held, and then holds every full block of the prompt, most recently used last; past
`capacity_blocks` the least recently used blocks are dropped. The partial last block is never cached.

The counters are vLLM's: `queries` counts prompt tokens looked up and `hits` the tokens found cached
(vLLM's `vllm:prefix_cache_queries` / `vllm:prefix_cache_hits`), so hits / queries is the hit rate the
report and the dashboards show. One cache per engine, which is one per replica.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


def block_hashes(tokens: Sequence[str | int], block_size: int) -> list[str]:
    """The chained hash of each full block of `tokens` (the partial last block has none)."""
    hashes: list[str] = []
    parent = ""
    for start in range(0, len(tokens) - block_size + 1, block_size):
        block = "\x1f".join(str(t) for t in tokens[start : start + block_size])
        parent = hashlib.blake2b(f"{parent}\x1e{block}".encode(), digest_size=12).hexdigest()
        hashes.append(parent)
    return hashes


@dataclass(frozen=True)
class Lookup:
    prompt_tokens: int
    cached_tokens: int

    @property
    def uncached_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class PrefixCache:
    """An LRU of prompt blocks, with vLLM's hit and query counters (in tokens)."""

    def __init__(self, block_size: int, capacity_blocks: int) -> None:
        if block_size < 1 or capacity_blocks < 1:
            raise ValueError("block_size and capacity_blocks must be positive")
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[str, None] = OrderedDict()
        self.queries = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def lookup(self, tokens: Sequence[str | int]) -> Lookup:
        """Look the prompt up (counting queries and hits), then hold its full blocks."""
        hashes = block_hashes(tokens, self.block_size)
        cached_blocks = 0
        for h in hashes:
            if h not in self._blocks:
                break
            cached_blocks += 1
        for h in hashes:  # the prompt's blocks become the most recently used, in order
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
        found = Lookup(len(tokens), cached_blocks * self.block_size)
        self.queries += found.prompt_tokens
        self.hits += found.cached_tokens
        return found
