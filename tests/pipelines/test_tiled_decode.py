"""``generate(vae_tiling=...)``: the video is the tiled decode of the latent the untiled run
decodes whole, for every task, and a tile size the decode cannot use is refused before any model
runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pipelines.images import gradient_image
from wan_runtime.errors import InputError
from wan_runtime.pipelines import StepEvent, load_pipeline

RUN = {"size": "128*128", "frame_num": 5, "sampling_steps": 2, "seed": 3, "progress": False}


def _last_latent(latents: list[torch.Tensor]):
    def on_step(event: StepEvent) -> None:
        latents.append(event.latent.clone())

    return on_step


@pytest.mark.parametrize(("task", "with_image"), [("ti2v-5B", False), ("ti2v-5B", True), ("i2v-A14B", True)])
def test_the_video_is_the_tiled_decode_of_the_same_latent(ti2v_pipeline, i2v_pipeline, task, with_image):
    """Over the Wan2.2 VAE (16-pixel stride) and the Wan2.1 one (8)."""
    pipeline = {"ti2v-5B": ti2v_pipeline, "i2v-A14B": i2v_pipeline}[task]
    image = gradient_image(128, 128) if with_image else None
    latents: list[torch.Tensor] = []
    whole = pipeline.generate("a cat", image=image, on_step=_last_latent(latents), **RUN)
    tiled = pipeline.generate("a cat", image=image, vae_tiling=64, **RUN)
    assert pipeline.last_report.vae_tiling == 64
    [expected] = pipeline.vae.decode([latents[-1]], tiled=True, tile_size=64, tile_overlap=16)
    assert torch.equal(tiled, expected)
    # 64-pixel tiles of a 128-pixel frame: the tiles' decoders each see a part of it.
    assert not torch.equal(tiled, whole)
    # False, 0, and a tile that holds the whole frame, however large (nothing sized by it): the
    # whole frame's decode.
    for whole_frame in (False, 0, 256, 64 * 10**10):
        assert torch.equal(pipeline.generate("a cat", image=image, vae_tiling=whole_frame, **RUN), whole)


def test_s2v_decodes_every_clip_in_tiles(s2v_root, monkeypatch):
    pipeline = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    pipeline.motion_frames = (9, 3)  # a short motion context keeps the clips quick
    calls = []
    decode = pipeline.vae.decode

    def recorded(zs, **tiling):
        calls.append(tiling)
        return decode(zs, **tiling)

    monkeypatch.setattr(pipeline.vae, "decode", recorded)
    speech = (0.3 * np.sin(np.arange(8000) / 9)).astype(np.float32)
    pipeline.generate("a man speaks", image=gradient_image(72, 56), audio=speech, size="64*64",
                      infer_frames=4, num_clip=2, sampling_steps=1, seed=1, progress=False, vae_tiling=True)
    assert calls == [{"tiled": True, "tile_size": 512}] * 2
    report = pipeline.last_report
    assert report.vae_tiling == 512
    assert report.summary().startswith(f"s2v-14B: 64*64, {report.frame_num} frames, seed 1, decoded in "
                                       "512-pixel tiles\n")


@pytest.mark.parametrize("value", [100, -64, "512", 64.0, None])
def test_a_tile_size_the_decode_cannot_use_is_refused(ti2v_pipeline, monkeypatch, value):
    monkeypatch.setattr(ti2v_pipeline, "_encode_text", None)  # nothing may run
    with pytest.raises(InputError, match="^vae_tiling must be a tile size in pixels, a multiple of 64 "):
        ti2v_pipeline.generate("a cat", vae_tiling=value, **RUN)
