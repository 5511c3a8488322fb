"""The official ``WanI2V`` and ``WanTI2V`` pipelines on the CPU, built on a tiny checkpoint folder.

Their constructors hard-code the release sizes of the text encoder and the VAE, and a CUDA device,
so the objects are made without them (``object.__new__``) and given the attributes ``generate``
reads: the official tiny umT5 wrapper, the official VAE wrapper at the tiny widths, the official
DiT(s) loaded from the folder, and the config values of the task.

``wan.image2video`` and ``wan.utils.utils`` import torchvision (and imageio), which the test
environment lacks. While those two modules import, minimal stand-ins are registered: a
``torchvision.transforms.functional.to_tensor`` written from torchvision's documented behaviour
(the only torchvision function the pipelines call), and empty modules for the rest. They are
removed again afterwards, so that no other code finds a fake torchvision.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import torch

from tests.models.vae_helpers import official_wrapper
from tests.official import import_with_stand_ins, official_module
from wan_runtime.models.t5_checkpoint import CHECKPOINT_FILE
from wan_runtime.models.text_encoder import TOKENIZER_DIR
from wan_runtime.tasks import TASKS
from wan_runtime.tiny_checkpoints.dit import TINY_I2V
from wan_runtime.tiny_checkpoints.text_encoder import tiny_sizes

_SHIMMED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
            "torchvision.utils", "imageio")


def to_tensor(picture) -> torch.Tensor:
    """torchvision's ``to_tensor`` for 8-bit RGB images: [3, H, W] float32, bytes / 255."""
    array = np.asarray(picture, dtype=np.float32) / np.float32(255)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _stand_ins() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in _SHIMMED}
    modules["torchvision.transforms.functional"].to_tensor = to_tensor
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision"].utils = modules["torchvision.utils"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    return modules


def official_with_torchvision(name: str) -> types.ModuleType:
    """``wan.<name>`` (``"image2video"``, ``"textimage2video"``, ``"utils.utils"``) with the CPU
    shims of ``tests.official`` applied to the modules it imports."""
    for module in ("modules.model", "modules.t5", "modules.vae2_1", "modules.vae2_2",
                   "utils.fm_solvers", "utils.fm_solvers_unipc"):
        official_module(module)
    return import_with_stand_ins(name, _stand_ins())


def official_text_encoder(root: Path):
    """The official ``T5EncoderModel`` wrapper (float32) around a tiny ``T5Encoder``."""
    t5, tokenizers = official_module("modules.t5"), official_module("modules.tokenizers")
    s = tiny_sizes(TINY_I2V.text_dim)
    model = t5.T5Encoder(
        vocab=s.vocab, dim=s.dim, dim_attn=s.dim_attn, dim_ffn=s.dim_ffn, num_heads=s.num_heads,
        num_layers=s.num_layers, num_buckets=s.num_buckets, shared_pos=False, dropout=0.1,
    ).eval().requires_grad_(False)
    model.load_state_dict(torch.load(root / CHECKPOINT_FILE, map_location="cpu", weights_only=True))
    wrapper = object.__new__(t5.T5EncoderModel)
    wrapper.text_len, wrapper.dtype, wrapper.device = 512, torch.float32, torch.device("cpu")
    wrapper.model = model
    wrapper.tokenizer = tokenizers.HuggingfaceTokenizer(name=str(root / TOKENIZER_DIR), seq_len=512,
                                                        clean="whitespace")
    return wrapper


def _official_dit(folder: Path) -> torch.nn.Module:
    return official_module("modules.model").WanModel.from_pretrained(folder).eval().requires_grad_(False)


def _common(pipe, task: str, root: Path) -> None:
    spec = TASKS[task]
    pipe.device = torch.device("cpu")
    pipe.rank, pipe.sp_size = 0, 1
    pipe.t5_cpu, pipe.init_on_cpu = False, True
    pipe.num_train_timesteps = spec.num_train_timesteps
    pipe.param_dtype = torch.bfloat16  # the official autocast dtype; autocast("cuda") is off on a CPU
    pipe.vae_stride, pipe.patch_size = spec.vae_stride, spec.patch_size
    pipe.sample_neg_prompt = spec.negative_prompt
    pipe.text_encoder = official_text_encoder(root)
    pipe.vae = official_wrapper("2.1" if task == "i2v-A14B" else "2.2", root / spec.vae_file)


def official_i2v(root: Path):
    """``WanI2V`` (``lightning=False``) on the i2v-A14B tiny folder ``root``."""
    pipe = object.__new__(official_with_torchvision("image2video").WanI2V)
    _common(pipe, "i2v-A14B", root)
    pipe.lightning = False
    pipe.boundary = TASKS["i2v-A14B"].boundary
    pipe.high_noise_model = _official_dit(root / "high_noise_model")
    pipe.low_noise_model = _official_dit(root / "low_noise_model")
    return pipe


def official_ti2v(root: Path):
    """``WanTI2V`` on the ti2v-5B tiny folder ``root``."""
    pipe = object.__new__(official_with_torchvision("textimage2video").WanTI2V)
    _common(pipe, "ti2v-5B", root)
    pipe.model = _official_dit(root)
    return pipe
