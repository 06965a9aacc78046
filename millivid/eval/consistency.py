"""Consistency and sharpness of each generated frame: LPIPS, PSNR, SSIM against ground truth.

    values = frame_metrics(unit_frames(generated), unit_frames(truth), lpips, psnr_cap=100.0)
    values["lpips"]        # (t,) float64, one per rollout frame

Sharpness (variance of the luma Laplacian) rewards detail, so a blurry prediction that scores well
on pixel metrics shows up as blurry.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from millivid.metrics import lpips_distance, psnr, ssim

LUMA = (0.299, 0.587, 0.114)
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
RANGE_SLACK = 1e-3  # float frames a hair outside [0, 1] are clipped, not rejected


def unit_frames(frames: np.ndarray | torch.Tensor, name: str = "frames") -> torch.Tensor:
    """(t h w 3) uint8 or float in [0, 1] -> (t 3 h w) float32 in [0, 1]."""
    frames = torch.as_tensor(frames).detach().cpu()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected (t h w 3) frames, got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return rearrange(frames.float() / 255, "t h w c -> t c h w")
    if not frames.is_floating_point():
        raise ValueError(f"{name}: expected uint8 or float frames in [0, 1], got {frames.dtype}")
    low, high = float(frames.min()), float(frames.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise ValueError(f"{name}: float frames must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    return rearrange(frames.float().clamp(0, 1), "t h w c -> t c h w")


@torch.no_grad()
def frame_metrics(images: torch.Tensor, reference: torch.Tensor, lpips: nn.Module, psnr_cap: float, batch: int = 64) -> dict[str, np.ndarray]:
    """images, reference: (t 3 h w) in [0, 1] -> per frame (t,) float64 lpips, psnr (capped at
    psnr_cap dB), ssim, and the sharpness of `images`."""
    if images.shape != reference.shape:
        raise ValueError(f"generated frames {tuple(images.shape)} and ground truth {tuple(reference.shape)} differ in shape")
    parts = [
        {
            "lpips": lpips_distance(lpips, x, y),
            "psnr": psnr(x, y).clamp(max=psnr_cap),
            "ssim": ssim(x, y),
            "sharpness": sharpness(x),
        }
        for x, y in zip(images.split(batch), reference.split(batch), strict=True)
    ]
    return {name: torch.cat([part[name] for part in parts]).double().numpy() for name in parts[0]}


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """(b 3 h w) in [0, 1] -> (b,) variance of the Laplacian of the luma (0 for a flat image)."""
    luma = reduce(images.float() * rearrange(torch.tensor(LUMA), "c -> 1 c 1 1"), "b c h w -> b 1 h w", "sum")
    edges = F.conv2d(luma, rearrange(torch.tensor(LAPLACIAN), "h w -> 1 1 h w"))
    return rearrange(edges, "b 1 h w -> b (h w)").var(dim=1, unbiased=False)
