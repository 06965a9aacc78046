"""Configuration of rollout schedules, the diffusion transformer, its training and sampling."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from millivid.diffusion.schedules import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
    ScheduleConfig,
)
from millivid.schema import Frozen, TrainConfig


class DiTConfig(Frozen):
    width: int = Field(256, ge=8)
    depth: int = Field(6, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    cfg_dropout: float = Field(0.1, ge=0, le=1, description="probability of dropping the action condition")

    @field_validator("heads")
    @classmethod
    def _heads_divide_width(cls, heads: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        return heads


class SamplerConfig(Frozen):
    steps: int = Field(50, ge=1, description="DDIM steps per schedule step")
    guidance: float = Field(1.0, ge=0, description="classifier-free guidance scale (1 = no guidance)")
    batch_size: int = Field(8, ge=1, description="rollouts sampled together")


class DiffusionConfig(Frozen):
    model: DiTConfig = DiTConfig()
    train: TrainConfig = TrainConfig()
    sampler: SamplerConfig = SamplerConfig()
    methods: dict[str, ScheduleConfig] = Field(
        default_factory=lambda: {
            "millivid": MilliVidScheduleConfig(),
            "full_res": FullResScheduleConfig(),
            "framepack": FramePackScheduleConfig(),
        },
        description="rollout methods to train and compare, by name",
    )
