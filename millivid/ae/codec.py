"""The autoencoder as the latent codec of rollouts: decode a level, re-encode generated frames.

    codec = LatentCodec(load_autoencoder(uri))
    rollout(..., decode=codec.decode, reencode=codec.reencode)

A plain object (picklable with its model), so evaluation workers get it whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from millivid.ae.model import HierarchicalAutoencoder
from millivid.schema import Precision
from millivid.training import autocast


@dataclass
class LatentCodec:
    model: HierarchicalAutoencoder
    precision: Precision = "bf16"

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, level: int) -> torch.Tensor:
        """(b n_l c) -> (b 3 h w) in [0, 1]."""
        device = next(self.model.parameters()).device
        with autocast(device, self.precision):
            return self.model.decode(latent.to(device), level).float()

    @torch.inference_mode()
    def reencode(self, finest: torch.Tensor) -> Sequence[torch.Tensor]:
        """Every level's latents of frames known only at the finest level: encode(decode(finest))."""
        device = next(self.model.parameters()).device
        with autocast(device, self.precision):
            frames = self.model.decode(finest.to(device), 0)
            return [level.float() for level in self.model.encode(frames)]
