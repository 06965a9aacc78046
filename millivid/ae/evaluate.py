"""How well each latent level reconstructs held-out frames, and hierarchical vs downscaled level by level.

    evaluate_autoencoder(model, frames, lpips)     # {"levels": [{"level", "tokens", "psnr", "ssim", "lpips"}, ...], ...}
    compare_variants({"hierarchical": h, "downscaled": d}, frames, lpips)
                                                   # {"levels": [{"level", "tokens", "hierarchical": {...}, ...,
                                                   #              "psnr_difference": {"mean", "ci_low", "ci_high"}}]}

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
from millivid.eval.stats import bootstrap_mean
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
def level_values(truth: torch.Tensor, reconstructions: torch.Tensor, lpips: nn.Module) -> dict[str, np.ndarray]:
    """truth: (n 3 h w), reconstructions: (levels n 3 h w), both in [0, 1] -> {"psnr_level0": (n,), ...}."""
    values = {}
    for level, recon in enumerate(reconstructions):
        per_frame = {
            "psnr": psnr(recon, truth),
            "ssim": ssim(recon, truth),
            "lpips": lpips_distance(lpips, recon, truth.to(recon.device)),
        }
        values.update({f"{name}_level{level}": value.float().cpu().numpy() for name, value in per_frame.items()})
    return values


def level_metrics(truth: torch.Tensor, reconstructions: torch.Tensor, lpips: nn.Module) -> dict[str, float]:
    """truth: (n 3 h w), reconstructions: (levels n 3 h w), both in [0, 1] -> mean metric per level."""
    return {name: float(value.mean()) for name, value in level_values(truth, reconstructions, lpips).items()}


def level_scores(
    model: HierarchicalAutoencoder, frames: np.ndarray, lpips: nn.Module, batch_size: int = 64, precision: Precision = "bf16"
) -> dict[str, np.ndarray]:
    """frames: (n h w 3) uint8 -> {"psnr_level0": (n,) PSNR of each frame decoded from level 0, ...}."""
    truth = as_unit_frames(to_tensor(frames), model.size)
    reconstructions = level_reconstructions(model, truth, batch_size, precision)
    return level_values(truth.to(reconstructions.device), reconstructions, lpips.to(reconstructions.device))


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
    rows = [{**_level(geometry, level), **{name: _pick(score, level) for name, score in scores.items()}} for level in range(geometry.levels)]
    if len(scores) == 2:
        first, second = scores.values()
        for level, row in enumerate(rows):
            row["psnr_difference"] = psnr_difference(first[f"psnr_level{level}"], second[f"psnr_level{level}"])
    return {**_header(geometry, frames, lpips), "compared": list(scores), "levels": rows}


def psnr_difference(first: np.ndarray, second: np.ndarray, resamples: int = 1000) -> dict[str, float | int | None]:
    """Mean per-frame PSNR of the first model minus the second's, with a 95% bootstrap interval over
    frames (frames of one episode are correlated, so the interval is on the narrow side)."""
    return bootstrap_mean(first - second, resamples, seed=0).at(0)


def _header(geometry: LevelGeometry, frames: np.ndarray, lpips: nn.Module) -> dict[str, Any]:
    backbone = getattr(getattr(lpips, "status", None), "tag", "unknown")
    return {"frames": len(frames), "size": geometry.size, "patch": geometry.patch, "lpips_backbone": backbone}


def _level(geometry: LevelGeometry, level: int) -> dict[str, int]:
    return {"level": level, "tokens": geometry.tokens(level)}


def _pick(scores: dict[str, np.ndarray], level: int) -> dict[str, float]:
    return {metric: float(scores[f"{metric}_level{level}"].mean()) for metric in METRICS}
