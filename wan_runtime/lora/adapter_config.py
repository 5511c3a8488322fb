"""The scale of a LoRA that peft or diffusers saved, which keep its alpha out of the tensors.

diffusers writes peft's ``LoraConfig`` as JSON into the safetensors header under
``lora_adapter_metadata`` (each key behind the component's name, ``transformer.r``, when a pipeline
saved it; bare when the model did); peft writes it to an ``adapter_config.json`` beside its
``adapter_model.safetensors``. Either way a module's factors scale by ``lora_alpha / r`` (over
``sqrt(r)`` with ``use_rslora``), each taken from ``alpha_pattern`` / ``rank_pattern`` where a
pattern names the module, as peft's loader does.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import regex

HEADER_KEY = "lora_adapter_metadata"
PEFT_CONFIG = "adapter_config.json"
_COMPONENT = "transformer."
# peft's LoraConfig defaults, for a config that leaves a field out.
_DEFAULT_RANK, _DEFAULT_ALPHA = 8, 8


class AdapterConfigProblem(ValueError):
    """A saved adapter config that cannot say a module's scale; the message says why."""


class PatternTimeout(AdapterConfigProblem):
    """Matching a config's patterns ran past its time: a problem of the config, not of a module."""


@dataclass(frozen=True)
class AdapterConfig:
    """The fields of peft's ``LoraConfig`` that set each module's scale; ``source`` says where they
    were read, for messages."""

    source: str
    r: int
    lora_alpha: float
    rank_pattern: Mapping[str, int]
    alpha_pattern: Mapping[str, float]
    use_rslora: bool

    @classmethod
    def parse(cls, fields: Mapping[str, object], source: str) -> AdapterConfig:
        """The config of ``fields`` (``LoraConfig.to_dict()``); ``AdapterConfigProblem`` unless each
        field that sets a scale has the type peft gives it."""
        r, alpha = fields.get("r", _DEFAULT_RANK), fields.get("lora_alpha", _DEFAULT_ALPHA)
        ranks, alphas = fields.get("rank_pattern") or {}, fields.get("alpha_pattern") or {}
        rslora = fields.get("use_rslora", False)
        if not _number(r) or not _number(alpha) or not isinstance(rslora, bool):
            raise AdapterConfigProblem(f"{source} has r {r!r}, lora_alpha {alpha!r} and use_rslora "
                                       f"{rslora!r}, not two numbers and a bool")
        for name, pattern in (("rank_pattern", ranks), ("alpha_pattern", alphas)):
            if not isinstance(pattern, Mapping) or not all(_number(v) for v in pattern.values()):
                raise AdapterConfigProblem(f"{source} has a {name} that does not map names to numbers: "
                                           f"{pattern!r}")
        return cls(source, int(r), float(alpha), dict(ranks), dict(alphas), rslora)

    def alpha(self, module: str, rank: int, deadline: float) -> float:
        """The alpha that scales ``module``'s factors of rank ``rank`` by ``alpha / rank`` as peft
        scales them; ``AdapterConfigProblem`` when the config gives the module another rank, and
        ``PatternTimeout`` when matching its patterns runs past ``deadline`` (``time.monotonic``)."""
        r = _matching(self.rank_pattern, module, self.r, deadline)
        if r != rank:
            raise AdapterConfigProblem(f"{self.source} gives {module!r} rank {r:g}, and its factors are of "
                                       f"rank {rank}")
        alpha = _matching(self.alpha_pattern, module, self.lora_alpha, deadline)
        return alpha * math.sqrt(rank) if self.use_rslora else alpha


def saved_config(header: Mapping[str, str] | None, path: Path) -> AdapterConfig | None:
    """The adapter config saved with the LoRA file at ``path``, whose safetensors header is
    ``header``: diffusers' in the header, else peft's beside the file when the file is peft's
    ``adapter_model.safetensors``; None if there is none. ``AdapterConfigProblem`` names what
    cannot be read."""
    raw = (header or {}).get(HEADER_KEY)
    if raw is not None:
        fields = _json(raw, f"the {HEADER_KEY} of its header")
        component = {key[len(_COMPONENT):]: value for key, value in fields.items()
                     if key.startswith(_COMPONENT)}
        if component:
            return AdapterConfig.parse(component, f"the {HEADER_KEY} of its header ({_COMPONENT}*)")
        if "r" in fields or "lora_alpha" in fields:
            return AdapterConfig.parse(fields, f"the {HEADER_KEY} of its header")
        return None  # another component's config alone (its tensors are refused by name)
    beside = path.with_name(PEFT_CONFIG)
    if path.name == "adapter_model.safetensors" and beside.is_file():
        try:
            text = beside.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise AdapterConfigProblem(f"{beside} cannot be read ({err})") from None
        return AdapterConfig.parse(_json(text, str(beside)), str(beside))
    return None


def _json(text: str, source: str) -> dict[str, object]:
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise AdapterConfigProblem(f"{source} is not JSON ({str(err)[:120] or type(err).__name__})") from None
    if not isinstance(fields, dict):
        raise AdapterConfigProblem(f"{source} is not a JSON object")
    return fields


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _matching(patterns: Mapping[str, float], module: str, default: float, deadline: float) -> float:
    """The value of the first pattern that names ``module`` (peft: the pattern matches a whole
    trailing run of the module's dotted name), else ``default``."""
    for pattern, value in patterns.items():
        try:
            # The regex module (re's superset), for its time-out: a file's pattern may backtrack
            # for hours on a module's name.
            if regex.match(rf"(.*\.)?({pattern})$", module, timeout=max(deadline - time.monotonic(), 1e-6)):
                return float(value)
        except regex.error as err:
            problem = f"its pattern {pattern!r} is not a regular expression ({err})"
            raise AdapterConfigProblem(problem) from None
        except TimeoutError:
            raise PatternTimeout(f"matching its patterns to the modules' names took over {MATCH_SECONDS:g} "
                                 f"s, the last {pattern!r} to {module!r} (it backtracks without end); a "
                                 "pattern names modules, as blocks.0.self_attn.q does") from None
    return default


# The time matching a config's patterns to every module's name may take (thousands of matches).
MATCH_SECONDS = 5.0


def match_deadline() -> float:
    """When matching a config's patterns to a file's modules, started now, must end
    (``time.monotonic``): ``MATCH_SECONDS`` from now."""
    return time.monotonic() + MATCH_SECONDS
