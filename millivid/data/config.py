"""Configuration of the data stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from millivid.schema import Frozen
from millivid.world.config import WorldConfig

Policy = Literal["mixed", "wander", "return", "spin", "revisit"]


class SplitConfig(Frozen):
    """Seeded train/val/test split by episode."""

    val: float = Field(0.1, ge=0, lt=1, description="fraction of episodes for validation")
    test: float = Field(0.2, ge=0, lt=1, description="fraction of episodes for test")
    seed: int = 0


class DataConfig(Frozen):
    source: Literal["world", "import"] = Field("world", description="render the built-in world or import SRC")
    import_uri: str | None = Field(None, description="folder or fsspec URI of episodes when source=import")
    episodes: int = Field(8, ge=1)
    frames: int = Field(256, ge=2, description="frames per episode")
    size: int = Field(64, ge=4, description="frame side in pixels (a power of two)")
    hold: int = Field(1, ge=1, description="frames each action is held for")
    seed: int = 0
    shard_frames: int = Field(2048, ge=1, description="frames per Parquet shard (approximate upper bound)")
    split: SplitConfig = SplitConfig()
    policy: Policy = Field(
        "mixed",
        description="trajectories of the built-in world: return trips, 360 turns, revisits of earlier places, "
        "wandering, or a random mix of them",
    )
    world: WorldConfig = WorldConfig()

    @field_validator("size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError(f"must be a power of two (e.g. 32, 64, 128), got {size}")
        return size
