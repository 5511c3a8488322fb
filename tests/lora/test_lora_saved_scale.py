"""LoRAs whose scale is not in their tensors: diffusers' files (peft's ``LoraConfig`` in the
safetensors header, written here by diffusers' own ``save_lora_weights``), peft's own files
(``adapter_config.json`` beside ``adapter_model.safetensors``), and an alpha given in place of the
file's (the Wan2.2-Lightning folders). Each merge is checked against ``W + strength * scale * B @ A``
with peft's scale: ``lora_alpha / r``, over ``sqrt(r)`` with ``use_rslora``, patterns first."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch
from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin
from safetensors.torch import save_file

from tests.lora.lora_writers import diffusers_names, parameter_shapes
from wan_runtime.errors import InputError
from wan_runtime.lora import Lora, LoraFile, read_loras
from wan_runtime.models import WanModel

MODULES = ("blocks.0.self_attn.q", "blocks.0.ffn.0", "blocks.1.cross_attn.o")
PEFT_DEFAULTS = {"r": 4, "lora_alpha": 16, "alpha_pattern": {}, "rank_pattern": {}, "use_rslora": False}


def factors(shapes: dict, ranks: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(down, up) of each of ``MODULES`` at its rank (4 unless ``ranks`` says)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for module in MODULES:
        rows, cols = shapes[f"{module}.weight"]
        rank = ranks.get(module, 4)
        out[module] = (torch.randn(rank, cols, generator=g) * 0.2, torch.randn(rows, rank, generator=g) * 0.2)
    return out


def diffusers_layers(pairs: dict) -> dict[str, torch.Tensor]:
    names = diffusers_names(list(pairs))
    return {f"{names[m]}.{part}.weight": t for m, (down, up) in pairs.items()
            for part, t in (("lora_A", down), ("lora_B", up))}


def merged(folder, path, strength: float = 1.0) -> dict[str, torch.Tensor]:
    return WanModel.from_pretrained(folder, loras=[(LoraFile.read(path), strength)]).state_dict()


def assert_scales(folder, path, pairs: dict, scales: dict[str, float], strength: float = 1.0) -> None:
    plain, got = WanModel.from_pretrained(folder).state_dict(), merged(folder, path, strength)
    for module, (down, up) in pairs.items():
        want = plain[f"{module}.weight"] + strength * scales[module] * (up @ down)
        torch.testing.assert_close(got[f"{module}.weight"], want, rtol=1e-6, atol=1e-6, msg=module)


@pytest.mark.parametrize(("config", "ranks", "scales"), [
    ({}, {}, {m: 4.0 for m in MODULES}),  # lora_alpha 16 over r 4
    ({"use_rslora": True}, {}, {m: 8.0 for m in MODULES}),  # over sqrt(4)
    # A pattern names a trailing run of the dotted name, as peft matches it (diffusers' names).
    ({"alpha_pattern": {"attn1.to_q": 2}, "rank_pattern": {r"ffn\.net\.0\.proj": 2}}, {"blocks.0.ffn.0": 2},
     {"blocks.0.self_attn.q": 0.5, "blocks.0.ffn.0": 8.0, "blocks.1.cross_attn.o": 4.0}),
])
def test_a_diffusers_file_merges_at_the_scale_its_header_gives(tmp_path, ti2v_dit_dir, config, ranks, scales):
    pairs = factors(parameter_shapes(ti2v_dit_dir), ranks)
    WanLoraLoaderMixin.save_lora_weights(tmp_path, transformer_lora_layers=diffusers_layers(pairs),
                                         transformer_lora_adapter_metadata={**PEFT_DEFAULTS, **config})
    assert_scales(ti2v_dit_dir, tmp_path / "pytorch_lora_weights.safetensors", pairs, scales, strength=0.5)


def test_a_model_saved_diffusers_file_and_a_peft_folder(tmp_path, ti2v_dit_dir):
    """``save_lora_adapter`` writes the config's keys bare and the tensors unprefixed; peft writes
    its config beside ``adapter_model.safetensors``, its tensors behind ``base_model.model.``."""
    pairs = factors(parameter_shapes(ti2v_dit_dir), {})
    layers = diffusers_layers(pairs)
    bare = tmp_path / "bare.safetensors"
    save_file(layers, str(bare), metadata={"lora_adapter_metadata": json.dumps(PEFT_DEFAULTS)})
    assert_scales(ti2v_dit_dir, bare, pairs, {m: 4.0 for m in MODULES})

    peft = tmp_path / "peft" / "adapter_model.safetensors"
    peft.parent.mkdir()
    save_file({f"base_model.model.{k}": v for k, v in layers.items()}, str(peft), metadata={"format": "pt"})
    (peft.parent / "adapter_config.json").write_text(json.dumps({**PEFT_DEFAULTS, "lora_alpha": 2}))
    assert_scales(ti2v_dit_dir, peft, pairs, {m: 0.5 for m in MODULES})
    renamed = peft.rename(tmp_path / "mine.safetensors")
    with pytest.raises(InputError, match="tensor names are peft's .*adapter_config.json .* adapter_model"):
        LoraFile.read(renamed)


BAD_CONFIGS = {
    "rank": ({"rank_pattern": {"attn1.to_q": 8}},
             "gives 'blocks.0.attn1.to_q' rank 8, and its factors are of rank 4"),
    "json": ("{r: 4", "is not JSON"),
    "types": ({"lora_alpha": "16"}, "not two numbers and a bool"),
    "pattern": ({"alpha_pattern": {"to_q[": 2}}, "is not a regular expression"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_config_that_gives_no_scale_is_refused(tmp_path, ti2v_dit_dir, case):
    config, words = BAD_CONFIGS[case]
    text = config if isinstance(config, str) else json.dumps({**PEFT_DEFAULTS, **config})
    path = tmp_path / "lora.safetensors"
    save_file(diffusers_layers(factors(parameter_shapes(ti2v_dit_dir), {})), str(path),
              metadata={"lora_adapter_metadata": text})
    with pytest.raises(InputError, match="cannot be applied: .*" + words.replace("[", r"\[")) as err:
        LoraFile.read(path)
    assert str(path) in str(err.value)


def _with_pattern(tmp_path, ti2v_dit_dir, pattern: str):
    path = tmp_path / "lora.safetensors"
    config = {**PEFT_DEFAULTS, "rank_pattern": {pattern: 8}}
    save_file(diffusers_layers(factors(parameter_shapes(ti2v_dit_dir), {})), str(path),
              metadata={"lora_adapter_metadata": json.dumps(config)})
    return path


def test_a_pattern_that_backtracks_for_hours_in_re_names_no_module_at_once():
    """Python's re takes hours over this one and a long module name."""
    from wan_runtime.lora.adapter_config import _matching

    name = "blocks.0.self_attn.q_proj_with_a_long_name"
    assert _matching({r"((\w|\.)+)+Z": 8}, name, 4.0, time.monotonic() + 1) == 4.0


def test_patterns_that_take_too_long_are_refused_once(tmp_path, ti2v_dit_dir, monkeypatch):
    """The time is the config's, for all its matches: one slow pattern is not paid per module."""
    monkeypatch.setattr("wan_runtime.lora.adapter_config.MATCH_SECONDS", 1e-7)
    pattern = r"((.|\w)*)*Z"
    path = _with_pattern(tmp_path, ti2v_dit_dir, pattern)
    told = (r"cannot be applied: matching its patterns to the modules' names took over 1e-07 s, the last "
            + re.escape(repr(pattern)) + r" to '.*' \(it backtracks without end\); a pattern names modules, "
            r"as blocks.0.self_attn.q does$")
    with pytest.raises(InputError, match=told):
        LoraFile.read(path)


def test_an_alpha_tensor_beside_a_saved_config_is_refused(tmp_path, ti2v_dit_dir):
    layers = diffusers_layers(factors(parameter_shapes(ti2v_dit_dir), {}))
    path = tmp_path / "both.safetensors"
    save_file({**layers, "blocks.0.attn1.to_q.alpha": torch.tensor(4.0)}, str(path),
              metadata={"lora_adapter_metadata": json.dumps(PEFT_DEFAULTS)})
    with pytest.raises(InputError, match="'blocks.0.attn1.to_q' has an alpha tensor, and the "
                                         "lora_adapter_metadata of its header gives every module its alpha"):
        LoraFile.read(path)


def test_an_alpha_in_place_of_the_files_scales_the_factors_alone(tmp_path, ti2v_dit_dir):
    """The alpha replaces the file's (and a saved config's) for each module's factors, and the
    bias of its lora_B, which peft scales with them; whole-tensor differences merge at the
    strength alone."""
    shapes = parameter_shapes(ti2v_dit_dir)
    pairs = factors(shapes, {"blocks.0.ffn.0": 2})
    g = torch.Generator().manual_seed(1)
    up_bias, diff_b = (torch.randn(shapes[f"blocks.0.self_attn.{m}.bias"], generator=g) for m in "qk")
    path = tmp_path / "lora.safetensors"
    save_file({**diffusers_layers(pairs), "blocks.0.attn1.to_q.alpha": torch.tensor(1.0),
               "blocks.0.attn1.to_q.lora_B.bias": up_bias, "blocks.0.attn1.to_k.diff_b": diff_b}, str(path))
    [(file, strength)] = read_loras([Lora(path, 0.5, alpha=8.0)], "ti2v-5B", ["dit"])["dit"]
    got = WanModel.from_pretrained(ti2v_dit_dir, loras=[(file, strength)]).state_dict()
    plain = WanModel.from_pretrained(ti2v_dit_dir).state_dict()
    for module, (down, up) in pairs.items():
        want = plain[f"{module}.weight"] + 0.5 * 8.0 / down.shape[0] * (up @ down)
        torch.testing.assert_close(got[f"{module}.weight"], want, rtol=1e-6, atol=1e-6, msg=module)
    for bias, change in (("q", 0.5 * 8.0 / 4 * up_bias), ("k", 0.5 * diff_b)):
        name = f"blocks.0.self_attn.{bias}.bias"
        torch.testing.assert_close(got[name], plain[name] + change, rtol=0, atol=1e-7, msg=name)
    assert LoraFile.read(path).modules["blocks.0.attn1.to_q"].scale == 0.25  # the file itself unchanged


def test_the_bias_of_lora_b_merges_at_the_scale_of_the_factors(tmp_path, ti2v_dit_dir):
    """peft's layer adds ``lora_B(lora_A(x)) * lora_alpha / r``, its bias too (``lora_bias=True``)."""
    shapes = parameter_shapes(ti2v_dit_dir)
    pairs = factors(shapes, {})
    bias = torch.randn(shapes["blocks.0.self_attn.q.bias"], generator=torch.Generator().manual_seed(2))
    path = tmp_path / "lora.safetensors"
    save_file({**diffusers_layers(pairs), "blocks.0.attn1.to_q.lora_B.bias": bias}, str(path),
              metadata={"lora_adapter_metadata": json.dumps({**PEFT_DEFAULTS, "lora_bias": True})})
    got, plain = merged(ti2v_dit_dir, path, 0.5), WanModel.from_pretrained(ti2v_dit_dir).state_dict()
    name = "blocks.0.self_attn.q.bias"
    torch.testing.assert_close(got[name], plain[name] + 0.5 * 16 / 4 * bias, rtol=0, atol=1e-7)
    save_file({"blocks.0.attn1.to_q.lora_B.bias": bias}, str(path))
    with pytest.raises(InputError, match="'blocks.0.attn1.to_q' has a bias of lora_B but no factors"):
        LoraFile.read(path)


@pytest.mark.parametrize(("alpha", "words"), [(math.nan, "alpha of LoRA .* must be a finite number"),
                                              (True, "alpha of LoRA .* must be a finite number"),
                                              (0.0, r"alpha of LoRA .* must be > 0, got 0.0 \(alpha / rank")])
def test_a_bad_alpha_is_refused(tmp_path, alpha, words):
    path = tmp_path / "lora.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.ones(2, 8),
               "blocks.0.self_attn.q.lora_B.weight": torch.ones(8, 2)}, str(path))
    with pytest.raises(InputError, match=words):
        read_loras([Lora(path, alpha=alpha)], "ti2v-5B", ["dit"])


def test_an_alpha_of_0_in_the_file_is_warned_of(tmp_path):
    """It merges nothing, as ComfyUI and diffusers read it; kohya's trainers read it as the rank."""
    path = tmp_path / "lora.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.ones(2, 8),
               "blocks.0.self_attn.q.lora_B.weight": torch.ones(8, 2),
               "blocks.0.self_attn.q.alpha": torch.tensor(0)}, str(path))
    with pytest.warns(UserWarning, match="stores alpha 0 for blocks.0.self_attn.q, whose factors then merge "
                                         "at scale 0"):
        assert LoraFile.read(path).modules["blocks.0.self_attn.q"].scale == 0
