"""Every bad LoRA is refused with a message naming the file, the tensor and the fix."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.lora.lora_writers import parameter_shapes, random_lora, write_official
from wan_runtime.errors import InputError
from wan_runtime.lora import Lora, LoraFile, check_loras, read_loras
from wan_runtime.models import WanModel

Q = "diffusion_model.blocks.0.self_attn.q"


def factors(out: int = 64, inp: int = 64, rank: int = 2) -> dict[str, torch.Tensor]:
    return {f"{Q}.lora_down.weight": torch.ones(rank, inp), f"{Q}.lora_up.weight": torch.ones(out, rank)}


BAD_FILES = {
    "text_encoder": ({"lora_te1_encoder_block_0.lora_down.weight": torch.ones(2, 4)}, "text encoder"),
    "loha": ({f"{Q}.hada_w1_a": torch.ones(2, 4)}, "LoHa adapter"),
    "dora": ({**factors(), f"{Q}.dora_scale": torch.ones(1, 64)}, "DoRA"),
    "peft_dora": ({**factors(), f"{Q}.lora_magnitude_vector": torch.ones(64)}, "DoRA"),
    "rank_0": ({**factors(rank=0), f"{Q}.alpha": torch.tensor(2.0)}, "has factors of rank 0"),
    "unknown_part": ({f"{Q}.weight": torch.ones(64, 64)}, "ends in none of"),
    "missing_up": ({f"{Q}.lora_down.weight": torch.ones(2, 64)}, "down factor but no up factor"),
    "rank_mismatch": ({f"{Q}.lora_down.weight": torch.ones(2, 64), f"{Q}.lora_up.weight": torch.ones(64, 3)},
                      "do not multiply"),
    "alpha_vector": ({**factors(), f"{Q}.alpha": torch.ones(2)}, "not one number"),
    "alpha_alone": ({f"{Q}.alpha": torch.tensor(2.0)}, "no factors"),
    "nan": ({f"{Q}.lora_down.weight": torch.full((2, 64), float("nan")),
             f"{Q}.lora_up.weight": torch.ones(64, 2)}, "NaN or infinite"),
    "empty": ({}, "holds no tensors"),
    "int8 factors": ({f"{Q}.lora_down.weight": torch.ones(2, 64, dtype=torch.int8),
                      f"{Q}.lora_up.weight": torch.ones(64, 2)}, "holds int8 values, not floating-point"),
    "bool diff": ({f"{Q}.diff": torch.ones(64, 64, dtype=torch.bool)}, "holds bool values"),
    "bool alpha": ({**factors(), f"{Q}.alpha": torch.tensor(True)}, "holds bool values"),
    "two downs": ({**factors(), f"{Q}.lora_A.weight": torch.ones(2, 64)}, "is a second down of"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_lora_files_are_refused(tmp_path, case):
    tensors, fragment = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(InputError, match=fragment) as err:
        LoraFile.read(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float8_e4m3fn])
def test_values_past_the_first_chunk_are_checked(tmp_path, monkeypatch, dtype):
    """The finite check goes through a tensor in chunks (no float32 copy of a whole one)."""
    monkeypatch.setattr("wan_runtime.lora.lora_file._FINITE_CHUNK", 16)
    down = torch.ones(2, 64)
    down[1, 63] = float("nan")
    path = tmp_path / "late.safetensors"
    save_file({f"{Q}.lora_down.weight": down.to(dtype), f"{Q}.lora_up.weight": torch.ones(64, 2)}, str(path))
    with pytest.raises(InputError, match=f"'{Q}.lora_down.weight' holds NaN or infinite values"):
        LoraFile.read(path)


def test_unreadable_missing_and_pickled_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="not a readable safetensors file; download it again|not a readable"):
        LoraFile.read(garbage)
    with pytest.raises(InputError, match="does not exist"):
        LoraFile.read(tmp_path / "absent.safetensors")
    pickle = tmp_path / "lora.pt"
    torch.save({"a": torch.ones(1)}, pickle)
    with pytest.raises(InputError, match="is a pickle .*use the .safetensors release"):
        LoraFile.read(pickle)
    for legacy in (False, True):  # torch.save's zip archive, and its plain pickle of before torch 1.6
        renamed = tmp_path / f"renamed{int(legacy)}.safetensors"
        torch.save({"a": torch.ones(1)}, renamed, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(InputError, match=r"is a PyTorch pickle named \.safetensors, which can run code"):
            LoraFile.read(renamed)


def dit_fit(tmp_path, folder, tensors, strength=1.0):
    path = tmp_path / "lora.safetensors"
    save_file(tensors, str(path))
    WanModel.check_pretrained(folder, [(LoraFile.read(path), strength)], label="ti2v-5B")


def test_lora_for_another_model_is_refused(tmp_path, ti2v_dit_dir):
    shapes = parameter_shapes(ti2v_dit_dir)
    dim = shapes["blocks.0.self_attn.q.weight"][0]
    for strength in (1.0, 0.0):  # one that merges nothing too: a sweep of strengths learns it at once
        with pytest.raises(InputError, match=r"does not fit the ti2v-5B DiT .*cannot change a weight of "):
            dit_fit(tmp_path, ti2v_dit_dir, factors(out=dim + 8, inp=dim), strength)
    with pytest.raises(InputError, match=r"updates modules that the ti2v-5B DiT does not have \(blocks.99"):
        dit_fit(tmp_path, ti2v_dit_dir, {k.replace("blocks.0.", "blocks.99."): v
                                          for k, v in factors(dim, dim).items()})
    with pytest.raises(InputError, match=r"'blocks.0.self_attn.norm_q' has no bias in the ti2v-5B DiT"):
        dit_fit(tmp_path, ti2v_dit_dir, {"diffusion_model.blocks.0.self_attn.norm_q.diff_b": torch.ones(dim)})
    with pytest.raises(InputError, match=r"diff of shape \[3\] for a weight of shape"):
        dit_fit(tmp_path, ti2v_dit_dir, {"diffusion_model.blocks.0.norm3.diff": torch.ones(3)})
    diffusers_q = {k.replace(Q, "transformer.blocks.0.attn1.to_q"): v for k, v in factors(dim, dim).items()}
    twins = {**factors(dim, dim), **diffusers_q}
    with pytest.raises(InputError, match=r"'blocks.0.attn1.to_q' and 'blocks.0.self_attn.q' both change "
                                         r"blocks.0.self_attn.q.weight|'blocks.0.self_attn.q' and "
                                         r"'blocks.0.attn1.to_q' both change"):
        dit_fit(tmp_path, ti2v_dit_dir, twins)
    bias_twice = {**factors(dim, dim), f"{Q}.lora_B.bias": torch.ones(dim), f"{Q}.diff_b": torch.ones(dim)}
    with pytest.raises(InputError, match=r"has both a bias of lora_B and a diff_b, two changes of one bias"):
        dit_fit(tmp_path, ti2v_dit_dir, bias_twice)
    named_twice = {f"{Q}.diff_b": torch.ones(dim), **{
        k.replace(Q, "transformer.blocks.0.attn1.to_q"): v for k, v in factors(dim, dim).items()},
        "transformer.blocks.0.attn1.to_q.lora_B.bias": torch.ones(dim)}
    with pytest.raises(InputError, match=r"both change blocks.0.self_attn.q.bias"):
        dit_fit(tmp_path, ti2v_dit_dir, named_twice)
    modulation = {"diffusion_model.blocks.0.diff_m": torch.ones(1, 6, dim),
                  "diffusion_model.blocks.0.modulation.diff": torch.ones(1, 6, dim)}
    with pytest.raises(InputError, match=r"both change blocks.0.modulation"):
        dit_fit(tmp_path, ti2v_dit_dir, modulation)


def test_a_fitting_lora_passes_the_check(tmp_path, ti2v_dit_dir):
    path = write_official(tmp_path / "ok.safetensors", random_lora(parameter_shapes(ti2v_dit_dir)))
    assert WanModel.check_pretrained(ti2v_dit_dir, [(LoraFile.read(path), 1.0)]).num_layers > 0


def test_merge_that_overflows_is_refused(tmp_path, ti2v_dit_dir):
    dim = parameter_shapes(ti2v_dit_dir)["blocks.0.self_attn.q.weight"][0]
    path = tmp_path / "huge.safetensors"
    save_file({k: v * 1e20 for k, v in factors(dim, dim).items()}, str(path))
    with pytest.raises(InputError, match=f"LoRA file {path} makes blocks.0.self_attn.q.weight infinite: "
                                         "its values are too large for the weight's numbers; lower the "
                                         "strength"):
        WanModel.from_pretrained(ti2v_dit_dir, loras=[(LoraFile.read(path), 1.0)])


@pytest.mark.parametrize(("loras", "fragment"), [
    ("lora.safetensors", r"must be a list .*; for one LoRA pass \[it\]"),
    ([b"lora.safetensors"], "must hold wan_runtime.lora.Lora items or LoRA file paths, got b'lora"),
    ([Lora("{f}", strength=float("nan"))], "must be a finite number"),
    ([Lora("{f}", strength=True)], "must be a finite number"),
    ([Lora("{f}", strength="1")], "must be a finite number"),
    ([Lora("{f}", expert="high_noise")], "ti2v-5B has one DiT, so LoRA .* takes no expert"),
    ([Lora("{d}/absent.safetensors")], "does not exist"),
])
def test_bad_lora_requests_are_refused(tmp_path, loras, fragment):
    file = tmp_path / "lora.safetensors"
    save_file(factors(), str(file))
    if isinstance(loras, list):
        loras = [lora if not isinstance(lora, Lora) else
                 Lora(lora.path.format(f=file, d=tmp_path), lora.strength, lora.expert) for lora in loras]
    with pytest.raises(InputError, match=fragment):
        check_loras(loras, "ti2v-5B", ["dit"])


def test_a_path_in_the_list_is_the_lora_at_full_strength_on_every_dit(tmp_path):
    file = tmp_path / "lora.safetensors"
    save_file(factors(), str(file))
    dits = ["high_noise", "low_noise"]
    for path in (file, str(file)):
        read = read_loras([path, Lora(file, 0.5, "low_noise")], "i2v-A14B", dits)
        merged = {name: [(lora.path, strength) for lora, strength in pairs] for name, pairs in read.items()}
        assert merged == {"high_noise": [(file, 1.0)], "low_noise": [(file, 1.0), (file, 0.5)]}


def test_unknown_expert_is_refused(tmp_path):
    file = tmp_path / "lora.safetensors"
    save_file(factors(), str(file))
    with pytest.raises(InputError, match="unknown expert 'high'; i2v-A14B's are 'high_noise' and "):
        check_loras([Lora(file, expert="high")], "i2v-A14B", ["high_noise", "low_noise"])
