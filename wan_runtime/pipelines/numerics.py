"""A guard against a run that went numerically wrong: a latent or video with NaN or infinite values
decodes to a blank video, so the pipeline raises ``NumericalError`` instead of returning one."""

from __future__ import annotations

from collections.abc import Callable

import torch

from wan_runtime.errors import NumericalError


def remedy(
    backend: str, cache_on: bool, dtype: torch.dtype, compiled: bool = False, fp8: bool = False,
    loras: bool = False,
) -> str:
    """What narrows a numerical failure's cause down, of what the run did not do already."""
    # A LoRA's products added to the weights are the likeliest cause where there are any.
    tries = ["without the LoRAs (or at lower strengths)"] if loras else []
    if backend != "torch":
        tries.append("with WAN_KERNELS_BACKEND=torch (no fused kernels)")
    if compiled:
        tries.append("without compile")
    if cache_on:
        tries.append("without the step cache")
    if fp8:
        tries.append("without dit_fp8 (float8 weights)")
    if dtype != torch.float32:
        tries.append("in float32")
    hint = f"to find the cause, run again {', or '.join(tries)}; " if tries else ""
    # A weight file damaged inside passes every check of its headers and sizes.
    return hint + ("a guide scale or shift far from the task's defaults can also overflow, and a DiT weight "
                   "file damaged inside (download it again) gives NaN every way")


class FiniteWatch:
    """The first solver step after which the latent holds a NaN or an infinity.

    Kept on the latent's device and updated without a host synchronisation, so watching costs
    one reduction per step and sampling is not stalled; ``first_bad_step`` reads it once.
    """

    def __init__(self, device: torch.device) -> None:
        self._first = torch.full((), -1, dtype=torch.int64, device=device)

    def observe(self, step: int, latent: torch.Tensor) -> None:
        """Note ``latent`` as it is after solver step ``step`` (0-based)."""
        bad = torch.isfinite(latent).all().logical_not() & (self._first < 0)
        self._first = torch.where(bad, step, self._first)

    def first_bad_step(self) -> int | None:
        """The first step whose latent was not finite, or None if every one was."""
        step = int(self._first)
        return None if step < 0 else step

    def check(self, steps: int, describe: Callable[[int], str], advise: Callable[[], str]) -> None:
        """Raise ``NumericalError`` if a latent was not finite; ``describe(step)`` names what ran
        at that step (e.g. ``"model 'high', bfloat16"``), ``steps`` is the step count and
        ``advise()`` (see ``remedy``) ends the message. Both are called only for a failure."""
        step = self.first_bad_step()
        if step is not None:
            raise NumericalError(f"the latent became NaN or infinite at sampling step {step + 1} of {steps} "
                                 f"({describe(step)}), so the video would be blank; {advise()}")


def check_video(video: torch.Tensor, vae_dtype: torch.dtype) -> None:
    """Raise ``NumericalError`` if the decoded ``video`` holds a NaN or an infinity although its
    latent was finite: the VAE decode overflowed."""
    if not bool(torch.isfinite(video).all()):
        raise NumericalError(f"the decoded video holds NaN or infinite values although its latent is finite "
                             f"(VAE decode in {vae_dtype}); please report it with the output of "
                             "python -m wan_runtime.env")
