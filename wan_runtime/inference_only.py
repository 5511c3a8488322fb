"""The inference-only guard: loaded models refuse training mode and gradients.

The runtime's models drop what training needs (dropout, autograd-friendly layouts, float32
master weights), so training them would silently be wrong. With ``WAN_INFERENCE_ONLY=1`` (the
default) every guarded module and each of its submodules raises ``WanError`` on ``.train(True)``
and ``.requires_grad_(True)``; ``WAN_INFERENCE_ONLY=0`` leaves the modules as they are. The guard
sits on the modules: a caller who sets ``requires_grad`` on a parameter tensor directly is not
stopped (the pipelines run under ``torch.inference_mode``, so no graph is recorded there anyway).
"""

from __future__ import annotations

import types

from torch import nn

from wan_runtime.env_switches import env_switch
from wan_runtime.errors import WanError

ENV_VAR = "WAN_INFERENCE_ONLY"


def inference_only_enabled() -> bool:
    """Whether ``WAN_INFERENCE_ONLY`` asks for the guard (unset or empty means yes)."""
    return env_switch(ENV_VAR, True, "refuse training", "allow it")


def _refuse(what: str) -> WanError:
    return WanError(
        f"{what} is refused: the runtime loads its models for inference only. "
        f"Set {ENV_VAR}=0 to lift this guard (the models are not built for training)"
    )


def _train(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise _refuse(f"{type(self).__name__}.train(True)")
    # nn.Module.train, not the guarded method, so the children are not re-checked one by one.
    return nn.Module.train(self, False)


def _requires_grad_(self: nn.Module, requires_grad: bool = True) -> nn.Module:
    if requires_grad:
        raise _refuse(f"{type(self).__name__}.requires_grad_(True)")
    return nn.Module.requires_grad_(self, False)


def guard(module: nn.Module) -> nn.Module:
    """Make ``module`` and its submodules refuse training when the guard is enabled; returns it.

    Instance attributes shadow the two methods, so the module keeps its class (``isinstance``,
    ``state_dict`` and ``.to`` are unchanged) and ``eval()`` still works.
    """
    if inference_only_enabled():
        for sub in module.modules():
            sub.train = types.MethodType(_train, sub)
            sub.requires_grad_ = types.MethodType(_requires_grad_, sub)
    return module
