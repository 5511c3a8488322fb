"""LoRAs through ``load_pipeline``: the video of the merged weights, per-expert LoRAs for
i2v-A14B, and every refusal before a model loads."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from tests.distributed.ranks import run_ranks
from tests.lora.lora_writers import parameter_shapes, random_lora, write_official
from tests.lora.test_lora_merge import diffusers_merge
from tests.pipelines.images import gradient_image
from tests.tolerances import LORA_VS_MERGED_CHECKPOINT, PARALLEL_VS_ONE_PROCESS_FP32, rel_l2
from wan_runtime.errors import InputError
from wan_runtime.lora import Lora
from wan_runtime.models.s2v_dit import WanModelS2V
from wan_runtime.pipelines import load_pipeline

RUN = {"frame_num": 5, "sampling_steps": 3, "shift": 3.0, "seed": 3, "progress": False}


def ti2v(root, loras=()):
    return load_pipeline("ti2v-5B", root, device="cpu", dtype=torch.float32, loras=loras)


def test_ti2v_video_is_the_merged_checkpoints(tmp_path, ti2v_root):
    """A LoRA gives the video of a release folder whose DiT holds the weights merged as diffusers
    merges them; at strength 0 the video without it, bitwise."""
    lora = write_official(tmp_path / "lora.safetensors", random_lora(parameter_shapes(ti2v_root), seed=4))
    merged_root = tmp_path / "merged"
    shutil.copytree(ti2v_root, merged_root, ignore=shutil.ignore_patterns("diffusion_pytorch_model*"))
    save_file(diffusers_merge(lora, ti2v_root, 0.8), str(merged_root / "diffusion_pytorch_model.safetensors"))

    plain = ti2v(ti2v_root).generate("a cat", size="64*64", **RUN)
    with_lora = ti2v(ti2v_root, [Lora(lora, strength=0.8)]).generate("a cat", size="64*64", **RUN)
    want = ti2v(merged_root).generate("a cat", size="64*64", **RUN)
    assert rel_l2(with_lora, want) <= LORA_VS_MERGED_CHECKPOINT
    assert rel_l2(plain, want) > 100 * LORA_VS_MERGED_CHECKPOINT, "the LoRA does not change the video"
    zero = ti2v(ti2v_root, [Lora(lora, strength=0.0)]).generate("a cat", size="64*64", **RUN)
    assert torch.equal(zero, plain)


@pytest.mark.parametrize("expert", ["high_noise", "low_noise", None])
def test_i2v_lora_changes_the_experts_asked(tmp_path, i2v_root, expert):
    shapes = parameter_shapes(i2v_root / "high_noise_model")
    lora = write_official(tmp_path / "lora.safetensors", random_lora(shapes))
    plain = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32)
    patched = load_pipeline("i2v-A14B", i2v_root, device="cpu", dtype=torch.float32,
                            loras=[Lora(lora, expert=expert)])
    for name, dit in patched.dits.items():
        pairs = zip(dit.parameters(), plain.dits[name].parameters(), strict=True)
        same = all(torch.equal(a, b) for a, b in pairs)
        assert same == (expert not in (None, name)), name
    image = gradient_image(64, 64)
    run = {**RUN, "image": image, "size": "64*64"}
    assert not torch.equal(patched.generate("a cat", **run), plain.generate("a cat", **run))


def test_s2v_lora_changes_the_dit(tmp_path, s2v_root):
    with torch.device("meta"):
        model = WanModelS2V(WanModelS2V.read_checkpoint(s2v_root)[0])
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    lora = write_official(tmp_path / "lora.safetensors", random_lora(shapes, top=False))
    plain = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32)
    patched = load_pipeline("s2v-14B", s2v_root, device="cpu", dtype=torch.float32, loras=[Lora(lora)])
    pairs = zip(patched.dits["dit"].named_parameters(), plain.dits["dit"].parameters(), strict=True)
    changed = {name for (name, a), b in pairs if not torch.equal(a, b)}
    assert changed == {f"{m}.{p}" for m in random_lora(shapes, top=False) for p in ("weight", "bias")}


def test_bad_loras_fail_before_any_model_loads(tmp_path, ti2v_root, i2v_root, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded before the LoRA was checked")

    monkeypatch.setattr("wan_runtime.pipelines.loading.load_text_encoder", no_loading)
    wide = tmp_path / "wide.safetensors"
    dim = parameter_shapes(ti2v_root)["blocks.0.self_attn.q.weight"][0]
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.ones(2, dim),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.ones(2 * dim, 2)}, str(wide))
    with pytest.raises(InputError, match="does not fit the ti2v-5B DiT"):
        ti2v(ti2v_root, [Lora(wide)])
    with pytest.raises(InputError, match="does not fit the i2v-A14B low-noise DiT"):
        load_pipeline("i2v-A14B", i2v_root, device="cpu", loras=[Lora(wide, expert="low_noise")])
    with pytest.raises(InputError, match="does not exist"):
        ti2v(ti2v_root, [Lora(tmp_path / "absent.safetensors")])


def _sharded_with_lora(rank: int, root, lora) -> None:
    arguments = {**RUN, "size": "64*64"}
    one = ti2v(root, [Lora(lora)]).generate("a cat", **arguments)
    several = load_pipeline("ti2v-5B", root, device="cpu", dtype=torch.float32, loras=[Lora(lora)],
                            ulysses_size=2, dit_fsdp=True, t5_fsdp=True).generate("a cat", **arguments)
    assert rel_l2(several, one) <= PARALLEL_VS_ONE_PROCESS_FP32


def test_lora_with_fsdp_and_sequence_parallel(tmp_path, ti2v_root):
    """FSDP shards the merged weights (merged on the CPU as they load, before sharding): two
    processes make the single process's video."""
    lora = write_official(tmp_path / "lora.safetensors", random_lora(parameter_shapes(ti2v_root)))
    run_ranks(_sharded_with_lora, 2, ti2v_root, lora)
