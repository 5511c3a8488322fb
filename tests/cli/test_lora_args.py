"""``--lora``, ``--lora_high_noise``, ``--lora_low_noise``: parsed into ``Lora`` requests, every
bad one refused with one line and exit 2 before any model is imported."""

from __future__ import annotations

import contextlib

import pytest
import torch
from safetensors.torch import save_file

from tests.cli.test_args import _errors, _resolve
from wan_runtime.lora import Lora, read_loras
from wan_runtime.tiny_checkpoints import write_task_checkpoint

pytestmark = pytest.mark.usefixtures("no_pipelines")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return {task: write_task_checkpoint(task, tmp_path_factory.mktemp(task))
            for task in ("i2v-A14B", "ti2v-5B")}


@pytest.fixture
def lora(tmp_path):
    path = tmp_path / "style=v2.safetensors"  # a '=' in the name, as some published files have
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.ones(2, 8),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.ones(8, 2)}, str(path))
    return path


def test_loras_are_parsed_with_strengths_and_experts(roots, lora, image):
    config = _resolve("--task", "i2v-A14B", "--ckpt_dir", str(roots["i2v-A14B"]), "--image", str(image),
                      "--lora", str(lora), "--lora", f"{lora}=0.5",
                      "--lora_high_noise", f"{lora}=-1e-1", "--lora_low_noise", f"{lora}=2")
    assert config.loras == (Lora(str(lora), 1.0), Lora(str(lora), 0.5), Lora(str(lora), -0.1, "high_noise"),
                            Lora(str(lora), 2.0, "low_noise"))


def test_no_lora_by_default(roots):
    assert _resolve("--ckpt_dir", str(roots["ti2v-5B"])).loras == ()


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--lora", "{lora}=strong", ["--lora", "the strength after '=' must be a finite number", "=0.8"]),
    ("--lora", "{lora}=nan", ["the strength after '=' must be a finite number"]),
    ("--lora", "{dir}/absent.safetensors", ["LoRA file", "absent.safetensors does not exist"]),
    ("--lora_high_noise", "{lora}", ["--lora_high_noise is for i2v-A14B's experts; ti2v-5B has one DiT: "
                                     "use --lora"]),
    ("--lora", "", ["--lora is empty; give a LoRA file (an empty one leaves out the LoRAs of a "
                    "--settings_from video)"]),
    ("--lora_dir", "", ["--lora_dir is empty; give a Wan2.2-Lightning LoRA folder"]),
])
def test_bad_lora_flags_give_one_line_and_exit_2(roots, lora, tmp_path, capsys, flag, value, words):
    argv = ["--ckpt_dir", str(roots["ti2v-5B"]), flag, value.format(lora=lora, dir=tmp_path)]
    [line] = _errors(capsys, argv)
    assert all(word in line for word in words), line


def _lightning_file(path, alphas: dict[str, float], rank: int = 2):
    """A LoRA in the Lightning release's layout (unprefixed names, lora_down/up, alpha per module)."""
    tensors = {}
    for module in ("blocks.0.self_attn.q", "blocks.0.self_attn.k"):
        tensors[f"{module}.lora_down.weight"] = torch.ones(rank, 8)
        tensors[f"{module}.lora_up.weight"] = torch.ones(8, rank)
        if module in alphas:
            tensors[f"{module}.alpha"] = torch.tensor(alphas[module])
    save_file(tensors, str(path))


@pytest.mark.parametrize("alphas", [
    {"blocks.0.self_attn.q": 8.0, "blocks.0.self_attn.k": 8.0},  # the release's files
    {"blocks.0.self_attn.q": 4.0, "blocks.0.self_attn.k": 4.0},
    {"blocks.0.self_attn.q": 8.0},  # one module at alpha 8, the other at scale 1
    {"blocks.0.self_attn.q": 0.0, "blocks.0.self_attn.k": 2.0},
])
def test_a_lightning_folder_merges_as_the_release_does(roots, lora, image, tmp_path, alphas):
    """One LoRA per expert, each module at the alpha the file stores (a module without one at
    scale 1), and the release's sampling for what is not given."""
    folder = tmp_path / "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1"
    folder.mkdir()
    for name in ("high_noise_model", "low_noise_model", "diffusion_pytorch_model"):
        _lightning_file(folder / f"{name}.safetensors", alphas)
    config = _resolve("--task", "i2v-A14B", "--ckpt_dir", str(roots["i2v-A14B"]), "--image", str(image),
                      "--lora_dir", str(folder), "--lora", f"{lora}=0.5")
    assert config.loras == (Lora(folder / "high_noise_model.safetensors", 1.0, "high_noise"),
                            Lora(folder / "low_noise_model.safetensors", 1.0, "low_noise"),
                            Lora(str(lora), 0.5))
    assert (config.sample_solver, config.sample_steps, config.sample_shift, config.sample_guide_scale) == (
        "euler", 4, 5.0, 1.0)
    silent = 0.0 in alphas.values()  # merges nothing, as the release merges it, and told
    with pytest.warns(UserWarning, match="stores alpha 0") if silent else contextlib.nullcontext():
        by_dit = read_loras(config.loras[:2], "i2v-A14B", ["high_noise", "low_noise"])
    modules = ("blocks.0.self_attn.q", "blocks.0.self_attn.k")
    for [(file, _)] in by_dit.values():  # rank 2
        assert {module: update.scale for module, update in file.modules.items()} == {
            module: alphas.get(module, 2.0) / 2 for module in modules}
    config = _resolve("--ckpt_dir", str(roots["ti2v-5B"]), "--lora_dir", f"{folder}=0.5",
                      "--sample_steps", "6", "--sample_solver", "unipc")
    assert config.loras == (Lora(folder / "diffusion_pytorch_model.safetensors", 0.5),)
    assert (config.sample_solver, config.sample_steps, config.sample_shift, config.sample_guide_scale) == (
        "unipc", 6, 5.0, 1.0)


def test_a_lightning_folder_file_named_otherwise_merges_as_the_release(roots, tmp_path):
    """diffusers-style factor names (lora_A) and the official prefix: merged at the file's alpha
    as the release's own names; whole-tensor differences, which the release's merge leaves out,
    are merged and told."""
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.ones(4, 8),
               "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.ones(8, 4),
               "blocks.0.self_attn.q.alpha": torch.tensor(2.0),
               "diffusion_model.blocks.0.norm3.diff": torch.ones(8)},
              str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.warns(UserWarning, match="holds 1 tensor besides the factors .* which the Wan2.2-Lightning"):
        config = _resolve("--ckpt_dir", str(roots["ti2v-5B"]), "--lora_dir", str(tmp_path))
    assert config.loras == (Lora(tmp_path / "diffusion_pytorch_model.safetensors"),)


@pytest.mark.parametrize(("task", "make", "words"), [
    ("i2v-A14B", ["high_noise_model.safetensors"],
     ["LoRA folder", "lacks low_noise_model.safetensors: a Wan2.2-Lightning i2v-A14B folder holds"]),
    ("ti2v-5B", [], ["lacks diffusion_pytorch_model.safetensors"]),
    ("s2v-14B", [], ["Wan2.2-Lightning LoRA folders hold LoRAs for i2v-A14B and ti2v-5B, not s2v-14B; give "
                     "a s2v-14B LoRA file with --lora"]),
])
def test_a_folder_without_its_loras_is_refused(roots, s2v_root, lora, image, tmp_path, capsys, task, make,
                                               words):
    for name in make:
        (tmp_path / name).write_bytes(lora.read_bytes())
    root = s2v_root if task == "s2v-14B" else roots[task]
    extra = ["--audio", str(lora)] if task == "s2v-14B" else []
    argv = ["--task", task, "--ckpt_dir", str(root), "--image", str(image), "--lora_dir", str(tmp_path),
            *extra]
    lines = _errors(capsys, argv)
    assert any(all(word in line for word in words) for line in lines), lines


def test_a_lora_dir_that_is_no_folder_is_refused(roots, lora, capsys):
    [line] = _errors(capsys, ["--ckpt_dir", str(roots["ti2v-5B"]), "--lora_dir", str(lora)])
    assert line == (f"error: LoRA folder {lora} is a file; give the folder holding "
                    "diffusion_pytorch_model.safetensors")
