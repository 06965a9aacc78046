"""The manifest: the one file readers trust. It lists columns, episodes, splits and shard checksums.

A dataset folder holds `manifest.json` and `shards/*.parquet`. The manifest is written last and
atomically, so a dataset is exactly what its manifest says; shard files it does not list
(from an interrupted write) are invisible and get removed by the next successful write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from millivid.data.columns import ColumnSpec, DataError
from millivid.data.config import SplitConfig
from millivid.schema import Frozen

SCHEMA_VERSION = 2  # 2: pose is x, y, z, yaw, pitch (was x, z, yaw)
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"  # the folder, next to the manifest, holding the shard files
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]


class ShardEntry(Frozen):
    path: str = Field(description="path relative to the dataset folder")
    rows: int = Field(ge=1)
    bytes: int = Field(ge=1)
    sha256: str = Field(min_length=64, max_length=64)


class EpisodeEntry(Frozen):
    id: str = Field(min_length=1)
    length: int = Field(ge=1, description="frames")
    split: Split
    shard: int = Field(ge=0, description="index into the manifest's shards")
    row: int = Field(ge=0, description="row of the episode's first frame inside its shard")


class Manifest(Frozen):
    schema_version: int = SCHEMA_VERSION
    kind: str = Field("frames", description="frames, latents, ...")
    columns: dict[str, ColumnSpec]
    episodes: tuple[EpisodeEntry, ...]
    shards: tuple[ShardEntry, ...]
    counts: dict[str, int] = Field(description="episodes, frames, and episodes per split")
    frame_size: tuple[int, int] | None = Field(None, description="(height, width) of the frames column")
    pose_known: bool = Field(True, description="False when the source had no camera poses (pose is NaN)")
    pose_unknown_frames: int | None = Field(
        None, ge=0, description="frames whose pose is unknown (NaN); None: not counted (written before this field)"
    )
    split: SplitConfig = SplitConfig()
    compression: str = "zstd"
    row_group_frames: int = Field(256, ge=1)
    meta: dict[str, Any] = Field(default_factory=dict, description="free-form: source, config, latent geometry, ...")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (this code reads {SCHEMA_VERSION})")
        if not self.episodes:
            raise ValueError("a dataset needs at least one episode")
        duplicates = [eid for eid, n in Counter(e.id for e in self.episodes).items() if n > 1]
        if duplicates:
            raise ValueError(f"duplicate episode ids {duplicates[:5]}")
        rows = Counter()
        for episode in self.episodes:
            if episode.shard >= len(self.shards):
                raise ValueError(f"episode {episode.id!r} points at shard {episode.shard}, but there are {len(self.shards)}")
            rows[episode.shard] += episode.length
        for index, shard in enumerate(self.shards):
            if rows[index] != shard.rows:
                raise ValueError(f"shard {shard.path} has {shard.rows} rows but its episodes have {rows[index]} frames")
        if self.counts != count(self.episodes):
            raise ValueError(f"counts {self.counts} do not match the episodes ({count(self.episodes)})")
        return self

    @property
    def frames(self) -> int:
        return self.counts["frames"]

    @property
    def bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)


def count(episodes: Sequence[EpisodeEntry]) -> dict[str, int]:
    per_split = Counter(e.split for e in episodes)
    return {"episodes": len(episodes), "frames": sum(e.length for e in episodes), **{s: per_split[s] for s in SPLITS}}


def parse_manifest(raw: Any, where: str) -> Manifest:
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc']) or '<root>'}: {problem['msg']}" for problem in err.errors()[:5]
        )
        raise DataError(f"{where}: not a valid manifest ({problems})") from None


def assign_splits(episode_ids: Sequence[str], split: SplitConfig) -> dict[str, Split]:
    """Seeded split by episode; depends on the set of ids, not on their order."""
    ids = sorted(episode_ids)
    n = len(ids)
    n_test, n_val = (_split_count(fraction, n) for fraction in (split.test, split.val))
    while n_test + n_val >= n and n_test + n_val > 0:  # keep at least one training episode
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    order = np.random.default_rng(split.seed).permutation(n)
    names = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    return {ids[i]: name for i, name in zip(order, names, strict=True)}


def _split_count(fraction: float, n: int) -> int:
    # a requested split gets at least one episode once there are enough to go round
    wanted = round(fraction * n)
    return max(wanted, 1) if fraction > 0 and n >= 3 else wanted


def frame_size(columns: Mapping[str, ColumnSpec]) -> tuple[int, int] | None:
    frames = columns.get("frames")
    return (frames.shape[0], frames.shape[1]) if frames is not None and len(frames.shape) == 3 else None
