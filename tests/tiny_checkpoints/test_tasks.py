"""Complete tiny task folders: the official file names, and every component loads and fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.official import official_module
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models import WanModel, load_text_encoder, load_vae
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.tasks import TASKS, check_checkpoint_dir
from wan_runtime.tiny_checkpoints import TINY_S2V, write_task_checkpoint

OFFICIAL_CONFIGS = {
    "i2v-A14B": ("wan_i2v_A14B", "i2v_A14B"),
    "ti2v-5B": ("wan_ti2v_5B", "ti2v_5B"),
    "s2v-14B": ("wan_s2v_14B", "s2v_14B"),
}


@pytest.fixture(scope="module", params=sorted(TASKS))
def task_root(request, tmp_path_factory):
    return request.param, write_task_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_spec_matches_official_config(task):
    module, name = OFFICIAL_CONFIGS[task]
    config = getattr(official_module(f"configs.{module}"), name)
    spec = TASKS[task]
    assert (spec.t5_file, spec.tokenizer_dir, spec.vae_file) == (
        config.t5_checkpoint, config.t5_tokenizer, config.vae_checkpoint
    )
    if task == "i2v-A14B":
        assert spec.dit_folders == (config.high_noise_checkpoint, config.low_noise_checkpoint)
        assert spec.boundary == config.boundary
    if task == "s2v-14B":
        # The S2V config keeps its patch size with the transformer's settings.
        assert (spec.audio_dir, config.transformer.patch_size) == (config.wav2vec, spec.patch_size)
    else:
        assert spec.patch_size == config.patch_size
    assert (spec.vae_stride, spec.text_len) == (config.vae_stride, config.text_len)
    assert (spec.frame_num, spec.sampling_steps, spec.shift, spec.guide_scale, spec.fps) == (
        config.frame_num, config.sample_steps, config.sample_shift, config.sample_guide_scale,
        config.sample_fps,
    )
    assert spec.negative_prompt == config.sample_neg_prompt
    assert spec.num_train_timesteps == config.num_train_timesteps
    official_sizes = official_module("configs").SUPPORTED_SIZES[task]
    assert spec.supported_sizes == official_sizes and spec.default_size in official_sizes


def test_layout_is_written(task_root):
    task, root = task_root
    spec = TASKS[task]
    for relative in (spec.t5_file, spec.tokenizer_dir, spec.vae_file, *spec.dit_folders):
        assert (root / relative).exists(), relative
    assert check_checkpoint_dir(task, root) is spec
    assert not list(root.rglob(".*.partial")), "a temporary file was left behind"


def test_components_load_and_fit_together(task_root):
    task, root = task_root
    spec = TASKS[task]
    encoder = load_text_encoder(root, dtype=torch.float32)
    vae = load_vae(root / spec.vae_file)
    context = encoder.encode(["a cat surfing a wave"])[0][None]
    video = torch.rand(3, 5, 2 * vae.spatial_stride, 4 * vae.spatial_stride) * 2 - 1
    latent = vae.encode([video])[0][None]
    if task == "s2v-14B":
        return  # the S2V DiT's inputs are checked with the models (tests/models/test_s2v_*.py)
    for folder in spec.dit_folders:
        dit = WanModel.from_pretrained(root / folder)
        assert context.shape[-1] == dit.config.text_dim
        y = torch.zeros(1, dit.config.in_dim - latent.shape[1], *latent.shape[2:])
        with torch.no_grad():
            flow = dit(latent, torch.tensor([900.0]), context, y if y.shape[1] else None)
        assert flow.shape == latent.shape and torch.isfinite(flow).all()
    assert vae.decode([flow[0]])[0].shape == video.shape


def test_unknown_task(tmp_path):
    with pytest.raises(InputError, match="unknown task 't2v-A14B'"):
        write_task_checkpoint("t2v-A14B", tmp_path)


def test_checkpoint_check_lists_every_missing_file(tmp_path):
    root = write_task_checkpoint("i2v-A14B", tmp_path / "ckpt")
    assert check_checkpoint_dir("i2v-A14B", root) is TASKS["i2v-A14B"]
    (root / "Wan2.1_VAE.pth").unlink()
    (root / "low_noise_model" / "config.json").unlink()
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_dir("i2v-A14B", root)
    assert "missing Wan2.1_VAE.pth, low_noise_model/config.json" in str(info.value)
    assert str(info.value).endswith("; download the whole official release folder (Wan-AI/Wan2.2-I2V-A14B)")
    (root / "model_index.json").write_text("{}")  # what a diffusers folder holds
    diffusers = (r"it is in diffusers' layout .*: download the repository without -Diffusers "
                 r"\(Wan-AI/Wan2.2-I2V-A14B for i2v-A14B\)$")
    with pytest.raises(CheckpointError, match=diffusers):
        check_checkpoint_dir("i2v-A14B", root)
    with pytest.raises(CheckpointError, match=r"does not exist; pass the folder of the ti2v-5B release "
                                              r"\(Wan-AI/Wan2.2-TI2V-5B\)"):
        check_checkpoint_dir("ti2v-5B", tmp_path / "nowhere")
    with pytest.raises(InputError, match="unknown task"):
        check_checkpoint_dir("t2v-A14B", root)


def test_a_complete_folder_of_another_task_names_that_task(task_root):
    task, root = task_root
    for other in TASKS:
        if other != task:
            with pytest.raises(CheckpointError) as info:
                check_checkpoint_dir(other, root)
            remedy = f"; it holds the {task} release: give that task (--task {task} on the command line)"
            assert str(info.value).endswith(remedy)


def test_s2v_check_needs_the_speech_encoder(tmp_path):
    root = write_task_checkpoint("s2v-14B", tmp_path / "ckpt")
    assert WanModelS2V.from_pretrained(root).config.audio_dim == TINY_S2V.audio_dim
    (root / "wav2vec2-large-xlsr-53-english" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing wav2vec2-large-xlsr-53-english/config.json"):
        check_checkpoint_dir("s2v-14B", root)
    (root / "wav2vec2-large-xlsr-53-english" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing wav2vec2-large-xlsr-53-english/config.json, "
                                              "wav2vec2-large-xlsr-53-english/model.safetensors or "
                                              "wav2vec2-large-xlsr-53-english/pytorch_model.bin; download"):
        check_checkpoint_dir("s2v-14B", root)


def test_tokenizer_folder_needs_its_vocabulary(tmp_path):
    """Without tokenizer.json or spiece.model transformers still loads the folder, as a tokenizer
    of the special tokens alone: the check refuses it, and takes either file."""
    root = write_task_checkpoint("ti2v-5B", tmp_path / "ckpt")
    vocabulary = root / "google" / "umt5-xxl" / "tokenizer.json"
    data = vocabulary.read_bytes()
    vocabulary.unlink()
    with pytest.raises(CheckpointError, match="missing google/umt5-xxl/tokenizer.json or "
                                              "google/umt5-xxl/spiece.model; download"):
        check_checkpoint_dir("ti2v-5B", root)
    (root / "google" / "umt5-xxl" / "spiece.model").write_bytes(data)
    assert check_checkpoint_dir("ti2v-5B", root) is TASKS["ti2v-5B"]


def test_tokenizer_folder_needs_its_special_tokens(tmp_path):
    """Without both files that name them the tokenizer has no padding token, which encoding needs:
    it would fail with every model loaded. Either file is enough."""
    root = write_task_checkpoint("ti2v-5B", tmp_path / "ckpt")
    folder = root / "google" / "umt5-xxl"
    (folder / "special_tokens_map.json").unlink()
    assert check_checkpoint_dir("ti2v-5B", root) is TASKS["ti2v-5B"]
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="missing google/umt5-xxl/special_tokens_map.json or "
                                              "google/umt5-xxl/tokenizer_config.json; download"):
        check_checkpoint_dir("ti2v-5B", root)


def test_a_folder_this_user_cannot_read_is_told(tmp_path, monkeypatch):
    root = write_task_checkpoint("ti2v-5B", tmp_path / "ckpt")
    denied = root / "google" / "umt5-xxl" / "tokenizer.json"
    is_file = Path.is_file

    def unreadable(path):  # root reads every folder: the error a user without access gets
        if path == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return is_file(path)

    monkeypatch.setattr(Path, "is_file", unreadable)
    with pytest.raises(CheckpointError, match=f"checkpoint folder {root}: {denied} cannot be read "
                                              "\\(permission denied\\); give this user read access"):
        check_checkpoint_dir("ti2v-5B", root)
