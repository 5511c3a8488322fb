"""The Wan2.2 speech-to-video DiT (official ``WanModel_S2V``), as the released S2V-14B uses it.

It is the Wan DiT with three extra token groups and audio injection:

    tokens = [video (noisy latents + pose) | reference image | FramePack motion frames]
             + trainable_cond_mask[group]                          (group 0, 1, 2)
    blocks   the Wan blocks; video tokens at timestep t, the rest at timestep 0
    audio    after the blocks in ``audio_inject_layers``, each latent frame's video tokens take
             AdaLN(global audio token) + cross-attention to its local audio tokens
    head     on the video tokens only

The stages are those of ``WanModel``: ``prepare`` -> ``run_blocks`` (audio injection included)
-> ``finish``, with tensor inputs and outputs, so a step cache can sit after block 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from wan_runtime.errors import InputError
from wan_runtime.models.dit import Conditioning, WanModel
from wan_runtime.models.dit_blocks import linear_float32
from wan_runtime.models.dit_config import config_from_checkpoint, read_json_object
from wan_runtime.models.rope import rope_tables_at
from wan_runtime.models.s2v_audio import AudioInjector, CausalAudioEncoder
from wan_runtime.models.s2v_config import S2VConfig, check_s2v_config_json, s2v_config_from_checkpoint
from wan_runtime.models.s2v_motion import FramePack, motion_positions, ref_positions, video_positions
from wan_runtime.models.safetensors_checkpoint import TensorEntry, checkpoint_files, read_entries

# The release's motion context: 73 pixel frames, 19 latent frames (the official pipeline passes
# ``motion_frames=[73, 19]`` from ``wan_s2v_14B.transformer.motion_frames``).
MOTION_FRAMES = (73, 19)


class S2VConditioning(NamedTuple):
    """What the S2V blocks and head need besides the tokens; built once per forward by ``prepare``."""

    dit: Conditioning  # time rows [B+1]: row b is sample b's timestep, row B timestep 0
    audio: torch.Tensor  # [B*F, num_audio_token+1, dim] local audio tokens per latent frame
    audio_global: torch.Tensor  # [B*F, dim] float32 global audio token per latent frame
    video_tokens: int  # the first video_tokens tokens are the noisy video's


class WanModelS2V(WanModel):
    """S2V DiT with the official parameter names; ``from_pretrained`` reads the release root."""

    config: S2VConfig

    def __init__(self, config: S2VConfig) -> None:
        super().__init__(config)
        c = config
        self.cond_encoder = nn.Conv3d(c.cond_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.casual_audio_encoder = CausalAudioEncoder(c.audio_dim, c.audio_layers, c.dim, c.num_audio_token)
        self.audio_injector = AudioInjector(c.dim, c.num_heads, c.audio_inject_layers, c.eps)
        self.trainable_cond_mask = nn.Embedding(3, c.dim)
        self.frame_packer = FramePack(c.in_dim, c.dim)
        self._positions_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def read_checkpoint(cls, folder: Path) -> tuple[S2VConfig, dict[str, TensorEntry]]:
        """The S2V architecture (``config.json`` checked against the release's variant) and the
        tensors of the ``diffusion_pytorch_model*.safetensors`` files at the folder root."""
        path = folder / "config.json"
        raw = read_json_object(path, "point to the Wan2.2-S2V-14B folder, whose root holds it")
        check_s2v_config_json(raw, path)
        entries = read_entries(checkpoint_files(folder))
        shapes = {k: e.shape for k, e in entries.items()}
        dit = config_from_checkpoint({**raw, "model_type": "s2v"}, shapes, folder)
        return s2v_config_from_checkpoint(dit, raw, shapes, folder), entries

    def fp8_modules(self) -> list[nn.Module]:
        """The blocks and the audio injector (2.5 GB of attention and 1.3 GB of AdaLN weights in
        bfloat16), which computes in the compute dtype too."""
        return [*super().fp8_modules(), self.audio_injector]

    def float32_parameters(self) -> list[nn.Parameter]:
        """The Wan DiT's float32 parameters and the audio encoder's (official float32 autocast)."""
        return super().float32_parameters() + [*self.casual_audio_encoder.parameters()]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor,
        audio: torch.Tensor,
        pose: torch.Tensor | None = None,
        motion_frames: tuple[int, int] = MOTION_FRAMES,
        drop_motion_frames: bool = False,
    ) -> torch.Tensor:
        """Predict the flow of one clip; see ``prepare`` for the inputs. Returns
        [B, out_dim, F, H, W] float32."""
        tokens, cond = self.prepare(
            x, t, context, ref_latents, motion_latents, audio, pose, motion_frames, drop_motion_frames
        )
        return self.finish(self.run_blocks(tokens, cond), cond)

    def prepare(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor,
        audio: torch.Tensor,
        pose: torch.Tensor | None = None,
        motion_frames: tuple[int, int] = MOTION_FRAMES,
        drop_motion_frames: bool = False,
    ) -> tuple[torch.Tensor, S2VConditioning]:
        """Embed every token group, the audio, text and timesteps.

        x               [B, in_dim, F, H, W] noisy latents of the clip.
        t               [B] timesteps.
        context         [B, L_text, text_dim] umT5 embeddings, L_text <= text_len.
        ref_latents     [B, in_dim, 1, H', W'] VAE latent of the reference image.
        motion_latents  [B, in_dim, T_m, H'', W''] VAE latents of the previous frames (the last 19
                        are used, zero-padded in front when fewer; zeros for the first clip).
        audio           [B, audio_layers, audio_dim, frames] the clip's bucketed wav2vec2 features,
                        one column per output video frame at 16 fps (``audio_encoder.audio_buckets``
                        sliced to the clip); zeros for the unconditional branch.
        pose            [B, cond_dim, F, H, W] pose latents, or None for no pose (the official
                        pipeline then passes zeros, whose embedding is the encoder's bias).
        motion_frames   (pixel, latent) motion frames: the audio is front-padded with its first
                        column ``pixel`` times and the first ``latent`` encoded frames dropped.
        drop_motion_frames  no motion tokens at all (the official first clip, ``drop_first_motion``).

        Returns the tokens [B, L, dim] and the conditioning.
        """
        self._check_inputs(x, t, context, ref_latents, motion_latents, audio, pose)
        b = x.size(0)
        video = self._patchify(self.patch_embedding, x)
        pose_embed = self.cond_encoder.bias[:, None, None, None] if pose is None else \
            self._patchify(self.cond_encoder, pose)
        video = video + pose_embed
        grid = tuple(video.shape[2:])
        ref = self._patchify(self.patch_embedding, ref_latents)
        tokens = [u.flatten(2).transpose(1, 2) for u in (video, ref)]
        if not drop_motion_frames:
            tokens.append(self.frame_packer(motion_latents))
        video_tokens = tokens[0].size(1)
        group_of_token = torch.cat(
            [torch.full((u.size(1),), i, dtype=torch.long, device=x.device) for i, u in enumerate(tokens)]
        )
        tokens = torch.cat(tokens, dim=1)
        tokens = tokens + self.trainable_cond_mask.weight[group_of_token].to(tokens.dtype)

        local, global_ = self._encode_audio(audio, motion_frames, frames=grid[0])
        # Reference and motion tokens are clean: they take the extra time row of timestep 0.
        time_embed, _ = self._embed_time(torch.cat([t, t.new_zeros(1)]))
        time = linear_float32(self.time_projection[1], F.silu(time_embed)).unflatten(1, (6, self.config.dim))
        time_index = torch.where(group_of_token == 0, torch.arange(b, device=x.device)[:, None], b)
        rope = self._s2v_rope(grid, tuple(ref_latents.shape[3:]), tuple(motion_latents.shape[3:]),
                              drop_motion_frames, x.device)
        tokens, time_index, rope, shard = self._split_sequence(tokens.contiguous(), time_index, rope)
        dit = Conditioning(
            time=time,
            time_embed=time_embed,
            time_index=time_index,
            context=self._embed_text(context),
            rope=rope,
            grid=grid,
            shard=shard,
        )
        return tokens, S2VConditioning(dit, local.flatten(0, 1), global_.flatten(0, 1), video_tokens)

    def _run_blocks_eagerly(
        self, tokens: torch.Tensor, cond: S2VConditioning, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        # Each block followed by its audio injection.
        c = cond.dit
        for index in range(len(self.blocks))[start:stop]:
            tokens = self.run_block(index, tokens, c)
            if index in self.audio_injector.slot:
                tokens = self._inject_audio(index, tokens, cond)
        return tokens

    def _inject_audio(self, index: int, tokens: torch.Tensor, cond: S2VConditioning) -> torch.Tensor:
        # The injection groups the video tokens by latent frame, which a rank's slice cuts: under
        # sequence parallelism it runs on the whole sequence, gathered and split again (one
        # all-gather of the tokens per injected block, small beside a block's attention).
        shard = cond.dit.shard
        whole = tokens if shard is None else shard.gather(tokens)
        whole = self.audio_injector(index, whole, cond.audio, cond.audio_global, cond.video_tokens)
        return whole if shard is None else shard.split(whole)

    def finish(self, tokens: torch.Tensor, cond: S2VConditioning) -> torch.Tensor:
        """Head and unpatchify of the video tokens -> [B, out_dim, F, H, W] float32."""
        video_only = cond.dit._replace(time_embed=cond.dit.time_embed[:-1], time_index=None)
        if video_only.shard is not None:
            # A rank's slice mixes the token groups: the head (per token) runs on all of it, and
            # the video's tokens are taken from the gathered output.
            whole = video_only.shard.gather(self.head(tokens, video_only.time_embed, None))
            return self._unpatchify(whole[:, :cond.video_tokens], video_only.grid)
        return super().finish(tokens[:, :cond.video_tokens], video_only)

    def _encode_audio(
        self, audio: torch.Tensor, motion_frames: tuple[int, int], frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio tokens per latent frame: local [B, F, N+1, dim] and global [B, F, dim].

        The encoder is causal and downsamples by 4, so the audio is front-padded to cover the
        motion frames too, and the motion frames' encodings are then dropped.
        """
        padded = torch.cat([audio[..., :1].expand(*audio.shape[:-1], motion_frames[0]), audio], dim=-1)
        local, global_ = self.casual_audio_encoder(padded)
        local, global_ = local[:, motion_frames[1]:], global_[:, motion_frames[1]:]
        if local.size(1) != frames:
            raise InputError(
                f"the audio gives {local.size(1)} latent frames of tokens but x has {frames}: pass one "
                f"audio column per video frame (4 per latent frame; {audio.size(-1)} given) and "
                f"motion_frames {list(motion_frames)} as the official pipeline does"
            )
        return local.to(self.patch_embedding.weight.dtype), global_

    def _patchify(self, conv: nn.Conv3d, latents: torch.Tensor) -> torch.Tensor:
        return F.conv3d(latents.to(conv.weight.dtype), conv.weight, conv.bias, stride=self.config.patch_size)

    def forget_rope_tables(self) -> None:
        """Drop the cached rope tables, the S2V token groups' too."""
        super().forget_rope_tables()
        self._positions_cache.clear()

    def _s2v_rope(
        self,
        grid: tuple[int, int, int],
        ref_size: tuple[int, int],
        motion_size: tuple[int, int],
        drop_motion: bool,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (grid, ref_size, motion_size, drop_motion, str(device))
        if key not in self._positions_cache:
            _, p, q = self.config.patch_size
            positions = [video_positions(*grid), ref_positions(ref_size[0] // p, ref_size[1] // q)]
            if not drop_motion:
                positions.append(motion_positions(*motion_size))
            self._positions_cache[key] = rope_tables_at(torch.cat(positions), self.config.head_dim, device)
        return self._positions_cache[key]

    def _check_inputs(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor,
        audio: torch.Tensor,
        pose: torch.Tensor | None,
    ) -> None:
        c = self.config
        b = x.size(0)
        if list(t.shape) != [b]:
            raise InputError(f"t must be [{b}] (one timestep per sample), got {list(t.shape)}")
        super()._check_inputs(x, t, context, None)
        if ref_latents.dim() != 5 or ref_latents.shape[:3] != (b, c.in_dim, 1):
            raise InputError(f"ref_latents must be [{b}, {c.in_dim}, 1, H, W], got {list(ref_latents.shape)}")
        if motion_latents.dim() != 5 or motion_latents.shape[:2] != (b, c.in_dim):
            raise InputError(
                f"motion_latents must be [{b}, {c.in_dim}, T, H, W], got {list(motion_latents.shape)}"
            )
        if audio.dim() != 4 or audio.shape[:3] != (b, c.audio_layers, c.audio_dim):
            raise InputError(
                f"audio must be [{b}, {c.audio_layers}, {c.audio_dim}, frames] wav2vec2 features, got "
                f"{list(audio.shape)}; encode it with the checkpoint's wav2vec2 folder"
            )
        if pose is not None and (pose.dim() != 5 or pose.shape[1] != c.cond_dim or pose.shape[0] != b
                                 or pose.shape[2:] != x.shape[2:]):
            raise InputError(f"pose must be [{b}, {c.cond_dim}, *x's F, H, W], got {list(pose.shape)}")
