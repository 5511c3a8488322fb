"""``CacheConfig``: every switch of the step cache, named as its command-line flag.

Validation is in one place (``problems``) so the CLI can list every bad value before loading any
weights, and the Python API raises the same messages.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from wan_runtime.cache.policies import available, policy_for
from wan_runtime.errors import InputError

TEACACHE_POLICIES = ("linear", "poly")
FB_METRICS = ("hidden_rel_l1", "residual_rel_l1", "hidden_rel_l2")
_MAX_DOWNSAMPLE = 2**30


class InvalidCacheConfig(InputError):
    """Every invalid value of a ``CacheConfig``, one message each in ``problems``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CacheConfig:
    """Step-level reuse of transformer work; off unless ``teacache`` or ``fbcache`` is set.

    TeaCache: accumulate the policy-rescaled relative L1 change of its signal between consecutive
    cond steps and reuse the cached residual while the sum stays strictly under
    ``teacache_thresh``. ``teacache_policy`` ``"linear"`` compares the first block's modulated
    input raw; ``"poly"`` compares the timestep signal rescaled by a fitted polynomial (the skip
    schedule is then planned before sampling). ``teacache_warmup`` / ``teacache_last_steps``
    force compute on the first / last cond steps of each expert; ``teacache_alternating`` never
    lets a TeaCache skip follow a TeaCache skip.

    FBCache: run the first block, compare its output (``hidden_*``) or residual (``residual_*``)
    with the last computed step's over every ``fb_downsample``-th token, smooth with an EMA of
    weight ``fb_ema`` on the previous value, and skip the other blocks while under ``fb_thresh``.
    ``fb_cfg_sep_diff`` also measures the uncond branch's own change (it still follows the cond
    decision unless its failsafe fires). FBCache is tried before TeaCache.
    """

    teacache: bool = False
    teacache_thresh: float = 0.08
    teacache_policy: str = "linear"
    teacache_warmup: int = 1
    teacache_last_steps: int = 1
    teacache_alternating: bool = False
    fbcache: bool = False
    fb_thresh: float = 0.08
    fb_metric: str = "hidden_rel_l1"
    fb_downsample: int = 1
    fb_ema: float = 0.0
    fb_warmup: int = 1
    fb_last_steps: int = 1
    fb_cfg_sep_diff: bool = True

    def __post_init__(self) -> None:
        found = self.problems()
        if found:
            raise InvalidCacheConfig(found)
        # NumPy scalars (a sweep's np.linspace thresholds) become Python numbers, so that reports,
        # JSON results and the video's metadata show plain values (and -0.0 reads as 0.0).
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, f.name, int(value))
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value) + 0.0)

    @property
    def enabled(self) -> bool:
        """Whether any cache is on; when not, pipelines run the plain DiT forward."""
        return self.teacache or self.fbcache

    def problems(self) -> list[str]:
        """One message per invalid value, named as the flag (``--teacache_thresh`` ...); where every
        value is valid, one per setting changed from its default for a cache left off (it would
        change nothing, silently, as the command line refuses it), named as the field: the command
        line refuses those itself, so these reach the Python caller alone."""
        found = []
        for name in ("teacache", "teacache_alternating", "fbcache", "fb_cfg_sep_diff"):
            if not isinstance(getattr(self, name), bool):
                found.append(f"--{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("teacache_thresh", "fb_thresh"):
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0:  # `not >=` also refuses NaN
                found.append(f"--{name} must be a number >= 0, got {value!r}")
        if not _is_number(self.fb_ema) or not 0 <= self.fb_ema < 1:
            found.append(f"--fb_ema must be in [0, 1), got {self.fb_ema!r}")
        # A stride over the tokens: past any video's token count it measures the first token alone,
        # and past int64 the strided view fails.
        if not _is_int(self.fb_downsample) or not 1 <= self.fb_downsample <= _MAX_DOWNSAMPLE:
            found.append(f"--fb_downsample must be an integer >= 1 and at most 2**30 (a stride over the "
                         f"tokens), got {self.fb_downsample!r}")
        for name in ("teacache_warmup", "teacache_last_steps", "fb_warmup", "fb_last_steps"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                found.append(f"--{name} must be an integer >= 0, got {value!r}")
        if self.fb_metric not in FB_METRICS:
            found.append(f"unknown --fb_metric {self.fb_metric!r} (choose one of {', '.join(FB_METRICS)})")
        if self.teacache_policy not in TEACACHE_POLICIES:
            found.append(f"unknown --teacache_policy {self.teacache_policy!r} (choose "
                         f"{' or '.join(TEACACHE_POLICIES)})")
        if found:
            return found
        defaults = CacheConfig.__dataclass_fields__
        changed = {name: value for name, value in self.as_dict().items()
                   if name in CACHE_FIELDS or value != defaults[name].default}
        return [f"{name}={changed[name]!r} has no effect without {gate}=True; set {gate}=True or leave "
                f"{name} at its default" for gate, names in idle_settings(changed).items() for name in names]

    def serves(self, models: Iterable[str]) -> bool:
        """Whether the policy can serve every named model (``poly`` needs fitted coefficients);
        the command line asks this before loading, with the task's models."""
        return not self.teacache or all(available(self.teacache_policy, name) for name in models)

    def check_models(self, models: Iterable[str]) -> None:
        """Raise ``InputError`` if a policy cannot serve one of the named models (``poly`` needs
        fitted coefficients), so a run fails before any model computes."""
        if self.teacache:
            for name in models:
                policy_for(self.teacache_policy, name)

    def describe(self) -> str:
        """The fields of the caches that are on, as ``name=value`` words (``off`` when none is):
        what a video's settings record."""
        return " ".join(f"{name}={value}" for name, value in self.fields_on().items()) or "off"

    def fields_on(self) -> dict[str, object]:
        """The fields of the caches that are on, switches included, by name (none when both are
        off): the flags that make this configuration."""
        on = {name for switch, names in CACHE_FIELDS.items() if getattr(self, switch) for name in names}
        return {name: value for name, value in self.as_dict().items() if name in on}

    def as_dict(self) -> dict[str, object]:
        """The fields by name (for run reports and benchmark rows)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Each cache's fields, its switch first, by the switch: what the switch turns on.
CACHE_FIELDS = {
    switch: (switch, *(f.name for f in fields(CacheConfig) if f.name.startswith(prefix)))
    for switch, prefix in (("teacache", "teacache_"), ("fbcache", "fb_"))
}


def idle_settings(given: Mapping[str, object]) -> dict[str, list[str]]:
    """The settings in ``given`` (by field name) of a cache whose switch ``given`` leaves off, by
    that switch: they would change nothing."""
    idle = {gate: [name for name in given if name in names[1:]]
            for gate, names in CACHE_FIELDS.items() if not given.get(gate)}
    return {gate: names for gate, names in idle.items() if names}


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
