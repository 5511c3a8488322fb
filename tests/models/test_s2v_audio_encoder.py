"""wav2vec2 features and per-frame buckets against the official ``AudioEncoder``, float32, CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.models.s2v_helpers import official_s2v
from tests.tolerances import rel_l2
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.models.audio_encoder import (
    SAMPLE_RATE,
    Wav2Vec2Features,
    audio_buckets,
    feature_count,
    samples_for_features,
    speech_clip_count,
)
from wan_runtime.tiny_checkpoints import write_wav2vec2

# The same transformers model on the same samples: only the resampling's summation order differs.
AUDIO_FEATURES_VS_OFFICIAL = 1e-5


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory):
    return write_wav2vec2(tmp_path_factory.mktemp("s2v") / "wav2vec2-large-xlsr-53-english", seed=1)


@pytest.mark.parametrize(("seconds", "frames_per_clip"), [(1.3, 8), (2.05, 12)])
def test_buckets_match_official(tmp_path, wav2vec2_dir, seconds, frames_per_clip):
    waveform = np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    np.save(tmp_path / "speech.npy", waveform)
    official = official_s2v("audio_encoder").AudioEncoder(model_id=str(wav2vec2_dir))
    with torch.no_grad():
        want_features = official.extract_audio_feat(str(tmp_path / "speech.npy"), return_all_layers=True)
        want, want_clips = official.get_audio_embed_bucket_fps(
            want_features, fps=16, batch_frames=frames_per_clip, m=0
        )
    features = Wav2Vec2Features(wav2vec2_dir)(torch.from_numpy(waveform))
    got, clips = audio_buckets(features, frames_per_clip)
    assert features.shape == want_features.shape
    assert rel_l2(features, want_features) <= AUDIO_FEATURES_VS_OFFICIAL
    assert clips == want_clips and clips * frames_per_clip > features.size(1) * 16 / 30
    # The official pipeline's layout: [1, layers, C, frames].
    assert rel_l2(got, want.permute(1, 2, 0)[None]) <= AUDIO_FEATURES_VS_OFFICIAL
    assert got[..., -1].abs().max() == 0, "frames past the audio's end are zero"


def test_clip_count_from_the_sample_count_is_that_of_the_encoder(wav2vec2_dir):
    """The command line counts clips without running wav2vec2: the feature count is the encoder's
    own at every length up to 3 s, and the clip count that of the buckets, also on either side of
    the lengths where a second and a third clip of 4 frames start (4560 and 8080 samples)."""
    encoder = Wav2Vec2Features(wav2vec2_dir)
    samples = torch.arange(400, 3 * SAMPLE_RATE)
    lengths = encoder.model._get_feat_extract_output_lengths(samples)
    assert [feature_count(n) for n in samples.tolist()] == lengths.tolist()
    # And its inverse: the fewest samples that make each count of features.
    for features in range(1, 150):
        fewest = samples_for_features(features)
        assert feature_count(fewest) == features and feature_count(fewest - 1) == features - 1
    rng = np.random.default_rng(1)
    for count in (1000, 4559, 4560, 8079, 8080, 12345):
        waveform = rng.standard_normal(count).astype(np.float32)
        assert audio_buckets(encoder(waveform), 4)[1] == speech_clip_count(count, 4), count


def test_weights_saved_by_torch_before_1_6_are_taken(wav2vec2_dir, tmp_path):
    """transformers reads a pytorch_model.bin in torch's old (not zip) format: the up-front check
    lets it through."""
    folder = shutil.copytree(wav2vec2_dir, tmp_path / "wav2vec2-large-xlsr-53-english")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin",
               _use_new_zipfile_serialization=False)
    (folder / "model.safetensors").unlink()
    Wav2Vec2Features.check_pretrained(folder)
    assert Wav2Vec2Features(folder).num_layers == Wav2Vec2Features(wav2vec2_dir).num_layers


def test_weights_that_are_no_torch_file_are_refused_up_front(wav2vec2_dir, tmp_path):
    """A Git LFS pointer where the weights should be (a clone without git-lfs) is neither a zip
    archive nor torch's old format: told as what it is; another file of neither as such."""
    folder = shutil.copytree(wav2vec2_dir, tmp_path / "wav2vec2-large-xlsr-53-english")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    pointer = r"pytorch_model.bin is a Git LFS pointer, not the file itself \(the release was cloned without"
    with pytest.raises(CheckpointError, match=pointer + " git-lfs"):
        Wav2Vec2Features.check_pretrained(folder)
    (folder / "pytorch_model.bin").write_text("<html>Not Found</html>")
    with pytest.raises(CheckpointError, match="pytorch_model.bin is not a torch.save zip archive"):
        Wav2Vec2Features.check_pretrained(folder)


@pytest.mark.parametrize("layers", [10**8, 0, 2.5, "24"])
def test_a_layer_count_is_checked_before_a_model_of_it(wav2vec2_dir, tmp_path, layers):
    """Against the weights' own count where they are safetensors, else against a bound."""
    folder = shutil.copytree(wav2vec2_dir, tmp_path / "wav2vec2-large-xlsr-53-english")
    config = json.loads((folder / "config.json").read_text())
    held = config["num_hidden_layers"]
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    told = f"gives num_hidden_layers {layers!r}, and model.safetensors holds {held} layers .the release's"
    with pytest.raises(CheckpointError, match=told):
        Wav2Vec2Features.check_pretrained(folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    if isinstance(layers, int) and 0 < layers <= 256:
        return
    with pytest.raises(CheckpointError, match=f"gives num_hidden_layers {layers!r} .the release's"):
        Wav2Vec2Features.check_pretrained(folder)


def test_missing_wav2vec2_folder_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="wav2vec2-large-xlsr-53-english"):
        Wav2Vec2Features(tmp_path / "wav2vec2-large-xlsr-53-english")


def test_bad_waveform_and_features(wav2vec2_dir):
    with pytest.raises(InputError, match="mono 16 kHz"):
        Wav2Vec2Features(wav2vec2_dir)(torch.zeros(2, 16000))
    with pytest.raises(InputError, match="layers, T, C"):
        audio_buckets(torch.zeros(25, 0, 32), 80)


class _Runs:
    """A pickle that would run code as it loads."""

    def __reduce__(self):
        return (print, ("code of the file ran",))


def test_weights_that_would_run_code_are_refused_unrun(wav2vec2_dir, tmp_path, capfd):
    folder = shutil.copytree(wav2vec2_dir, tmp_path / "wav2vec2-large-xlsr-53-english")
    torch.save({**load_file(folder / "model.safetensors"), "extra": _Runs()}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"wav2vec2 does not load \(UnpicklingError: .*\); download "
                                              "wav2vec2-large-xlsr-53-english/ of the Wan2.2-S2V-14B") as err:
        Wav2Vec2Features(folder)
    assert "Unsupported global: GLOBAL builtins.print" in str(err.value) or "GLOBAL print" in str(err.value)
    assert "weights_only" not in str(err.value) and "\x1b" not in str(err.value)
    assert "code of the file ran" not in capfd.readouterr().out


def test_load_is_quiet_and_refuses_missing_weights(wav2vec2_dir, tmp_path, capfd):
    Wav2Vec2Features(wav2vec2_dir)
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and "Loading weights" not in captured.err
    broken = shutil.copytree(wav2vec2_dir, tmp_path / "wav2vec2-large-xlsr-53-english")
    weights = load_file(broken / "model.safetensors")
    dropped = "encoder.layers.0.attention.k_proj.bias"
    save_file({k: v for k, v in weights.items() if not k.endswith(dropped)}, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"wav2vec2 weights missing or mis-shaped: .*{dropped}"):
        Wav2Vec2Features(broken)
