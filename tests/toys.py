"""Toy shapes, schedules and model configs shared by the science tests (autoencoder, DiT, sampler, schedules, evaluation)."""

from __future__ import annotations

from millivid.diffusion.schedule import build_schedule
from millivid.diffusion.schedules import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
)

TOKENS = (16, 4, 1)
CHANNELS = 4
"""The toy DiT's latents: tokens per level (4x4, 2x2, 1x1 grids) and channels per token."""

PAPER_TOKENS = (256, 64, 16, 4)
"""The paper's tokens per level (16x16 finest grid, four levels), for schedule shapes at full size."""

METHODS = {
    "millivid": MilliVidScheduleConfig(windows=(1, 2, 4), extra_budget=16),
    "full_res": FullResScheduleConfig(frames=4),
    "framepack": FramePackScheduleConfig(denoised=1, context=(1, 2, 4)),
    "framepack_kernel": FramePackScheduleConfig(denoised=1, context=(1, 2, 4), context_source="kernel"),
}
MILLIVID = build_schedule(METHODS["millivid"], TOKENS)
"""Toy schedule configs for every method on TOKENS, and the millivid one built (a schedule, not `services.MILLIVID`)."""

TINY_AE = dict(patch=2, levels=3, latent_channels=4, width=32, encoder_depth=1, decoder_depth=1, heads=2)
"""A tiny hierarchical autoencoder: the fields of an AutoencoderModelConfig (its variant aside)."""
