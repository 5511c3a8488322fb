"""The official S2V modules (``wan.modules.s2v``) importable on a CPU, and shared S2V test inputs.

``tests.official`` registers ``wan.modules.s2v`` and ``wan.distributed`` as bare namespaces (their
``__init__`` imports librosa and FSDP helpers); the audio encoder itself imports librosa (not
installed: file decoding is not what the tests compare), so ``librosa.load`` is stubbed to read a
``.npy`` waveform already at 16 kHz.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch

from tests.official import official_module


def _stub_librosa() -> None:
    if "librosa" in sys.modules:
        return
    stub = types.ModuleType("librosa")
    stub.load = lambda path, sr: (np.load(path), sr)
    sys.modules["librosa"] = stub


def official_s2v(name: str) -> types.ModuleType:
    """Import ``wan.modules.s2v.<name>`` with the CPU shims (flash attention of ``wan.modules.model``
    too, which the audio cross-attention inherits)."""
    official_module("modules.model")
    _stub_librosa()
    return official_module(f"modules.s2v.{name}")


def s2v_inputs(config, seed: int, batch: int = 1, frames: int = 2, size: int = 16, motion: int = 19):
    """Random DiT inputs of one clip: ``frames`` latent frames of ``size``x``size`` latents, and the
    audio columns those frames take with the release's motion_frames (73, 19)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "x": randn(batch, config.in_dim, frames, size, size),
        "t": torch.tensor([700.0, 250.0][:batch]),
        "context": randn(batch, 7, config.text_dim),
        "ref_latents": randn(batch, config.in_dim, 1, size, size),
        "motion_latents": randn(batch, config.in_dim, motion, size, size),
        "audio": randn(batch, config.audio_layers, config.audio_dim, 4 * frames),
        "pose": randn(batch, config.cond_dim, frames, size, size),
    }
