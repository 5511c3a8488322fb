"""Step-level reuse of transformer work: TeaCache, FBCache and the CFG cache under one manager.

``CacheConfig`` holds the switches (named as the command-line flags); a pipeline builds a
``CacheManager`` per run over its DiTs (each wrapped as a ``CachedModel``, e.g. ``WanStages``)
and reads the telemetry from ``CacheManager.finish``.
"""

from wan_runtime.cache.config import FB_METRICS, TEACACHE_POLICIES, CacheConfig
from wan_runtime.cache.distributed import reduce_metric
from wan_runtime.cache.manager import CacheManager
from wan_runtime.cache.stages import CachedModel, S2VStages, WanStages

__all__ = [
    "FB_METRICS",
    "TEACACHE_POLICIES",
    "CacheConfig",
    "CacheManager",
    "CachedModel",
    "S2VStages",
    "WanStages",
    "reduce_metric",
]
