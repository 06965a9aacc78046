"""Encode many frames to per-level latents in batches (no gradients, bf16 autocast by default).

    latents = encode_frames(model, frames)     # frames (n h w 3) uint8
    latents[l]                                 # (n n_l c) float16 numpy
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from millivid.ae.frames import to_tensor
from millivid.ae.model import HierarchicalAutoencoder
from millivid.schema import Precision
from millivid.training import autocast


@torch.inference_mode()
def encode_frames(
    model: HierarchicalAutoencoder,
    frames: np.ndarray,
    batch_size: int = 64,
    precision: Precision = "bf16",
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[np.ndarray]:
    """frames: (n h w 3) uint8 -> per-level latents, latents[l]: (n n_l c) float16."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (n h w 3) uint8, got {frames.dtype} {frames.shape}")
    device = next(model.parameters()).device
    model.eval()
    channels = model.config.latent_channels
    latents = [np.empty((len(frames), tokens, channels), dtype=np.float16) for tokens in model.tokens_per_level]
    for start in range(0, len(frames), batch_size):
        stop = min(start + batch_size, len(frames))
        with autocast(device, precision):
            encoded = model.encode(to_tensor(frames[start:stop], device))
        for level, latent in enumerate(encoded):
            latents[level][start:stop] = latent.cpu().numpy()
        progress(stop, len(frames))
    return latents
