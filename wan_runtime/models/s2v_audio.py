"""Audio layers of the S2V DiT, with the official parameter names.

``CausalAudioEncoder`` turns the bucketed wav2vec2 features (one column per video frame at 16 fps)
into per-latent-frame audio tokens: a learned softmax-free average of the wav2vec2 layers, then
causal 1-D convolutions that downsample time by 4 (one token group per latent frame). It makes
``num_audio_token`` local tokens (plus a learned padding token) and one global token per frame.

``AudioInjector`` adds audio to the video tokens after selected blocks: each latent frame's tokens
are AdaLN-modulated by that frame's global audio token, then cross-attend to its local tokens.
The official model runs the audio encoder under float32 autocast; its parameters are therefore
kept in float32 (``WanModelS2V.float32_parameters``), and it computes in float32 even when
``convert_model_dtype`` has cast them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wan_kernels.reference import layer_norm, modulate
from wan_runtime.models.dit_blocks import Attention, linear, linear_float32

_ENCODER_EPS = 1e-6  # the encoder's LayerNorms (official MotionEncoder_tc)
_ADAIN_EPS = 1e-5  # diffusers' AdaLayerNorm default, which the official injector keeps


class CausalConv1d(nn.Module):
    """Conv1d over time, left-padded by repeating the first frame so output t sees inputs <= t."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, kernel_size=3, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, T] -> [N, C_out, T_out], in float32 whatever the weights' dtype."""
        conv = self.conv
        return F.conv1d(F.pad(x.float(), (2, 0), mode="replicate"), conv.weight.float(), conv.bias.float(),
                        stride=conv.stride)


class MotionEncoderTC(nn.Module):
    """Official ``MotionEncoder_tc`` (always with its global branch, as ``enable_adain`` needs)."""

    def __init__(self, in_dim: int, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.conv1_local = CausalConv1d(in_dim, dim // 4 * num_tokens, stride=1)
        self.conv1_global = CausalConv1d(in_dim, dim // 4, stride=1)
        self.conv2 = CausalConv1d(dim // 4, dim // 2, stride=2)
        self.conv3 = CausalConv1d(dim // 2, dim, stride=2)
        self.final_linear = nn.Linear(dim, dim)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, C_in, T] -> local tokens [B, T', num_tokens + 1, dim] and global [B, T', dim],
        ``T' = ceil(ceil(T / 2) / 2)``."""
        b = x.size(0)
        local = self.conv1_local(x).unflatten(1, (self.num_tokens, -1)).flatten(0, 1)
        local = self._downsample(local).unflatten(0, (b, self.num_tokens)).transpose(1, 2)
        padding = self.padding_tokens.float().expand(b, local.size(1), 1, -1)
        glob = linear_float32(self.final_linear, self._downsample(self.conv1_global(x)))
        return torch.cat([local, padding], dim=2), glob

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        """[N, dim/4, T] -> [N, T', dim]: norm + SiLU, then two stride-2 convolutions, each followed
        by norm + SiLU (the local and global branches share these weights)."""
        x = self._norm_silu(x)
        x = self._norm_silu(self.conv2(x.transpose(1, 2)))
        return self._norm_silu(self.conv3(x.transpose(1, 2)))

    @staticmethod
    def _norm_silu(x: torch.Tensor) -> torch.Tensor:
        """[N, C, T] -> [N, T, C]: LayerNorm over channels without weights, then SiLU."""
        x = x.transpose(1, 2)
        return F.silu(F.layer_norm(x, x.shape[-1:], eps=_ENCODER_EPS))


class CausalAudioEncoder(nn.Module):
    """Weighted average of the wav2vec2 layers, then ``MotionEncoderTC``."""

    def __init__(self, audio_dim: int, audio_layers: int, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.encoder = MotionEncoderTC(audio_dim, dim, num_tokens)
        self.weights = nn.Parameter(torch.full((1, audio_layers, 1, 1), 0.01))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` [B, audio_layers, audio_dim, T] float32 -> local [B, T', N+1, dim] and
        global [B, T', dim] tokens (``MotionEncoderTC``)."""
        weights = F.silu(self.weights.float())
        mixed = (features.float() * weights / weights.sum(dim=1, keepdim=True)).sum(dim=1)
        return self.encoder(mixed)


class AdaLayerNorm(nn.Module):
    """LayerNorm without weights, shifted and scaled by a linear map of SiLU(embedding) (the
    diffusers layer the official injector uses, with its shift-then-scale chunk order)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``x`` [N, L, dim], ``embedding`` [N, dim]."""
        shift, scale = linear(self.linear, F.silu(embedding))[:, None].chunk(2, dim=-1)
        return modulate(layer_norm(x, None, None, _ADAIN_EPS), shift, scale)


class AudioInjector(nn.Module):
    """One AdaLN + audio cross-attention per injected block: ``injector[k]`` and
    ``injector_adain_layers[k]`` serve the k-th injected block in block order."""

    def __init__(self, dim: int, num_heads: int, inject_layers: tuple[int, ...], eps: float) -> None:
        super().__init__()
        self.slot = {block: k for k, block in enumerate(sorted(inject_layers))}
        self.injector = nn.ModuleList(Attention(dim, num_heads, True, eps) for _ in self.slot)
        self.injector_adain_layers = nn.ModuleList(AdaLayerNorm(dim) for _ in self.slot)

    def forward(
        self,
        block: int,
        tokens: torch.Tensor,
        audio: torch.Tensor,
        audio_global: torch.Tensor,
        video_tokens: int,
    ) -> torch.Tensor:
        """Add audio after ``block`` (a no-op for blocks without an injector).

        ``tokens`` [B, L, dim] starts with ``video_tokens`` tokens of F latent frames;
        ``audio`` [B*F, N, dim] and ``audio_global`` [B*F, dim] hold each frame's audio tokens.
        """
        if block not in self.slot:
            return tokens
        k = self.slot[block]
        frames = audio.size(0) // tokens.size(0)
        video = tokens[:, :video_tokens]
        per_frame = video.reshape(audio.size(0), video_tokens // frames, -1)
        hidden = self.injector_adain_layers[k](per_frame, audio_global)
        update = self.injector[k](hidden, audio.to(hidden.dtype)).view_as(video)
        return torch.cat([video + update, tokens[:, video_tokens:]], dim=1)
