"""Reading the official umT5 encoder file strictly, and the architecture it implies.

``models_t5_umt5-xxl-enc-bf16.pth`` is a plain ``torch.save`` state dict of the official
``T5Encoder``. It is opened memory-mapped with ``weights_only=True``, so nothing is read until a
tensor is used; the sizes come from the tensor shapes, and every key and shape is checked before
any weight is converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from wan_runtime.errors import CheckpointError
from wan_runtime.models.block_numbers import numbered_blocks
from wan_runtime.models.torch_archive import check_torch_archive, load_state_dict

CHECKPOINT_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
_REDOWNLOAD = f"download {CHECKPOINT_FILE} again from the official Wan2.2 release"
_WHAT = "the text encoder file"


@dataclass(frozen=True)
class T5Sizes:
    """The architecture of a umT5 encoder (5.7B umT5-XXL: 256384, 4096, 4096, 10240, 64, 24, 32)."""

    vocab: int
    dim: int
    dim_attn: int
    dim_ffn: int
    num_heads: int
    num_layers: int
    num_buckets: int


def official_shapes(sizes: T5Sizes) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official encoder state dict and its shape."""
    s = sizes
    shapes: dict[str, tuple[int, ...]] = {"token_embedding.weight": (s.vocab, s.dim)}
    for i in range(s.num_layers):
        block = f"blocks.{i}."
        shapes[block + "norm1.weight"] = (s.dim,)
        for name in "qkv":
            shapes[block + f"attn.{name}.weight"] = (s.dim_attn, s.dim)
        shapes[block + "attn.o.weight"] = (s.dim, s.dim_attn)
        shapes[block + "norm2.weight"] = (s.dim,)
        shapes[block + "ffn.gate.0.weight"] = (s.dim_ffn, s.dim)
        shapes[block + "ffn.fc1.weight"] = (s.dim_ffn, s.dim)
        shapes[block + "ffn.fc2.weight"] = (s.dim, s.dim_ffn)
        shapes[block + "pos_embedding.embedding.weight"] = (s.num_buckets, s.num_heads)
    shapes["norm.weight"] = (s.dim,)
    return shapes


def check_checkpoint_file(path: Path) -> None:
    """Check, without reading a tensor, that the text encoder file ``path`` is there and a complete
    archive (``CheckpointError``): cheap, so a pipeline runs it before loading anything."""
    if not path.is_file():
        raise CheckpointError(
            f"the text encoder file {path} does not exist; pass the Wan2.2 release root that holds "
            f"{CHECKPOINT_FILE} and google/umt5-xxl/"
        )
    check_torch_archive(path, _WHAT, _REDOWNLOAD)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The memory-mapped tensors of ``path``, which must be a flat name -> tensor dict."""
    check_checkpoint_file(path)
    return load_state_dict(path, _WHAT, _REDOWNLOAD)


def _shape(state: dict[str, torch.Tensor], key: str, path: Path) -> tuple[int, int]:
    tensor = state.get(key)
    if tensor is None or tensor.ndim != 2:
        found = "missing" if tensor is None else f"of shape {list(tensor.shape)}"
        raise CheckpointError(
            f"{path} is not a umT5 encoder state dict: {key} is {found} (the official T5Encoder names "
            f"are expected: token_embedding.weight, blocks.N.attn.q.weight, ...); {_REDOWNLOAD}"
        )
    return tensor.shape[0], tensor.shape[1]


def sizes_from_state_dict(state: dict[str, torch.Tensor], path: Path) -> T5Sizes:
    """The encoder architecture implied by the tensor shapes."""
    if "pos_embedding.embedding.weight" in state:
        raise CheckpointError(
            f"{path} holds an encoder with one shared position bias; the umT5 encoder has one per "
            f"block (blocks.N.pos_embedding.embedding.weight); {_REDOWNLOAD}"
        )
    vocab, dim = _shape(state, "token_embedding.weight", path)
    # The bias table is [buckets, heads]: the one place the head count is stored.
    num_buckets, num_heads = _shape(state, "blocks.0.pos_embedding.embedding.weight", path)
    dim_attn = _shape(state, "blocks.0.attn.q.weight", path)[0]
    dim_ffn = _shape(state, "blocks.0.ffn.fc1.weight", path)[0]
    num_layers = numbered_blocks(state, "blocks.")
    if num_layers is None:
        raise CheckpointError(f"{path}: its blocks are not numbered 0 to N-1 (blocks.N.*); {_REDOWNLOAD}")
    if dim_attn % num_heads:
        raise CheckpointError(
            f"{path}: attention width {dim_attn} is not a multiple of the {num_heads} heads of "
            f"blocks.0.pos_embedding; {_REDOWNLOAD}"
        )
    return T5Sizes(vocab, dim, dim_attn, dim_ffn, num_heads, num_layers, num_buckets)


def check_keys(state: dict[str, torch.Tensor], sizes: T5Sizes, path: Path) -> None:
    """Raise one error listing every missing, unexpected or mis-shaped tensor."""
    expected = official_shapes(sizes)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = [
        f"{label}: {', '.join(names[:6])}{' …' if len(names) > 6 else ''}"
        for label, names in (("missing tensors", missing), ("unexpected tensors", unexpected))
        if names
    ]
    problems += [
        f"{name} has shape {list(state[name].shape)}, expected {list(shape)}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ][:6]
    if problems:
        raise CheckpointError(
            f"{path} is not a consistent umT5 encoder: " + "; ".join(problems) + f"; {_REDOWNLOAD}"
        )


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], T5Sizes]:
    """The checked, still memory-mapped state dict of ``path`` and its sizes."""
    state = read_state_dict(path)
    sizes = sizes_from_state_dict(state, path)
    check_keys(state, sizes, path)
    return state, sizes
