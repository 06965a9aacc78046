"""Seeded random clips for training: batch `index` is a pure function of (seed, index).

    loader = ClipLoader(open_dataset(uri), length=16, batch_size=8, columns=["latent_0", "actions"])
    loader.batch(step)          # {"latent_0": (8 16 n c) float16, "actions": (8 16) int8}

A clip is `length` frames `stride` apart. Every valid (episode, start) pair of the split is
equally likely. Data-parallel ranks use distinct indices, e.g. step * world_size + rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from millivid.data.columns import DataError
from millivid.data.manifest import Split
from millivid.data.reader import Dataset


class ClipLoader:
    def __init__(
        self,
        dataset: Dataset,
        length: int,
        batch_size: int,
        *,
        stride: int = 1,
        split: Split = "train",
        columns: Sequence[str] | None = None,
        seed: int = 0,
    ):
        if length < 1 or stride < 1 or batch_size < 1:
            raise ValueError(f"length, stride and batch_size must be >= 1, got {length}, {stride}, {batch_size}")
        self.dataset, self.length, self.batch_size, self.stride = dataset, length, batch_size, stride
        self.columns = list(columns) if columns is not None else list(dataset.columns)
        self.seed = seed
        self.span = (length - 1) * stride + 1
        self.episodes = [e for e in dataset.episodes(split) if dataset.length(e) >= self.span]
        if not self.episodes:
            raise DataError(
                f"{dataset.uri}: no {split} episode has the {self.span} frames a clip of {length} "
                f"(stride {stride}) needs"
            )
        starts = np.array([dataset.length(e) - self.span + 1 for e in self.episodes])
        self.first_clip = np.concatenate([[0], np.cumsum(starts)])

    @property
    def clips(self) -> int:
        """Distinct (episode, start) clips in the split."""
        return int(self.first_clip[-1])

    def positions(self, rng: np.random.Generator, count: int) -> list[tuple[str, int]]:
        """`count` (episode id, start frame) pairs, uniform over all clips."""
        drawn = rng.integers(0, self.clips, size=count)
        episode = np.searchsorted(self.first_clip, drawn, side="right") - 1
        return [(self.episodes[e], int(d - self.first_clip[e])) for e, d in zip(episode, drawn, strict=True)]

    def clip(self, episode_id: str, start: int) -> dict[str, np.ndarray]:
        """One clip: {column: (t, ...)}."""
        arrays = self.dataset.read(episode_id, start, start + self.span, self.columns)
        return {name: values[:: self.stride] for name, values in arrays.items()}

    def sample(self, rng: np.random.Generator, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """A batch {column: (b, t, ...)} drawn with `rng`."""
        clips = [self.clip(e, s) for e, s in self.positions(rng, batch_size or self.batch_size)]
        return {name: np.stack([c[name] for c in clips]) for name in self.columns}

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """Batch number `index` (any non-negative int): the same arrays for the same (seed, index)."""
        return self.sample(np.random.default_rng([self.seed, index]))


class StoreClips:
    """Clips of any length from one split, drawn with the caller's rng (the trainers' clip source):
    `sample(rng, batch, length)` -> {column: (batch length ...)}."""

    def __init__(self, dataset: Dataset, split: Split = "train", columns: Sequence[str] | None = None):
        self.dataset, self.split, self.columns = dataset, split, columns
        self.loaders: dict[int, ClipLoader] = {}

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
        if length not in self.loaders:
            self.loaders[length] = ClipLoader(self.dataset, length, batch, split=self.split, columns=self.columns)
        return self.loaders[length].sample(rng, batch)
