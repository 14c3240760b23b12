"""A placed layer's expert cache (moe_expert_cache_desc, moe_expert_cache_stats)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from . import _capi, _enum
from ._capi import new


@dataclasses.dataclass(frozen=True)
class ExpertCache:
    """Room on one of a Placement's contexts (a GPU) for copies of experts that live on the others
    (host RAM), refilled as the routing moves (moe_expert_cache_desc). Give it as Placement.cache.

    context: the index in the Placement's contexts of the one holding the slots (as Placement.home).
    slots: how many experts it holds (more than the experts living elsewhere are cut to them), or
    0 with budget_bytes: as many as that many bytes hold, as the context's backend stores them.
    policy: "lru" (the slot whose expert was routed longest ago goes) or "lfu" (the one routed in
    fewest forwards, counts halved every halving_forwards forwards, 0: 64; a miss that counts less
    than the victim runs where it lives instead). min_rows: a miss is uploaded only when the
    forward routes at least that many rows to it (0: every miss); raise it for decode on a slow
    bus. At creation the slots are filled with the first experts of the Placement's expert_order
    that live elsewhere, so usage from a previous run (moe.usage_expert_order) starts it warm.

    Uploads read the layer's source weights again: a Layer made from arrays keeps its gate, up
    and down arrays referenced, and they must stay unchanged while it lives; a Model's layer keeps
    the checkpoint's files open.
    """
    context: int = 0
    slots: int = 0
    budget_bytes: int = 0
    policy: str = "lru"
    min_rows: int = 0
    halving_forwards: int = 0

    def __post_init__(self) -> None:
        _enum(_capi.CACHE_POLICIES, self.policy, "ExpertCache.policy")  # refused here, not at the layer

    def _struct(self) -> _capi.ExpertCacheDesc:
        cd = new(_capi.ExpertCacheDesc)
        cd.context, cd.slots, cd.budget_bytes = int(self.context), int(self.slots), int(self.budget_bytes)
        cd.policy = _enum(_capi.CACHE_POLICIES, self.policy, "ExpertCache.policy")
        cd.min_rows, cd.halving_forwards = int(self.min_rows), int(self.halving_forwards)
        return cd


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """What a layer's expert cache has done since the layer was created, over the forwards that
    succeeded (moe_expert_cache_stats). A lookup is one routed expert living off the cache's
    context in one forward: a hit (resident) or a miss. A layer without a cache has slots 0 and
    zeros."""
    context: int                 # the cache's context (index in the Placement's contexts)
    slots: int
    bytes: int                   # what the slots take on that context
    forwards: int                # forwards counted
    hits: int
    misses: int
    uploads: int                 # misses uploaded into a slot (the others ran where they live)
    evictions: int               # uploads that replaced a resident expert
    upload_bytes: int            # bytes written into slots
    upload_ms: float             # host time the uploads took
    rows_cached: int             # routed rows computed in slots (hits' and uploads')
    rows_elsewhere: int          # routed rows of cacheable experts computed where they live
    slot_expert: np.ndarray      # int32 [slots]: each slot's expert, -1 empty
    expert_hits: np.ndarray      # int64 [n_experts]
    expert_misses: np.ndarray    # int64 [n_experts]
    expert_uploads: np.ndarray   # int64 [n_experts]

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses); 0.0 before any lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


def _cache_stats(call: Callable[[Any], None], n_experts: int) -> CacheStats:
    """call(stats struct) is the layer's moe_layer_get_cache_stats; one call, as slots <= n_experts."""
    slot_expert = np.full(max(n_experts, 1), -1, np.int32)
    hits, misses, uploads = (np.zeros(n_experts, np.int64) for _ in range(3))
    s = new(_capi.ExpertCacheStats)
    s.slot_expert, s.expert_hits = slot_expert.ctypes.data, hits.ctypes.data
    s.expert_misses, s.expert_uploads = misses.ctypes.data, uploads.ctypes.data
    call(s)
    return CacheStats(s.context, s.slots, s.bytes, s.forwards, s.hits, s.misses, s.uploads, s.evictions,
                      s.upload_bytes, s.upload_ms, s.rows_cached, s.rows_elsewhere, slot_expert[: s.slots].copy(),
                      hits, misses, uploads)
