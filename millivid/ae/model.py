"""The hierarchical autoencoder: a frame -> a pyramid of latent token levels -> a frame from any one level.

    model = build_autoencoder(cfg.autoencoder.model, size=64)
    latents = model.encode(frames)          # frames (b 3 h w) in [0, 1] or uint8
    latents[l]                              # (b n_l c), n_l = geometry.tokens(l)
    model.decode(latents[2], level=2)       # (b 3 h w) in [0, 1], from level 2 alone

Encoder: the frame's pixel pyramid, every level cut into patches by the same kernel and
projected by the same linear layer, goes through one transformer; each output token is squashed
to `latent_channels` by tanh. Decoder: the latent of one level (every other level's slots zeroed)
plus position and level embeddings and the decoded level's embedding goes through a second
transformer that reconstructs the whole pixel pyramid.

Variant "downscaled" (the paper's ablation): only the finest level is encoded; level l's latent
is the finest latent grid mean-pooled 2^l per side, so both variants have the same tokens per
level and the same decoder, and compare level by level. By default coarse levels' losses stop at
the pooled latents (the encoder is a plain finest-level encoder, the decoder learns to decode its
downscaled latents); `downscaled_training: end_to_end` lets them train the encoder as well.
"""

from __future__ import annotations

import torch
from torch import nn

from millivid.ae.config import AutoencoderModelConfig
from millivid.ae.pyramid import (
    image_pyramid,
    level_ids,
    patchify,
    pool_latent,
    sincos_embedding,
    token_centres,
    unpatchify,
)
from millivid.ae.transformer import Transformer
from millivid.geometry import LevelGeometry

CHANNELS = 3


class HierarchicalAutoencoder(nn.Module):
    def __init__(self, config: AutoencoderModelConfig, size: int):
        super().__init__()
        self.config = config
        self.geometry = LevelGeometry(size, config.patch, config.levels)
        width, patch_pixels = config.width, CHANNELS * config.patch**2
        self.encoded_levels = config.levels if config.variant == "hierarchical" else 1

        self.patch_in = nn.Linear(patch_pixels, width)
        self.encoder_level = nn.Embedding(config.levels, width)
        self.encoder = Transformer(width, config.encoder_depth, config.heads)
        self.to_latent = nn.Linear(width, config.latent_channels)

        self.from_latent = nn.Linear(config.latent_channels, width)
        self.decoder_level = nn.Embedding(config.levels, width)
        self.decoded_level = nn.Embedding(config.levels, width)
        self.decoder = Transformer(width, config.decoder_depth, config.heads)
        self.patch_out = nn.Linear(width, patch_pixels)

        centres = token_centres(self.geometry)
        positions = sincos_embedding(centres, width, longest=2 * size, shortest=2 * config.patch)
        self.register_buffer("positions", positions, persistent=False)  # (n_all d)
        self.register_buffer("token_levels", level_ids(self.geometry), persistent=False)  # (n_all,)
        self.apply(init_weights)
        nn.init.zeros_(self.patch_out.weight)  # start from a mid-grey reconstruction, not from noise

    @property
    def size(self) -> int:
        return self.geometry.size

    @property
    def tokens_per_level(self) -> tuple[int, ...]:
        return self.geometry.tokens_per_level

    def forward(self, frames: torch.Tensor, levels: torch.Tensor) -> list[torch.Tensor]:
        """Training pass: encode, keep only level `levels[i]` of example i, reconstruct the pyramid.

        frames: (b 3 h w); levels: (b,) int -> [level 0 (b 3 h w), level 1 (b 3 h/2 w/2), ...].
        """
        return self.decode_sequence(self.latent_sequence(frames), levels)

    def encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """frames: (b 3 h w) in [0, 1] or uint8 -> per-level latents, latents[l]: (b n_l c) float32."""
        sequence = self.latent_sequence(frames).float()
        return tuple(sequence.split(self.tokens_per_level, dim=1))

    def decode(self, latent: torch.Tensor, level: int) -> torch.Tensor:
        """latent: (b n_level c) -> the reconstructed finest frame (b 3 h w) in [0, 1]."""
        return self.decode_pyramid(latent, level)[0].float().clamp(0, 1)

    def decode_pyramid(self, latent: torch.Tensor, level: int) -> list[torch.Tensor]:
        """latent: (b n_level c) -> the whole reconstructed pyramid, unclamped (for losses)."""
        self.geometry.grid(level)  # validates the level
        expected = (self.tokens_per_level[level], self.config.latent_channels)
        if latent.ndim != 3 or tuple(latent.shape[1:]) != expected:
            raise ValueError(f"level-{level} latent must be (b {expected[0]} {expected[1]}), got {tuple(latent.shape)}")
        latent = latent.float()  # stored latents are float16; autocast picks the compute dtype
        slots = [latent if l == level else latent.new_zeros(latent.shape[0], n, expected[1]) for l, n in enumerate(self.tokens_per_level)]
        levels = torch.full((latent.shape[0],), level, device=latent.device)
        return self.decode_sequence(torch.cat(slots, dim=1), levels)

    def decode_level_from_finest(self, finest: torch.Tensor, level: int) -> torch.Tensor:
        """finest: (b n_0 c) -> frame (b 3 h w) decoded from the finest latent mean-pooled to `level`."""
        return self.decode(pool_latent(finest, level), level)

    def latent_sequence(self, frames: torch.Tensor) -> torch.Tensor:
        """frames -> every level's latent tokens concatenated, finest first: (b n_all c)."""
        pixels = as_unit_frames(frames, self.size) * 2 - 1
        tokens = torch.cat([patchify(image, self.config.patch) for image in image_pyramid(pixels, self.encoded_levels)], dim=1)
        encoded = slice(0, tokens.shape[1])
        tokens = self.patch_in(tokens) + self.positions[encoded] + self.encoder_level(self.token_levels[encoded])
        latents = torch.tanh(self.to_latent(self.encoder(tokens)))
        if self.encoded_levels == self.config.levels:
            return latents
        pooled = latents if self.config.downscaled_training == "end_to_end" else latents.detach()
        return torch.cat([latents, *(pool_latent(pooled, level) for level in range(1, self.config.levels))], dim=1)

    def decode_sequence(self, latents: torch.Tensor, levels: torch.Tensor) -> list[torch.Tensor]:
        """latents: (b n_all c), levels: (b,) -> pyramid decoded from level `levels[i]` alone, in [0, 1] units."""
        keep = self.token_levels[None, :, None] == levels[:, None, None]  # (b n_all 1)
        visible = torch.where(keep, latents, torch.zeros((), dtype=latents.dtype, device=latents.device))
        tokens = self.from_latent(visible) + self.positions + self.decoder_level(self.token_levels)
        tokens = tokens + self.decoded_level(levels)[:, None]
        patches = self.patch_out(self.decoder(tokens)).split(self.tokens_per_level, dim=1)
        return [(unpatchify(level_patches, self.config.patch) + 1) / 2 for level_patches in patches]


def as_unit_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(b 3 size size) uint8 or float in [0, 1] -> float in [0, 1]; a clear error for anything else."""
    if frames.ndim != 4 or frames.shape[1] != CHANNELS or frames.shape[2:] != (size, size):
        raise ValueError(f"frames must be (b 3 {size} {size}), got {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255
    if not frames.is_floating_point():
        raise ValueError(f"frames must be uint8 or floating point in [0, 1], got {frames.dtype}")
    return frames.float()


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def build_autoencoder(model_cfg: AutoencoderModelConfig, size: int) -> HierarchicalAutoencoder:
    return HierarchicalAutoencoder(model_cfg, size)
