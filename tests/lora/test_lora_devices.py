"""Where the LoRA products are computed: weights loading to the CPU (offloading, FSDP) with the
products on the GPU get the CPU merge's values (GPU only; no TF32)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from tests.tolerances import rel_l2
from wan_runtime.lora import LoraFile
from wan_runtime.models import WanModel
from wan_runtime.tiny_checkpoints import TINY_TI2V, write_dit

# A GPU's float32 matrix products against the CPU's: summation order alone.
GPU_MERGE_VS_CPU = 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the merge on a GPU needs one")
def test_merge_on_cuda_matches_the_cpu_merge(tmp_path):
    folder = write_dit(tmp_path / "dit", replace(TINY_TI2V, num_layers=2), seed=3)
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "lora.safetensors"
    key = "diffusion_model.blocks.1.ffn.0"
    save_file({f"{key}.lora_down.weight": torch.randn(8, TINY_TI2V.dim, generator=g),
               f"{key}.lora_up.weight": torch.randn(TINY_TI2V.ffn_dim, 8, generator=g),
               f"{key}.alpha": torch.tensor(4.0)}, str(path))
    lora = [(LoraFile.read(path), 0.7)]
    on_cpu = WanModel.from_pretrained(folder, loras=lora).state_dict()
    on_gpu = WanModel.from_pretrained(folder, loras=lora, merge_device="cuda").state_dict()
    plain = WanModel.from_pretrained(folder).state_dict()
    name = "blocks.1.ffn.0.weight"
    assert on_gpu[name].device.type == "cpu"
    assert rel_l2(on_gpu[name], on_cpu[name]) <= GPU_MERGE_VS_CPU
    assert rel_l2(on_gpu[name], plain[name]) > 1e-2
    assert all(torch.equal(on_gpu[k], plain[k]) for k in plain if k != name)
