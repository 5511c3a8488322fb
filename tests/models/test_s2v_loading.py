"""Loading the S2V folders: the complete tiny release folder, and every bad input named with its fix."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tests.models.s2v_helpers import s2v_inputs
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models.audio_encoder import WAV2VEC2_DIR, Wav2Vec2Features
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.tiny_checkpoints import TINY_S2V, write_dit, write_s2v_checkpoint


@pytest.fixture(scope="module")
def s2v_root(tmp_path_factory):
    return write_s2v_checkpoint(tmp_path_factory.mktemp("Wan2.2-S2V-14B"))


def test_complete_folder_loads(s2v_root):
    for name in ("models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json", "Wan2.1_VAE.pth",
                 "config.json", "diffusion_pytorch_model.safetensors.index.json",
                 f"{WAV2VEC2_DIR}/preprocessor_config.json", f"{WAV2VEC2_DIR}/vocab.json"):
        assert (s2v_root / name).exists(), name
    model = WanModelS2V.from_pretrained(s2v_root)
    assert model.config == TINY_S2V
    assert Wav2Vec2Features(s2v_root / WAV2VEC2_DIR).num_layers == TINY_S2V.audio_layers


def _dit_copy(tmp_path, edit, config=TINY_S2V):
    folder = write_dit(tmp_path / "s2v", config, model_class=WanModelS2V)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(enable_motioner=True), "enable_motioner=True"),
        (lambda c: c.update(enable_adain=False), "enable_adain=False"),
        (lambda c: c.update(model_type="i2v"), "not 's2v'"),
        (lambda c: c.pop("audio_dim"), "lacks audio_dim"),
        (lambda c: c.update(num_audio_token=2), r"audio_injector|conv1_local.*config.json implies"),
        (lambda c: c.update(audio_inject_layers=[0]), "unexpected tensors: audio_injector"),
    ],
)
def test_bad_config_is_refused(tmp_path, edit, message):
    folder = _dit_copy(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        WanModelS2V.from_pretrained(folder)
    assert "config.json" in str(err.value)


def test_injection_blocks_the_official_model_would_wire_otherwise_are_refused(tmp_path):
    """Block 1's name is a prefix of blocks 10 and 11's, which the official model injects into too."""
    twelve = replace(TINY_S2V, num_layers=12, audio_inject_layers=(0, 2))
    folder = _dit_copy(tmp_path, lambda c: c.update(audio_inject_layers=[0, 1]), twelve)
    with pytest.raises(CheckpointError, match=r"audio_inject_layers \[1\] also match other blocks"):
        WanModelS2V.from_pretrained(folder)


def test_bad_inputs_are_named(s2v_root):
    model = WanModelS2V.from_pretrained(s2v_root)
    inputs = s2v_inputs(TINY_S2V, seed=1)
    bad = [
        ({"audio": inputs["audio"][..., :5]}, "latent frames"),
        ({"audio": inputs["audio"][:, 1:]}, "wav2vec2 features"),
        ({"ref_latents": inputs["motion_latents"]}, "ref_latents must be"),
        ({"t": torch.zeros(1, 4)}, "one timestep per sample"),
        ({"pose": inputs["pose"][:, :, :1]}, "pose must be"),
    ]
    for change, message in bad:
        with pytest.raises(InputError, match=message):
            model(**{**inputs, **change})
