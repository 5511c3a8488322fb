"""Every bad argument is an ``InputError`` raised before any model runs; bad folders fail at load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.pipelines.images import gradient_image
from wan_runtime import generate, pipelines
from wan_runtime.checks import check_clip_seeds
from wan_runtime.errors import CheckpointError, InputError
from wan_runtime.pipelines import check_output_size, check_pipeline, load_pipeline, loading
from wan_runtime.tasks import task_spec

GOOD = {"size": "64*64", "frame_num": 5, "sampling_steps": 2, "seed": 0, "progress": False}


@pytest.fixture
def untouchable(monkeypatch):
    """Make any model work an error, to show that argument checks come first."""
    def refuse(pipeline):
        def fail(*args, **kwargs):
            raise AssertionError("a model ran before the arguments were checked")

        monkeypatch.setattr(pipeline.text_encoder, "encode", fail)
        monkeypatch.setattr(pipeline.vae, "encode", fail)
        return pipeline

    return refuse


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": "100*100"}, r"multiples of 16 .* nearest valid sizes: 96\*96, 96\*112, 112\*96, 112\*112"),
        ({"size": "8*64"}, r"nearest valid sizes: 16\*64"),
        ({"size": "64x64"}, "'W\\*H' string such as '1280\\*720'"),
        ({"size": "a*b"}, "'W\\*H' string"),
        ({"size": (64, 64)}, "'W\\*H' string"),
        ({"frame_num": 6}, r"4n\+1 .* nearest valid: 5 or 9"),
        ({"size": "100032*704"}, r"size 100032\*704 is too large for i2v-A14B: at most 16384 pixels a side"),
        ({"frame_num": 4097}, r"4n\+1 from 1 to 4093 .* nearest valid: 4093, the most the official"),
        ({"frame_num": 0}, r"4n\+1"),
        ({"frame_num": 4}, r"4n\+1"),
        ({"frame_num": 5.0}, r"4n\+1"),
        ({"sampling_steps": -1}, "sampling_steps must be a whole number of steps from 1 to 1000"),
        ({"sampling_steps": 0}, "sampling_steps must be a whole number of steps from 1 to 1000"),
        ({"sampling_steps": 100_000_000}, "sampling_steps must be a whole number of steps from 1 to 1000"),
        ({"guide_scale": -1.0}, "guide_scale must be a finite number >= 0"),
        ({"guide_scale": (3.0, -2.0)}, "guide_scale must be a finite number >= 0"),
        ({"guide_scale": (1.0, 2.0, 3.0)}, r"\(low_noise, high_noise\) pair"),
        ({"guide_scale": float("nan")}, "guide_scale must be a finite number"),
        ({"shift": 0.0}, "shift must be a positive finite number"),
        ({"sample_solver": "heun"}, "unknown solver 'heun'"),
        ({"seed": "1"}, "seed must be an integer"),
        ({"seed": 2**64}, "seed must be an integer"),
        ({"n_prompt": None}, "n_prompt must be a string"),
        ({"image": None}, "i2v-A14B needs an input image"),
        ({"image": 3}, "image must be a PIL image or a file path"),
    ],
)
def test_i2v_bad_arguments(i2v_pipeline, untouchable, changes, message):
    arguments = {**GOOD, "image": gradient_image(32, 32), **changes}
    with pytest.raises(InputError, match=message):
        untouchable(i2v_pipeline).generate("a cat", **arguments)


def test_unreadable_images(i2v_pipeline, untouchable, tmp_path):
    pipeline = untouchable(i2v_pipeline)
    with pytest.raises(InputError, match="does not exist"):
        pipeline.generate("a cat", image=tmp_path / "missing.png", **GOOD)
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    with pytest.raises(InputError, match="cannot be read as an image"):
        pipeline.generate("a cat", image=str(text), **GOOD)
    # A PIL image opened lazily decodes its file, cut short, only when converted.
    whole = tmp_path / "whole.png"
    gradient_image(64, 64).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:-200])
    with Image.open(cut) as opened:
        with pytest.raises(InputError, match=r"the image \(a PIL image\) cannot be read as an image .*; "
                                             "load it from a whole file"):
            pipeline.generate("a cat", image=opened, **GOOD)
        assert opened.fp is not None  # the caller's image is left open


def test_image_too_extreme_for_the_area(i2v_pipeline, ti2v_pipeline, untouchable):
    strip = gradient_image(200, 4)
    with pytest.raises(InputError, match="aspect ratio is too extreme"):
        untouchable(i2v_pipeline).generate("a cat", image=strip, **{**GOOD, "size": "16*16"})
    with pytest.raises(InputError, match="does not fit a target area"):
        untouchable(ti2v_pipeline).generate("a cat", image=strip, **{**GOOD, "size": "32*32"})


@pytest.mark.parametrize(("task", "size", "message"), [
    ("i2v-A14B", "832*480", "aspect ratio is too extreme"),
    ("ti2v-5B", "1280*704", "does not fit a target area"),
])
def test_output_size_is_checked_without_a_model(task, size, message):
    with pytest.raises(InputError, match=message):
        check_output_size(task, gradient_image(60000, 1), size)
    check_output_size(task, gradient_image(80, 60), size)


@pytest.mark.parametrize("task", ["i2v-A14B", "ti2v-5B", "s2v-14B"])
def test_output_size_reads_an_images_path_as_generate_does(task, tmp_path):
    image, size = gradient_image(640, 360), task_spec(task).default_size
    image.save(tmp_path / "cat.png")
    expected = check_output_size(task, image, size)
    for path in (tmp_path / "cat.png", str(tmp_path / "cat.png")):
        assert check_output_size(task, path, size) == expected
    with pytest.raises(InputError, match="^image .*dog.png"):
        check_output_size(task, tmp_path / "dog.png", size)
    with pytest.raises(InputError, match="image must be a PIL image or a file path, got int"):
        check_output_size(task, 3, size)


def test_command_line_refuses_an_extreme_image_before_loading(ti2v_root, tmp_path, monkeypatch, capsys):
    strip = tmp_path / "strip.png"
    gradient_image(8000, 8).save(strip)
    monkeypatch.setattr(pipelines, "load_pipeline", _loads_nothing)
    assert generate.main(["--ckpt_dir", str(ti2v_root), "--image", str(strip), "--device", "cpu"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: an image of 8000x8 pixels") and "crop the image" in line


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": "48*64"}, r"multiples of 32 .* nearest valid sizes: 32\*64, 64\*64"),
        ({"guide_scale": (1.0, 2.0)}, "guide_scale is one number"),
        ({"prompt": 3}, "prompt must be a string"),
        ({"progress": "yes"}, "progress must be True or False"),
        ({"on_step": "print"}, "on_step must be a function taking a StepEvent, or None, got 'print'"),
    ],
)
def test_ti2v_bad_arguments(ti2v_pipeline, untouchable, changes, message):
    arguments = {"prompt": "a cat", **GOOD, **changes}
    with pytest.raises(InputError, match=message):
        untouchable(ti2v_pipeline).generate(**arguments)


def test_load_checks_the_folder_and_arguments_first(tmp_path, ti2v_root):
    with pytest.raises(InputError, match="unknown task 't2v-A14B'"):
        load_pipeline("t2v-A14B", ti2v_root)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline("ti2v-5B", tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="missing .*Wan2.2_VAE.pth"):
        load_pipeline("ti2v-5B", tmp_path)
    with pytest.raises(InputError, match="dtype must be"):
        load_pipeline("ti2v-5B", ti2v_root, device="cpu", dtype=torch.float16)
    with pytest.raises(InputError, match="not a torch device"):
        load_pipeline("ti2v-5B", ti2v_root, device="gpu")
    for device in ("mps", "xpu", "meta", torch.device("meta")):
        with pytest.raises(InputError, match="runs on NVIDIA GPUs .CUDA. and the CPU; use 'cuda', 'cuda:N'"):
            load_pipeline("ti2v-5B", ti2v_root, device=device)
        with pytest.raises(InputError, match="runs on NVIDIA GPUs"):
            check_pipeline("ti2v-5B", ti2v_root, device=device)


def _edit_config(root, **values):
    path = root / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda root: (root / "config.json").write_text("{bad json"), "config.json"),
    (lambda root: (root / "config.json").write_text("{}"), "config.json"),
    (lambda root: _edit_config(root, text_len=8), "config.json: text_len 8 holds fewer tokens than the 512"),
    (lambda root: _truncate(root / "diffusion_pytorch_model-00002-of-00002.safetensors"), "truncated"),
    (lambda root: (root / "diffusion_pytorch_model-00001-of-00002.safetensors").unlink(), "lacks shard"),
    (lambda root: (root / "diffusion_pytorch_model.safetensors.index.json").unlink(),
     "holds the DiT's shards but not their index, diffusion_pytorch_model.safetensors.index.json; download"),
    (lambda root: [path.unlink() for path in root.glob("diffusion_pytorch_model*")], "holds neither"),
], ids=["bad-json", "empty-config", "short-text-len", "truncated-shard", "missing-shard", "missing-index",
        "no-weights"])
def test_a_bad_dit_folder_fails_before_any_model_loads(ti2v_root, tmp_path, monkeypatch, corrupt, message):
    root = shutil.copytree(ti2v_root, tmp_path / "Wan2.2-TI2V-5B")
    corrupt(root)
    monkeypatch.setattr(loading, "load_text_encoder", _loads_nothing)
    monkeypatch.setattr(loading, "load_vae", _loads_nothing)
    with pytest.raises(CheckpointError, match=message):
        load_pipeline("ti2v-5B", root, device="cpu", dtype=torch.float32)


def _replace(target, source) -> None:
    """The file or folder ``target`` replaced by a copy of ``source``."""
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    shutil.copytree(source, target) if source.is_dir() else shutil.copyfile(source, target)


@pytest.mark.parametrize(("task", "mix", "message"), [
    ("i2v-A14B", lambda root, roots: _replace(root / "high_noise_model", roots["ti2v-5B"]),
     r"high_noise_model holds a ti2v DiT \(its config.json's model_type\), and i2v-A14B's is i2v: the folder "
     r"is of another release; download i2v-A14B's"),
    ("ti2v-5B", lambda root, roots: _replace(root / "Wan2.2_VAE.pth", roots["i2v-A14B"] / "Wan2.1_VAE.pth"),
     r"Wan2.2_VAE.pth is a VAE of 16-channel latents, and the DiT in .* makes 48-channel ones: one of them "
     r"is of another release \(Wan2.1_VAE.pth has 16 channels, Wan2.2_VAE.pth 48\)"),
    ("ti2v-5B", lambda root, roots: _edit_config(root, num_heads=0), "must split into 0 heads"),
    ("i2v-A14B", lambda root, roots: _replace(root / "low_noise_model", root / "high_noise_model"),
     r"high_noise_model and .*low_noise_model hold the same weights, and i2v-A14B's two experts differ: one "
     r"folder was copied over the other; download low_noise_model \(or high_noise_model\) again"),
], ids=["5B-DiT-as-an-expert", "Wan2.1-VAE-as-Wan2.2", "no-heads", "one-expert-twice"])
def test_files_of_another_release_are_refused_before_any_model_loads(ti2v_root, i2v_root, tmp_path, task, mix,
                                                                     message):
    """The dry run's checks: a DiT or VAE of another task would fail at the first step, loaded."""
    roots = {"ti2v-5B": ti2v_root, "i2v-A14B": i2v_root}
    root = shutil.copytree(roots[task], tmp_path / task)
    mix(root, roots)
    with pytest.raises(CheckpointError, match=message):
        check_pipeline(task, root, device="cpu", dtype=torch.float32)


def _lfs_pointer(path):
    """``path`` as a repository cloned without git-lfs holds it."""
    path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize 1234\n")


def _loads_nothing(*args, **kwargs):
    raise AssertionError("a model loaded before the DiT folder was checked")


def _torch_file_as_pickle(path):
    """``path``'s tensors saved again in torch's format before 1.6 (no zip archive)."""
    torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)


WAV2VEC2 = "wav2vec2-large-xlsr-53-english"


def _truncated_wav2vec2_bin(root):
    """The speech encoder's weights as a truncated ``pytorch_model.bin`` only."""
    folder = root / WAV2VEC2
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    _truncate(folder / "pytorch_model.bin")


@pytest.mark.parametrize(("task", "corrupt", "message"), [
    ("ti2v-5B", lambda root: _truncate(root / "models_t5_umt5-xxl-enc-bf16.pth"),
     "models_t5_umt5-xxl-enc-bf16.pth is truncated or corrupt"),
    ("ti2v-5B", lambda root: _truncate(root / "Wan2.2_VAE.pth"),
     "Wan2.2_VAE.pth is truncated or corrupt .*; download Wan2.2_VAE.pth again from the official Wan2.2"),
    ("ti2v-5B", lambda root: _torch_file_as_pickle(root / "Wan2.2_VAE.pth"),
     "Wan2.2_VAE.pth is not a torch.save zip"),
    ("s2v-14B", lambda root: _truncate(root / WAV2VEC2 / "model.safetensors"),
     "model.safetensors is unreadable or truncated"),
    ("s2v-14B", _truncated_wav2vec2_bin, "wav2vec2 weight file .*pytorch_model.bin is truncated or corrupt"),
    *[("ti2v-5B", lambda root, name=name: _lfs_pointer(root / name),
       f"{name} is a Git LFS pointer, not the file itself .*: run git lfs pull in its folder, or download")
      for name in ("Wan2.2_VAE.pth", "diffusion_pytorch_model-00002-of-00002.safetensors")],
], ids=["truncated-t5", "truncated-vae", "old-format-vae", "truncated-wav2vec2", "truncated-wav2vec2-bin",
        "lfs-pointer-vae", "lfs-pointer-shard"])
def test_a_bad_weight_file_fails_before_any_model_loads(request, tmp_path, monkeypatch, task, corrupt,
                                                        message):
    root = shutil.copytree(request.getfixturevalue(f"{task.split('-')[0]}_root"), tmp_path / task)
    corrupt(root)
    monkeypatch.setattr(loading, "load_text_encoder", _loads_nothing)
    monkeypatch.setattr(loading, "load_vae", _loads_nothing)
    with pytest.raises(CheckpointError, match=message):
        load_pipeline(task, root, device="cpu", dtype=torch.float32)


def test_command_line_names_a_truncated_vae_file_in_one_short_line(ti2v_root, tmp_path, monkeypatch, capsys):
    root = shutil.copytree(ti2v_root, tmp_path / "Wan2.2-TI2V-5B")
    _truncate(root / "Wan2.2_VAE.pth")
    monkeypatch.setattr(loading, "load_text_encoder", _loads_nothing)
    assert generate.main(["--ckpt_dir", str(root), "--device", "cpu", "--dtype", "float32"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (f"error: VAE checkpoint {root / 'Wan2.2_VAE.pth'} is truncated or corrupt (its zip "
                    "directory, at the end of the file, is missing or damaged); download Wan2.2_VAE.pth "
                    "again from the official Wan2.2 release")


@pytest.mark.parametrize(("arguments", "message"), [
    ({"ckpt_dir": None}, "ckpt_dir must be the release folder's path"),
    ({"offload_model": "no"}, "offload_model must be True or False, got 'no'"),
    ({"t5_cpu": 1}, "t5_cpu must be True or False"),
    ({"convert_model_dtype": "False"}, "convert_model_dtype must be True or False"),
])
def test_load_refuses_switches_that_are_not_bools(ti2v_root, arguments, message):
    with pytest.raises(InputError, match=message):
        load_pipeline(**{"task": "ti2v-5B", "ckpt_dir": ti2v_root, **arguments})


def test_every_clip_seed_must_be_valid():
    check_clip_seeds(2**64 - 3, 3, "seed")
    with pytest.raises(InputError, match=rf"seed {2**64 - 2} is too large for 3 clips .* 2\*\*64 - 3"):
        check_clip_seeds(2**64 - 2, 3, "seed")
