"""What a pipeline tells about its sampling steps as they finish: a progress bar on the terminal,
and ``StepEvent``s to the caller's ``on_step`` (a GUI's progress, latent previews, a cancel button:
an exception ``on_step`` raises stops the run, sends offloaded models back to the CPU and reaches
the caller of ``generate``; under torchrun every process must raise at the same step, or the
others wait for it in their next collective)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm import tqdm

from wan_runtime.errors import InputError


@dataclass(frozen=True)
class StepEvent:
    """One finished sampling step.

    ``step`` counts from 1 to ``steps`` (per clip for s2v-14B, whose ``clip`` counts from 1 to
    ``clips``; 1 of 1 for the other tasks); ``timestep`` is the step's timestep, ``model`` the
    DiT that ran it, a key of the pipeline's ``dits`` (``"high_noise"`` or ``"low_noise"`` for
    i2v-A14B, ``"dit"`` otherwise). ``latent`` [C, F, h, w] is the latent after the step, on the
    pipeline's device, an inference tensor the run goes on from: read it (e.g. decode a preview
    with ``pipeline.vae``), ``clone()`` it to keep it past the call or to change it; reading it
    waits for the GPU to finish the step.
    """

    step: int
    steps: int
    timestep: float
    model: str
    latent: torch.Tensor
    clip: int = 1
    clips: int = 1


StepCallback = Callable[[StepEvent], object]


class StepReporter:
    """The progress bar (``progress``) and the caller's ``on_step`` of one ``generate``."""

    def __init__(self, progress: bool, on_step: StepCallback | None) -> None:
        if not isinstance(progress, bool):
            raise InputError(f"progress must be True or False, got {progress!r}")
        if on_step is not None and not callable(on_step):
            raise InputError(f"on_step must be a function taking a StepEvent, or None, got {on_step!r}")
        self.progress = progress
        self.on_step = on_step

    @contextmanager
    def steps(
        self, total: int, desc: str, show_model: bool = False, clip: int = 1, clips: int = 1
    ) -> Iterator[Callable[[int, float, str, torch.Tensor], None]]:
        """A progress bar of ``total`` steps for the body, which calls the yielded
        ``done(index, timestep, model, latent)`` as each step (``index`` from 0) finishes;
        ``show_model`` names the model on the bar."""
        with tqdm(total=total, disable=not self.progress, desc=desc, unit="step") as bar:
            def done(index: int, timestep: float, model: str, latent: torch.Tensor) -> None:
                if show_model:
                    bar.set_postfix(expert=model)
                bar.update()
                if self.on_step is not None:
                    self.on_step(StepEvent(index + 1, total, timestep, model, latent, clip, clips))

            yield done
