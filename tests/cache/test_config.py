"""``CacheConfig`` validation and the ``poly`` policy's refusal of models without coefficients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wan_runtime.cache import CacheConfig
from wan_runtime.cache.config import InvalidCacheConfig
from wan_runtime.errors import InputError


@pytest.mark.parametrize(
    ("field", "value"),
    [("teacache_thresh", -0.1), ("fb_thresh", math.nan), ("fb_ema", 1.0), ("fb_ema", -0.1),
     ("fb_downsample", 0), ("teacache_warmup", -1), ("fb_last_steps", 1.5), ("fb_metric", "l1"),
     ("teacache", "yes"), ("teacache_policy", "POLY"), ("teacache_policy", None)],
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
    CacheConfig(fbcache=True).check_models(["high"])  # TeaCache off: fine


def test_describe_names_the_fields_of_the_caches_that_are_on():
    assert CacheConfig().describe() == "off"
    assert CacheConfig(teacache=True, teacache_thresh=0.2).describe() == (
        "teacache=True teacache_thresh=0.2 teacache_policy=linear teacache_warmup=1 teacache_last_steps=1 "
        "teacache_alternating=False"
    )
    assert CacheConfig(fbcache=True, fb_downsample=4).describe() == (
        "fbcache=True fb_thresh=0.08 fb_metric=hidden_rel_l1 fb_downsample=4 fb_ema=0.0 fb_warmup=1 "
        "fb_last_steps=1 fb_cfg_sep_diff=True"
    )
    both = CacheConfig(teacache=True, fbcache=True).describe().split()
    assert both[0] == "teacache=True" and "fbcache=True" in both and len(both) == 14


def test_serves_matches_check_models():
    poly = CacheConfig(teacache=True, teacache_policy="poly")
    assert poly.serves(["ti2v"]) and not poly.serves(["high", "low"])
    assert CacheConfig().serves(["high"])  # TeaCache off
    assert CacheConfig(teacache=True).serves(["high", "s2v"])


def test_numpy_scalars_are_taken_as_python_numbers():
    config = CacheConfig(fbcache=True, fb_ema=np.float32(0.5), fb_warmup=np.int64(2),
                         fb_thresh=np.float64(0.1))
    assert (config.fb_ema, config.fb_warmup, config.fb_thresh) == (0.5, 2, 0.1)
    assert (type(config.fb_ema), type(config.fb_warmup), type(config.fb_thresh)) == (float, int, float)
    with pytest.raises(InputError, match="--fb_downsample must be an integer >= 1"):
        CacheConfig(fbcache=True, fb_downsample=np.float32(2.0))
    assert "teacache_thresh=0.0 " in CacheConfig(teacache=True, teacache_thresh=-0.0).describe()


def test_a_downsampling_stride_past_any_token_count_is_refused():
    assert CacheConfig(fbcache=True, fb_downsample=2**30).fb_downsample == 2**30
    with pytest.raises(InputError, match=r"--fb_downsample must be an integer >= 1 and at most 2\*\*30 \(a "
                                         r"stride over the tokens\), got 1073741825"):
        CacheConfig(fbcache=True, fb_downsample=2**30 + 1)


def test_a_setting_of_a_cache_left_off_is_refused_as_on_the_command_line():
    """It would change nothing: ``CacheConfig(fb_thresh=0.2)`` without ``fbcache=True`` is an
    uncached run that looks like a cached one."""
    with pytest.raises(InvalidCacheConfig) as err:
        CacheConfig(fb_thresh=0.2, teacache_policy="poly", teacache_alternating=True)
    assert err.value.problems == [
        "teacache_policy='poly' has no effect without teacache=True; set teacache=True or leave "
        "teacache_policy at its default",
        "teacache_alternating=True has no effect without teacache=True; set teacache=True or leave "
        "teacache_alternating at its default",
        "fb_thresh=0.2 has no effect without fbcache=True; set fbcache=True or leave fb_thresh at its "
        "default",
    ]
    assert CacheConfig(teacache=True, teacache_policy="poly", fb_thresh=0.08).teacache_policy == "poly"
