"""Where the autoencoder's frames come from: a small protocol, an in-memory source and synthetic frames.

A source hands out uint8 frames (b h w 3): `sample(rng, batch)` for training (every draw from
`rng`, so a batch is a pure function of the caller's seed) and `held_out(n)` for evaluation
(always the same n frames).

    StoreFrames(open_dataset(uri))                     # the sharded episode store
    ArrayFrames(train, held_out)                       # frames in memory (tests, notebooks)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from einops import rearrange

from millivid.data.clips import ClipLoader
from millivid.data.columns import DataError
from millivid.data.manifest import Split
from millivid.data.reader import Dataset
from millivid.images import to_uint8


class FrameSource(Protocol):
    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """(batch h w 3) uint8 training frames, drawn with `rng` only."""

    def held_out(self, n: int) -> np.ndarray:
        """(<= n h w 3) uint8 evaluation frames, the same on every call."""


class ArrayFrames:
    """Frames already in memory: training frames drawn uniformly with replacement."""

    def __init__(self, train: np.ndarray, held_out: np.ndarray):
        for name, frames in (("train", train), ("held_out", held_out)):
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
                raise ValueError(f"{name} frames must be a non-empty (n h w 3) uint8 array, got {frames.dtype} {frames.shape}")
        self.train, self.held = train, held_out

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        return self.train[rng.integers(len(self.train), size=batch)]

    def held_out(self, n: int) -> np.ndarray:
        return self.held[:n]


class StoreFrames:
    """Single frames of a dataset from `millivid.data.reader`: training frames uniform over every
    frame of `train_split`; held-out frames evenly spaced over all frames of `held_out_split`."""

    def __init__(self, dataset: Dataset, train_split: Split = "train", held_out_split: Split = "val"):
        self.dataset, self.held_out_split = dataset, held_out_split
        self.train = ClipLoader(dataset, length=1, batch_size=1, split=train_split, columns=["frames"])
        self._held_out: dict[int, np.ndarray] = {}

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        return self.train.sample(rng, batch)["frames"][:, 0]

    def held_out(self, n: int) -> np.ndarray:
        if n not in self._held_out:
            episodes = self.dataset.episodes(self.held_out_split)
            if not episodes:
                raise DataError(f"{self.dataset.uri}: no {self.held_out_split} episodes to evaluate on")
            first = np.cumsum([0] + [self.dataset.length(e) for e in episodes])
            picks = np.unique(np.linspace(0, first[-1] - 1, n).round().astype(int))
            where = [(episodes[e], int(p - first[e])) for p, e in zip(picks, np.searchsorted(first, picks, "right") - 1, strict=True)]
            self._held_out[n] = np.stack([self.dataset.read(e, f, f + 1, ["frames"])["frames"][0] for e, f in where])
        return self._held_out[n]


def synthetic_frames(count: int, size: int, seed: int = 0) -> np.ndarray:
    """(count size size 3) uint8: a colour gradient with a few flat rectangles and a disc per frame.

    Sharp edges at every scale and flat regions: enough structure that every pyramid level
    carries information, cheap enough to make in tests.
    """
    rng = np.random.default_rng(seed)
    rows, cols = (np.mgrid[0:size, 0:size] + 0.5) / size  # (h w) each
    top, bottom = rng.random((2, count, 1, 1, 3))
    frames = top + (bottom - top) * rows[None, :, :, None]
    for _ in range(3):
        corner = rng.random((2, count, 1, 1))
        extent = rng.uniform(0.1, 0.5, (2, count, 1, 1))
        inside = (abs(rows - corner[0] - extent[0] / 2) < extent[0] / 2) & (abs(cols - corner[1] - extent[1] / 2) < extent[1] / 2)
        frames = np.where(inside[..., None], rng.random((count, 1, 1, 3)), frames)
    centre, radius = rng.random((2, count, 1, 1)), rng.uniform(0.08, 0.25, (count, 1, 1))
    inside = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
    frames = np.where(inside[..., None], rng.random((count, 1, 1, 3)), frames)
    return to_uint8(frames)


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n h w 3) uint8 numpy -> (n 3 h w) uint8 tensor on `device`."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "n h w c -> n c h w").to(device)


def to_numpy(images: torch.Tensor) -> np.ndarray:
    """(... 3 h w) float in [0, 1] -> (... h w 3) uint8."""
    return to_uint8(rearrange(images.detach().float().cpu(), "... c h w -> ... h w c").numpy())
