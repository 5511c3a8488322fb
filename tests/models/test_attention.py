"""The attention backend module."""

import math

import pytest
import torch

from wan_runtime.models import attention as attention_module
from wan_runtime.models.attention import attention


def test_sdpa_is_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5 if i == 0 else 7, 3, 16, generator=g, dtype=torch.float64) for i in range(3))
    scores = torch.einsum("blnd,bsnd->bnls", q, k) / math.sqrt(16)
    expected = torch.einsum("bnls,bsnd->blnd", scores.softmax(-1), v)
    torch.testing.assert_close(attention(q, k, v, backend="sdpa"), expected)
    torch.testing.assert_close(attention(q, k, v), expected)


@pytest.mark.parametrize("backend", ["flash2", "flash3"])
def test_missing_flash_backend_is_a_clear_error(monkeypatch, backend):
    monkeypatch.setattr(attention_module, "_FLASH2", None)
    monkeypatch.setattr(attention_module, "_FLASH3", None)
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match="needs flash-attn"):
        attention(q, q, q, backend=backend)


def test_unknown_backend():
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, q, q, backend="xformers")
