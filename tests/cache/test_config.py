"""``CacheConfig`` validation and the ``poly`` policy's refusal of models without coefficients."""

from __future__ import annotations

import math

import pytest

from wan_runtime.cache import CacheConfig
from wan_runtime.cache.config import InvalidCacheConfig
from wan_runtime.errors import InputError


@pytest.mark.parametrize(
    ("field", "value"),
    [("teacache_thresh", -0.1), ("fb_thresh", math.nan), ("fb_ema", 1.0), ("fb_ema", -0.1),
     ("fb_downsample", 0), ("teacache_warmup", -1), ("fb_last_steps", 1.5), ("fb_metric", "l1"),
     ("teacache", "yes")],
)
def test_bad_values_are_refused(field, value):
    with pytest.raises(InvalidCacheConfig, match=field.split("_")[0]) as err:
        CacheConfig(**{field: value})
    assert len(err.value.problems) == 1


def test_poly_needs_fitted_coefficients():
    config = CacheConfig(teacache=True, teacache_policy="poly")
    config.check_models(["ti2v"])
    with pytest.raises(InputError, match=r"no fitted coefficients for model 'high'.*fitted set: ti2v"):
        config.check_models(["high", "low"])
    CacheConfig(teacache=False, teacache_policy="poly").check_models(["high"])  # TeaCache off: fine
