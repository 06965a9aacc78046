"""The autoencoder's loss: MSE on every reconstructed pyramid level (level l weighted by base^l)
plus LPIPS on the finest level. Always float32, also inside a bf16 autocast region."""

from __future__ import annotations

import torch
from einops import reduce
from torch import nn

from millivid.ae.config import AutoencoderLossConfig
from millivid.metrics import lpips_distance


def pyramid_loss(
    reconstruction: list[torch.Tensor],
    target: list[torch.Tensor],
    cfg: AutoencoderLossConfig,
    lpips: nn.Module | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pyramids as lists, finest first, of (b 3 h_l w_l) in [0, 1] -> (scalar loss, metrics as 0-d tensors).

    `lpips` may be None only when cfg.lpips_weight is 0.
    """
    with torch.autocast(target[0].device.type, enabled=False):
        total = torch.zeros((), device=target[0].device)
        metrics = {}
        for level, (recon, truth) in enumerate(zip(reconstruction, target, strict=True)):
            mse = reduce((recon.float() - truth.float()) ** 2, "b c h w -> ", "mean")
            total = total + cfg.level_weight_base**level * mse
            metrics[f"train/mse_level{level}"] = mse.detach()
        if cfg.lpips_weight > 0:
            if lpips is None:
                raise ValueError("autoencoder.loss.lpips_weight > 0 needs an LPIPS network")
            perceptual = lpips_distance(lpips, reconstruction[0], target[0]).mean()
            total = total + cfg.lpips_weight * perceptual
            metrics["train/lpips_level0"] = perceptual.detach()
    return total, metrics
