"""Encode many frames to per-level latents in batches (no gradients, bf16 autocast by default).

    latents = encode_frames(model, frames)     # frames (n h w 3) uint8
    latents[l]                                 # (n n_l c) float16 numpy
    encode_dataset(model, open_dataset(frames_uri), latents_uri, shard_frames=4096)   # every episode

A latent dataset has columns latent_0..latent_{L-1} ((n_l c) float16 per frame), actions and pose,
the frame dataset's splits, and meta: source (the frame dataset), tokens_per_level, latent_channels,
frame_size (what the diffusion stage and the evaluation read).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from millivid.ae.frames import to_tensor
from millivid.ae.model import HierarchicalAutoencoder
from millivid.data.columns import ColumnSpec
from millivid.data.manifest import Manifest
from millivid.data.reader import Dataset
from millivid.data.writer import DatasetWriter
from millivid.schema import Precision
from millivid.training import autocast

Progress = Callable[[int, int], None]


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


def latent_columns(tokens_per_level: tuple[int, ...], channels: int) -> dict[str, ColumnSpec]:
    return {f"latent_{level}": ColumnSpec(dtype="float16", shape=(tokens, channels)) for level, tokens in enumerate(tokens_per_level)}


def encode_dataset(model: HierarchicalAutoencoder, source: Dataset, uri: str, shard_frames: int, precision: Precision = "bf16",
                   meta: dict | None = None, progress: Progress | None = None) -> Manifest:
    """Write the latent dataset of every episode of `source` at `uri` (atomically); `meta` adds fields
    (e.g. the autoencoder's URI). progress(done, total) counts episodes."""
    channels = model.config.latent_channels
    columns = latent_columns(model.tokens_per_level, channels) | {name: source.columns[name] for name in ("actions", "pose")}
    meta = {"source": source.uri, "tokens_per_level": list(model.tokens_per_level), "latent_channels": channels,
            "frame_size": source.manifest.frame_size, **(meta or {})}
    splits = {episode.id: episode.split for episode in source.manifest.episodes}
    episodes = source.episodes()
    with DatasetWriter(uri, columns, kind="latents", splits=splits, shard_frames=shard_frames,
                       pose_known=source.manifest.pose_known, meta=meta) as writer:
        for index, episode in enumerate(episodes):
            arrays = source.read(episode, columns=["frames", "actions", "pose"])
            latents = encode_frames(model, arrays["frames"], precision=precision)
            writer.add(episode, {**{f"latent_{level}": latent for level, latent in enumerate(latents)},
                                 "actions": arrays["actions"], "pose": arrays["pose"]})
            if progress is not None:
                progress(index + 1, len(episodes))
    return writer.manifest
