"""``load_vae``: a Wan VAE from its official ``.pth`` file (``Wan2.1_VAE.pth``, ``Wan2.2_VAE.pth``).

The file is read with ``torch.load(weights_only=True, mmap=True)``, so nothing in it is executed
and tensors are paged in as they are converted. Which VAE it is and its widths come from the
tensor shapes, and every key and shape is checked against the model built from them before any
weight is copied, so a wrong or damaged file fails fast with a message saying what to do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from wan_runtime.errors import CheckpointError
from wan_runtime.models import vae2_1, vae2_2
from wan_runtime.models.torch_archive import check_torch_archive, load_state_dict
from wan_runtime.models.vae_autoencoder import CausalAutoencoder
from wan_runtime.models.vae_codec import WanVAE

_WHAT = "VAE checkpoint"
_MARKERS = ("encoder.conv1.weight", "decoder.conv1.weight", "conv2.weight")
# A file of the wrong model or a modified one; a damaged file is re-downloaded (``_redownload``).
_WRONG_FILE = "use Wan2.1_VAE.pth or Wan2.2_VAE.pth, unmodified, from the official Wan2.2 release"


def _redownload(path: Path) -> str:
    return f"download {path.name} again from the official Wan2.2 release"


def check_vae_file(path: str | Path) -> None:
    """Check, without reading a tensor, that the VAE file ``path`` is there and a complete archive
    (``CheckpointError``): cheap, so a pipeline runs it before loading anything."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{_WHAT} {path} does not exist; {_redownload(path)}")
    check_torch_archive(path, _WHAT, _redownload(path))


def meta_vae(path: str | Path) -> CausalAutoencoder:
    """The VAE of the file ``path`` on the meta device, float32, checked as ``load_vae`` checks
    it; reads the archive's index, not its weights."""
    path = Path(path)
    check_vae_file(path)
    return _build(path, load_state_dict(path, _WHAT, _redownload(path)))[1]


def _build(path: Path, state: dict[str, torch.Tensor]) -> tuple[str, CausalAutoencoder]:
    missing = [key for key in _MARKERS if key not in state]
    if missing:
        some = ", ".join(list(state)[:3])
        raise CheckpointError(
            f"{path} is not a Wan VAE checkpoint: it lacks {', '.join(missing)} (its keys begin "
            f"{some}); a DiT or T5 file was probably given where the VAE belongs; {_WRONG_FILE}"
        )
    dim, in_channels = state["encoder.conv1.weight"].shape[:2]
    z_dim = state["conv2.weight"].shape[0]
    dec_dim = state["decoder.conv1.weight"].shape[0] // vae2_2.DIM_MULT[-1]
    if in_channels == 3 and z_dim == vae2_1.Z_DIM:
        version, model_fn = "2.1", lambda: vae2_1.build_vae21(dim)
    elif in_channels == 3 * vae2_2.PATCH_SIZE**2 and z_dim == vae2_2.Z_DIM:
        version, model_fn = "2.2", lambda: vae2_2.build_vae22(dim, dec_dim)
    else:
        raise CheckpointError(
            f"{path} has {in_channels} input and {z_dim} latent channels; a Wan 2.1 VAE has 3 and "
            f"{vae2_1.Z_DIM}, a Wan 2.2 VAE {3 * vae2_2.PATCH_SIZE**2} and {vae2_2.Z_DIM}; {_WRONG_FILE}"
        )
    with torch.device("meta"):
        model = model_fn()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unknown = sorted(set(state) - set(expected))
    absent = sorted(set(expected) - set(state))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
    problems = [
        f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("unknown keys", unknown), ("missing keys", absent), ("wrong shapes", wrong))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{path} does not match the Wan {version} VAE of width {dim} ({'; '.join(problems)}); "
            f"{_WRONG_FILE}"
        )
    return version, model


def load_vae(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> WanVAE:
    """Load the Wan 2.1 or 2.2 VAE in ``path`` onto ``device``, computing in ``dtype``.

    Raises ``CheckpointError`` for a missing, unreadable or truncated file and for a file that
    is not a Wan VAE state dict (another model's weights, unknown or missing keys, wrong shapes).
    """
    path = Path(path)
    check_vae_file(path)
    state = load_state_dict(path, _WHAT, _redownload(path))
    version, model = _build(path, state)
    weights = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(weights, assign=True)
    return codec(model)


def codec(model: CausalAutoencoder) -> WanVAE:
    """``model`` with its version's latent normalisation (the version told by its latent channels)."""
    version, module = ("2.1", vae2_1) if model.z_dim == vae2_1.Z_DIM else ("2.2", vae2_2)
    return WanVAE(version, model, module.MEAN, module.STD)
