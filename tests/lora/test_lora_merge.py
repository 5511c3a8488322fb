"""LoRAs merged while the DiT loads, against diffusers' reading of the same files.

diffusers' ``WanLoraLoaderMixin.lora_state_dict`` converts each published naming scheme to its
own ``lora_A``/``lora_B`` factors with the alpha folded in; a merge is then ``W + s * B @ A`` and
``b + s * lora_B.bias``. Its names are mapped back by its own single-file converter.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

from tests.lora.lora_writers import (
    diffusers_names,
    parameter_shapes,
    random_lora,
    write_diffusers,
    write_musubi,
    write_official,
)
from tests.models.test_dit_parity import batch_contexts, make_inputs, official_forward
from tests.official import official_module
from tests.tolerances import DIT_FP32_VS_OFFICIAL, rel_l2
from wan_runtime.errors import InputError
from wan_runtime.lora import LoraFile
from wan_runtime.lora.keys import official_module as official_name
from wan_runtime.models import WanModel

# Merged weights against diffusers' factors: the alpha is folded into another factor there, so
# only float32 rounding of the products differs.
MERGED_VS_DIFFUSERS = 1e-6

# The schemes diffusers reads too (it takes unprefixed official names for its own).
WRITERS = {
    "comfy": lambda path, lora: write_official(path, lora),
    "musubi": write_musubi,
    "diffusers": write_diffusers,
}


def diffusers_merge(path, folder, strength: float) -> dict[str, torch.Tensor]:
    """The folder's float32 weights with the LoRA at ``path`` merged as diffusers reads it."""
    weights = WanModel.from_pretrained(folder).state_dict()
    converted = WanLoraLoaderMixin.lora_state_dict(str(path))
    to_official = {d: m for m, d in diffusers_names(sorted({n.rpartition(".")[0] for n in weights})).items()}
    merged = {name: t.clone() for name, t in weights.items()}
    for key, tensor in converted.items():
        module, _, part = key.removeprefix("transformer.").rpartition(".lora_")
        target = to_official[module]
        if part == "A.weight":
            up = converted[key.replace("lora_A.weight", "lora_B.weight")]
            merged[f"{target}.weight"] += strength * (up @ tensor)
        elif part == "B.bias":
            merged[f"{target}.bias"] += strength * tensor
    return merged


@pytest.mark.parametrize("scheme", list(WRITERS))
@pytest.mark.parametrize("fixture", ["i2v_dit_dir", "ti2v_dit_dir"])
def test_merged_weights_match_diffusers(request, tmp_path, scheme, fixture):
    folder = request.getfixturevalue(fixture)
    shapes = parameter_shapes(folder)
    # musubi's files (and diffusers' reading of them) cover the blocks only, without biases.
    lora = random_lora(shapes, top=scheme != "musubi", biases=scheme != "musubi")
    path = WRITERS[scheme](tmp_path / "lora.safetensors", lora)
    strength = 0.7
    ours = WanModel.from_pretrained(folder, loras=[(LoraFile.read(path), strength)]).state_dict()
    want = diffusers_merge(path, folder, strength)
    plain = WanModel.from_pretrained(folder).state_dict()
    changed = {name for name in want if not torch.equal(want[name], plain[name])}
    biases = {f"{m}.bias" for m, parts in lora.items() if "diff_b" in parts}
    assert changed == {f"{m}.weight" for m in lora} | biases
    for name, tensor in ours.items():
        if name in changed:
            assert rel_l2(tensor, want[name]) <= MERGED_VS_DIFFUSERS, name
            assert rel_l2(tensor, plain[name]) > 1e-2, f"{name}: the LoRA barely changed it"
        else:
            assert torch.equal(tensor, plain[name]), f"{name} changed, and the LoRA does not touch it"


def test_every_scheme_merges_the_same(tmp_path, ti2v_dit_dir):
    """One LoRA under each naming scheme: the same weights (bitwise where the file holds the same
    factors; diffusers' files fold the alpha into a factor)."""
    lora = random_lora(parameter_shapes(ti2v_dit_dir), top=False, biases=False)
    schemes = {**WRITERS, "unprefixed_peft": lambda path, lora: write_official(path, lora, prefix="",
                                                                               down="lora_A", up="lora_B"),
               "diffsynth": lambda path, lora: write_official(path, lora, prefix="pipe.dit.",
                                                              down="lora_A.default", up="lora_B.default"),
               "videox_fun": lambda path, lora: write_musubi(path, lora, prefix="lora_unet__"),
               "lycoris": lambda path, lora: write_musubi(path, lora, prefix="lycoris_"),
               **{f"flat_diffusers_{prefix}": lambda path, lora, prefix=prefix: write_musubi(
                   path, lora, prefix=prefix, diffusers=True)
                  for prefix in ("lora_transformer_", "lora_unet_")}}
    loaded = {name: WanModel.from_pretrained(ti2v_dit_dir, loras=[
        (LoraFile.read(write(tmp_path / f"{name}.safetensors", lora)), 1.0)]).state_dict()
        for name, write in schemes.items()}
    comfy = loaded.pop("comfy")
    folded = loaded.pop("diffusers")
    for name, weights in loaded.items():
        assert all(torch.equal(weights[k], comfy[k]) for k in comfy), name
    assert all(rel_l2(folded[k], comfy[k]) <= MERGED_VS_DIFFUSERS for k in comfy)


def test_merged_dit_matches_official_model(tmp_path, i2v_dit_dir):
    """The official model given diffusers' merged weights computes what ours loaded with the LoRA does."""
    path = write_official(tmp_path / "lora.safetensors", random_lora(parameter_shapes(i2v_dit_dir), seed=3))
    ours = WanModel.from_pretrained(i2v_dit_dir, loras=[(LoraFile.read(path), 1.0)])
    ref = official_module("modules.model").WanModel.from_pretrained(i2v_dit_dir).eval()
    ref.load_state_dict(diffusers_merge(path, i2v_dit_dir, 1.0))
    x, t, contexts, y = make_inputs("i2v", seed=5, per_token=False)
    with torch.no_grad():
        got = ours(x, t, batch_contexts(contexts), y)
        want = official_forward(ref, x, t, contexts, y)
        plain = WanModel.from_pretrained(i2v_dit_dir)(x, t, batch_contexts(contexts), y)
    assert rel_l2(got, want) <= DIT_FP32_VS_OFFICIAL
    assert rel_l2(plain, want) > 100 * DIT_FP32_VS_OFFICIAL, "the LoRA does not change the output"


def test_diff_tensors_add_to_weights(tmp_path, ti2v_dit_dir):
    """``diff`` (a whole weight's change: norms, the head, a block's modulation) adds ``strength *
    diff``, as ComfyUI applies it; diffusers drops norm diffs, so this is checked by hand."""
    shapes = parameter_shapes(ti2v_dit_dir)
    g = torch.Generator().manual_seed(1)
    targets = ["blocks.0.norm3.weight", "blocks.1.self_attn.norm_q.weight", "head.head.weight",
               "blocks.0.modulation"]
    diffs = {name: torch.randn(shapes[name], generator=g) for name in targets}
    lora = {name.removesuffix(".weight"): {"diff": d} for name, d in diffs.items()}
    # LightX2V's distilled LoRAs name a block's modulation change ``blocks.N.diff_m``.
    diffs["blocks.1.modulation"] = torch.randn(shapes["blocks.1.modulation"], generator=g)
    lora["blocks.1"] = {"diff_m": diffs["blocks.1.modulation"]}
    path = write_official(tmp_path / "diff.safetensors", lora)
    ours = WanModel.from_pretrained(ti2v_dit_dir, loras=[(LoraFile.read(path), -0.5)]).state_dict()
    plain = WanModel.from_pretrained(ti2v_dit_dir).state_dict()
    for name, diff in diffs.items():
        torch.testing.assert_close(ours[name], plain[name] - 0.5 * diff, rtol=0, atol=1e-6)


def test_conv_lora_on_the_patch_embedding(tmp_path, ti2v_dit_dir):
    """A LoRA of the Conv3d patch embedding: down [r, C_in, kt, kh, kw], up [C_out, r, 1, 1, 1];
    its change is the 1x1x1 convolution of down by up."""
    shape = parameter_shapes(ti2v_dit_dir)["patch_embedding.weight"]
    g = torch.Generator().manual_seed(2)
    down, up = torch.randn(3, *shape[1:], generator=g), torch.randn(shape[0], 3, 1, 1, 1, generator=g)
    path = write_official(tmp_path / "conv.safetensors", {"patch_embedding": {"down": down, "up": up}})
    ours = WanModel.from_pretrained(ti2v_dit_dir, loras=[(LoraFile.read(path), 0.5)]).state_dict()
    plain = WanModel.from_pretrained(ti2v_dit_dir).state_dict()
    change = torch.nn.functional.conv3d(down.transpose(0, 1), up).transpose(0, 1)
    torch.testing.assert_close(ours["patch_embedding.weight"], plain["patch_embedding.weight"] + 0.5 * change,
                               rtol=1e-5, atol=1e-6)


def test_wan21_image_branch_is_left_out_with_a_warning(tmp_path, i2v_dit_dir):
    """A Wan2.1 image-to-video LoRA also updates that model's CLIP image branch, which Wan2.2 lacks:
    those modules are left out (named in a warning) and the rest merges as without them."""
    shapes = parameter_shapes(i2v_dit_dir)
    lora = random_lora(shapes, top=False)
    dim = shapes["blocks.0.cross_attn.k.weight"][0]
    wan21 = {**lora, "blocks.0.cross_attn.k_img": {"down": torch.ones(4, dim), "up": torch.ones(dim, 4)},
             "blocks.0.cross_attn.norm_k_img": {"diff": torch.ones(dim)},
             "img_emb.proj.1": {"down": torch.ones(4, 1280), "up": torch.ones(dim, 4)}}
    with pytest.warns(UserWarning, match=r"Wan2.1's CLIP image branch \(blocks.0.cross_attn.k_img; "
                                         r"blocks.0.cross_attn.norm_k_img; img_emb.proj.1\)"):
        mixed = LoraFile.read(write_official(tmp_path / "wan21.safetensors", wan21))
    plain = LoraFile.read(write_official(tmp_path / "wan22.safetensors", lora))
    got = WanModel.from_pretrained(i2v_dit_dir, loras=[(mixed, 1.0)]).state_dict()
    want = WanModel.from_pretrained(i2v_dit_dir, loras=[(plain, 1.0)]).state_dict()
    assert all(torch.equal(got[name], want[name]) for name in want)
    only = {k: v for k, v in wan21.items() if "img" in k}
    with pytest.raises(InputError, match="updates only Wan2.1's CLIP image branch"):
        LoraFile.read(write_official(tmp_path / "only.safetensors", only))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_low_precision_files_merge_their_values(tmp_path, ti2v_dit_dir, dtype):
    """Half-precision and float8 LoRA files: the factors' stored values, widened, merge."""
    lora = random_lora(parameter_shapes(ti2v_dit_dir), top=False, biases=False)
    stored = {m: {p: t.to(dtype) for p, t in parts.items()} for m, parts in lora.items()}
    widened = {m: {p: t.float() for p, t in parts.items()} for m, parts in stored.items()}
    got, want = (WanModel.from_pretrained(ti2v_dit_dir, loras=[(LoraFile.read(
        write_official(tmp_path / f"{name}.safetensors", parts)), 1.0)]).state_dict()
        for name, parts in (("stored", stored), ("widened", widened)))
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_several_loras_add_and_zero_strength_changes_nothing(tmp_path, ti2v_dit_dir):
    shapes = parameter_shapes(ti2v_dit_dir)
    first = LoraFile.read(write_official(tmp_path / "a.safetensors", random_lora(shapes, seed=1)))
    second = LoraFile.read(write_musubi(tmp_path / "b.safetensors", random_lora(shapes, seed=2, top=False,
                                                                               biases=False)))
    plain = WanModel.from_pretrained(ti2v_dit_dir).state_dict()
    both = WanModel.from_pretrained(ti2v_dit_dir, loras=[(first, 0.5), (second, 2.0)]).state_dict()
    alone = [WanModel.from_pretrained(ti2v_dit_dir, loras=[lora]).state_dict()
             for lora in ((first, 0.5), (second, 2.0))]
    for name in plain:
        want = plain[name] + (alone[0][name] - plain[name]) + (alone[1][name] - plain[name])
        torch.testing.assert_close(both[name], want, rtol=1e-5, atol=1e-6)
    zero = WanModel.from_pretrained(ti2v_dit_dir, loras=[(first, 0.0)]).state_dict()
    assert all(torch.equal(zero[name], plain[name]) for name in plain)


@pytest.mark.parametrize("convert", [False, True])
def test_bfloat16_weights_round_once(tmp_path, ti2v_dit_dir, convert):
    """In bfloat16 each changed weight is the float32 merge rounded once (not rounded, merged and
    rounded again)."""
    path = write_official(tmp_path / "lora.safetensors", random_lora(parameter_shapes(ti2v_dit_dir)))
    lora = [(LoraFile.read(path), 1.0)]
    merged = WanModel.from_pretrained(ti2v_dit_dir, loras=lora).state_dict()
    low = WanModel.from_pretrained(ti2v_dit_dir, dtype=torch.bfloat16, convert_model_dtype=convert,
                                   loras=lora).state_dict()
    for name, tensor in low.items():
        assert torch.equal(tensor, merged[name].to(tensor.dtype)), name
    assert any(t.dtype == torch.bfloat16 for t in low.values())


def test_every_diffusers_name_maps_back(i2v_dit_dir):
    """The runtime's diffusers-to-official table inverts diffusers' converter on every parameter."""
    modules = sorted({name.rpartition(".")[0] or name for name in parameter_shapes(i2v_dit_dir)})
    for module, diffusers in diffusers_names(modules).items():
        assert official_name(diffusers) == module
