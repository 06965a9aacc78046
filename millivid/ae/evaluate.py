"""How well each latent level reconstructs held-out frames, and hierarchical vs downscaled level by level.

    evaluate_autoencoder(model, frames, lpips)     # {"levels": [{"level", "tokens", "psnr", "ssim", "lpips"}, ...], ...}
    compare_variants({"hierarchical": h, "downscaled": d}, frames, lpips)
                                                   # {"levels": [{"level", "tokens", "hierarchical": {...}, ...}]}

frames: (n h w 3) uint8. Reconstructions run without gradients under bf16 autocast by default;
metrics are float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from millivid.ae.frames import to_tensor
from millivid.ae.model import HierarchicalAutoencoder, as_unit_frames
from millivid.geometry import LevelGeometry
from millivid.metrics import lpips_distance, psnr, ssim
from millivid.schema import Precision
from millivid.training import autocast

METRICS = ("psnr", "ssim", "lpips")


@torch.no_grad()
def level_reconstructions(
    model: HierarchicalAutoencoder, frames: torch.Tensor, batch_size: int = 64, precision: Precision = "bf16"
) -> torch.Tensor:
    """frames: (n 3 h w) uint8 or [0, 1] -> (levels n 3 h w) float32, row l decoded from level l alone."""
    device = next(model.parameters()).device
    rows = []
    for batch in frames.split(batch_size):
        with autocast(device, precision):
            latents = model.encode(batch.to(device))
            rows.append(torch.stack([model.decode(latent, level) for level, latent in enumerate(latents)]))
    return torch.cat(rows, dim=1)


@torch.no_grad()
def level_metrics(truth: torch.Tensor, reconstructions: torch.Tensor, lpips: nn.Module) -> dict[str, float]:
    """truth: (n 3 h w), reconstructions: (levels n 3 h w), both in [0, 1] -> mean metric per level."""
    metrics = {}
    for level, recon in enumerate(reconstructions):
        values = {
            "psnr": psnr(recon, truth),
            "ssim": ssim(recon, truth),
            "lpips": lpips_distance(lpips, recon, truth.to(recon.device)),
        }
        metrics.update({f"{name}_level{level}": float(value.mean()) for name, value in values.items()})
    return metrics


def level_scores(
    model: HierarchicalAutoencoder, frames: np.ndarray, lpips: nn.Module, batch_size: int = 64, precision: Precision = "bf16"
) -> dict[str, float]:
    """frames: (n h w 3) uint8 -> {"psnr_level0": mean PSNR decoding from level 0, ...}."""
    truth = as_unit_frames(to_tensor(frames), model.size)
    reconstructions = level_reconstructions(model, truth, batch_size, precision)
    return level_metrics(truth.to(reconstructions.device), reconstructions, lpips.to(reconstructions.device))


def evaluate_autoencoder(
    model: HierarchicalAutoencoder, frames: np.ndarray, lpips: nn.Module, batch_size: int = 64, precision: Precision = "bf16"
) -> dict[str, Any]:
    """JSON-ready: per level, tokens per frame and PSNR/SSIM/LPIPS decoding from that level alone."""
    scores = level_scores(model, frames, lpips, batch_size, precision)
    return {
        **_header(model.geometry, frames, lpips),
        "levels": [{**_level(model.geometry, level), **_pick(scores, level)} for level in range(model.geometry.levels)],
    }


def compare_variants(
    models: Mapping[str, HierarchicalAutoencoder], frames: np.ndarray, lpips: nn.Module, batch_size: int = 64, precision: Precision = "bf16"
) -> dict[str, Any]:
    """JSON-ready: per level, tokens per frame and each named model's PSNR/SSIM/LPIPS from that level."""
    geometries = {model.geometry for model in models.values()}
    if len(geometries) != 1:
        raise ValueError(f"compared models must share one token geometry, got {sorted(map(str, geometries))}")
    geometry = geometries.pop()
    scores = {name: level_scores(model, frames, lpips, batch_size, precision) for name, model in models.items()}
    return {
        **_header(geometry, frames, lpips),
        "levels": [
            {**_level(geometry, level), **{name: _pick(score, level) for name, score in scores.items()}}
            for level in range(geometry.levels)
        ],
    }


def _header(geometry: LevelGeometry, frames: np.ndarray, lpips: nn.Module) -> dict[str, Any]:
    backbone = getattr(getattr(lpips, "status", None), "tag", "unknown")
    return {"frames": len(frames), "size": geometry.size, "patch": geometry.patch, "lpips_backbone": backbone}


def _level(geometry: LevelGeometry, level: int) -> dict[str, int]:
    return {"level": level, "tokens": geometry.tokens(level)}


def _pick(scores: dict[str, float], level: int) -> dict[str, float]:
    return {metric: scores[f"{metric}_level{level}"] for metric in METRICS}
