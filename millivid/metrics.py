"""Image similarity per image of a batch: images (b c h w) in [0, 1] -> values (b,).

    psnr(recon, truth)              # dB; inf where identical
    ssim(recon, truth)              # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5
    lpips_distance(lpips, recon, truth)   # upsamples frames too small for the LPIPS backbone

All computed in float32 whatever the input dtype or surrounding autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
LPIPS_MIN_SIDE = 32  # AlexNet's pooling stack needs 32 pixels; smaller frames are upsampled first


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    images, reference = _pair(images, reference, "psnr")
    mse = reduce((images - reference) ** 2, "b c h w -> b", "mean")
    return -10 * torch.log10(mse)  # log10(0) = -inf -> +inf for identical images


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over the valid (unpadded) window positions and the channels."""
    images, reference = _pair(images, reference, "ssim")
    if min(images.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(images.shape[-2:])}")
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    mu_x, mu_y = _blur(images), _blur(reference)
    var_x = _blur(images * images) - mu_x**2
    var_y = _blur(reference * reference) - mu_y**2
    cov = _blur(images * reference) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)
    return reduce(luminance * structure, "b c h w -> b", "mean")


def lpips_distance(lpips: nn.Module, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """LPIPS (millivid.perceptual.Lpips) per image, in float32, frames below 32 px nearest-upsampled."""
    images, reference = _pair(images, reference, "lpips")
    factor = 2 ** max(0, math.ceil(math.log2(LPIPS_MIN_SIDE / min(images.shape[-2:]))))
    if factor > 1:
        images, reference = (repeat(x, "b c h w -> b c (h f) (w g)", f=factor, g=factor) for x in (images, reference))
    with torch.autocast(images.device.type, enabled=False):
        return lpips(images, reference)


def _pair(images: torch.Tensor, reference: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.shape != reference.shape or images.ndim != 4:
        raise ValueError(f"{name} expects two (b c h w) batches of equal shape, got {tuple(images.shape)} and {tuple(reference.shape)}")
    return images.float(), reference.float()


def _gaussian_window(device: torch.device) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - (SSIM_WINDOW - 1) / 2
    weights = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def _blur(images: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, valid positions only: (b c h w) -> (b c h-10 w-10)."""
    channels = images.shape[1]
    window = _gaussian_window(images.device)
    rows = repeat(window, "k -> c 1 k 1", c=channels)
    cols = rearrange(rows, "c 1 k 1 -> c 1 1 k")
    with torch.autocast(images.device.type, enabled=False):
        return F.conv2d(F.conv2d(images, rows, groups=channels), cols, groups=channels)
