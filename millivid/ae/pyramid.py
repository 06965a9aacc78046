"""Pixel pyramids, patches and token positions shared by every level of the hierarchical latent.

Level 0 is the finest. Level l is the frame mean-pooled 2x per side l times, cut into patches of
the same size at every level, so tokens of all levels live on grids that nest exactly.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, reduce

from millivid.geometry import LevelGeometry


def image_pyramid(frames: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """frames: (b c h w) -> [level 0 (b c h w), level 1 (b c h/2 w/2), ...]."""
    pyramid = [frames]
    for _ in range(levels - 1):
        pyramid.append(reduce(pyramid[-1], "b c (h two_h) (w two_w) -> b c h w", "mean", two_h=2, two_w=2))
    return pyramid


def patchify(image: torch.Tensor, patch: int) -> torch.Tensor:
    """image: (b c h w) -> tokens (b n (p q c)), row-major over the patch grid."""
    return rearrange(image, "b c (gh p) (gw q) -> b (gh gw) (p q c)", p=patch, q=patch)


def unpatchify(tokens: torch.Tensor, patch: int) -> torch.Tensor:
    """tokens: (b n (p q c)) on a square grid -> image (b c h w)."""
    grid = math.isqrt(tokens.shape[1])
    return rearrange(tokens, "b (gh gw) (p q c) -> b c (gh p) (gw q)", gh=grid, p=patch, q=patch)


def pool_latent(finest: torch.Tensor, level: int) -> torch.Tensor:
    """Mean-pool a finest latent grid 2^level per side: (b n0 c) -> (b n0/4^level c)."""
    if level == 0:
        return finest
    grid = math.isqrt(finest.shape[1])
    side = 2**level
    return reduce(finest, "b (gh sh gw sw) c -> b (gh gw) c", "mean", gh=grid // side, sh=side, sw=side)


def token_centres(geometry: LevelGeometry) -> torch.Tensor:
    """(n_all 2) centre (row, col) of every token of every level, in finest-pixel units.

    One coordinate frame for all levels: a coarse token sits exactly at the centre of the finer
    tokens it summarises, so attention can match levels by position alone.
    """
    centres = []
    for level in range(geometry.levels):
        stride = geometry.patch * 2**level
        axis = (torch.arange(geometry.grid(level), dtype=torch.float64) + 0.5) * stride
        rows, cols = torch.meshgrid(axis, axis, indexing="ij")
        centres.append(rearrange(torch.stack([rows, cols]), "two gh gw -> (gh gw) two"))
    return torch.cat(centres)


def sincos_embedding(centres: torch.Tensor, width: int, longest: float, shortest: float) -> torch.Tensor:
    """(n 2) positions -> (n width) fixed sin-cos features, half for rows, half for columns.

    Periods run geometrically from `longest` (twice the frame: no wrap-around, so every position
    is unique) down to `shortest` (twice the finest token spacing: the Nyquist limit of the grid).
    """
    if width % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {width}")
    bands = width // 4
    periods = longest * (shortest / longest) ** (torch.arange(bands, dtype=torch.float64) / max(1, bands - 1))
    angles = rearrange(centres, "n two -> n two 1") * (2 * math.pi / periods)
    features = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return rearrange(features, "n two f -> n (two f)").float()


def level_ids(geometry: LevelGeometry) -> torch.Tensor:
    """(n_all,) the level of every token of the concatenated sequence."""
    return torch.cat([torch.full((n,), level) for level, n in enumerate(geometry.tokens_per_level)])
