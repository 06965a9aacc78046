"""Configuration of the data stage."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from millivid.schema import Frozen
from millivid.world.config import WorldConfig
from millivid.world.policies import BEHAVIOURS, MIXED_WEIGHTS, mix_probabilities

Policy = Literal["mixed", "wander", "return", "spin", "revisit"]
Behaviour = Literal["return", "revisit", "spin", "wander"]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SplitConfig(Frozen):
    """Seeded train/val/test split by episode."""

    val: float = Field(0.1, ge=0, lt=1, description="fraction of episodes for validation")
    test: float = Field(0.2, ge=0, lt=1, description="fraction of episodes for test")
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_training_episodes(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val {self.val:g} + test {self.test:g} = {self.val + self.test:g} leaves no episodes to train on; "
                             "the two must add up to less than 1")
        return self


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
    mix: dict[Behaviour, Weight] = Field(
        default_factory=lambda: dict(MIXED_WEIGHTS),
        description="relative weights of the behaviours policy=mixed draws (left out: 0); only with policy=mixed; "
        "null: the default weights",
    )
    world: WorldConfig = WorldConfig()

    @field_validator("size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError(f"must be a power of two (e.g. 32, 64, 128), got {size}")
        return size

    @field_validator("mix", mode="before")
    @classmethod
    def _null_is_the_default(cls, mix: object) -> object:
        return dict(MIXED_WEIGHTS) if mix is None else mix

    @field_validator("mix")
    @classmethod
    def _some_behaviour(cls, mix: dict[str, float]) -> dict[str, float]:
        mix_probabilities(mix)  # e.g. all weights 0
        # Every behaviour, in draw order: equal mixes dump, and so hash, alike.
        return {name: mix.get(name, 0.0) for name in BEHAVIOURS}

    @model_validator(mode="after")
    def _import_has_a_source(self) -> DataConfig:
        if self.source == "import" and not self.import_uri:
            raise ValueError("data.import_uri: required when data.source is 'import' (the folder or URI of the episodes)")
        return self

    @model_validator(mode="after")
    def _mix_only_when_mixed(self) -> DataConfig:
        if self.policy != "mixed" and self.mix != MIXED_WEIGHTS:
            raise ValueError(
                f"data.mix {self.mix} is only used by data.policy=mixed, and data.policy is {self.policy!r}: "
                "set data.policy=mixed, or data.mix=null for the default weights"
            )
        return self
