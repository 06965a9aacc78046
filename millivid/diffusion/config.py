"""Configuration of rollout schedules, the diffusion transformer, its training and sampling."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from millivid.schema import Frozen, TrainConfig


class MilliVidScheduleConfig(Frozen):
    """Coarse-to-fine depth-first rollout: per-level windows (finest first) plus an extra context budget."""

    kind: Literal["millivid"] = "millivid"
    windows: tuple[int, ...] = Field((1, 4, 16, 64), min_length=1, description="frames per window, finest level first")
    extra_budget: int = Field(256, ge=0, description="tokens of extra past context at the denoised level")

    @field_validator("windows")
    @classmethod
    def _nested_windows(cls, windows: tuple[int, ...]) -> tuple[int, ...]:
        if min(windows) < 1:
            raise ValueError(f"every window must be >= 1 frame, got {windows}")
        for finer, coarser in zip(windows, windows[1:], strict=False):
            if coarser % finer:
                raise ValueError(
                    f"each window must be a whole multiple of the finer one before it (finest first), got {windows}"
                )
        return windows


class FullResScheduleConfig(Frozen):
    """Finest level only: the first half of the frames is context, the second half is denoised."""

    kind: Literal["full_res"] = "full_res"
    frames: int = Field(14, ge=2, description="frames per step (half context, half denoised)")

    @field_validator("frames")
    @classmethod
    def _even(cls, frames: int) -> int:
        if frames % 2:
            raise ValueError(f"must be even (half context, half denoised), got {frames}")
        return frames


class FramePackScheduleConfig(Frozen):
    """A few denoised finest frames plus context frames at increasingly coarse levels."""

    kind: Literal["framepack"] = "framepack"
    denoised: int = Field(3, ge=1, description="finest frames denoised per step")
    context: tuple[int, ...] = Field(
        (3, 12, 48, 192), min_length=1, description="context frames per level, finest first (0 = none at that level)"
    )
    context_source: Literal["hierarchical", "kernel"] = Field(
        "hierarchical", description="coarse context from the hierarchical latents or FramePack's kernel compression"
    )

    @field_validator("context")
    @classmethod
    def _counts(cls, context: tuple[int, ...]) -> tuple[int, ...]:
        if min(context) < 0:
            raise ValueError(f"context frame counts must be >= 0, got {context}")
        return context


ScheduleConfig = Annotated[
    MilliVidScheduleConfig | FullResScheduleConfig | FramePackScheduleConfig,
    Field(discriminator="kind"),
]


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
