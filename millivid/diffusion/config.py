"""Configuration of rollout schedules, the diffusion transformer, its training and sampling."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from millivid.schema import Frozen, TrainConfig


class MilliVidScheduleConfig(Frozen):
    """Coarse-to-fine depth-first rollout: per-level windows (finest first) plus an extra context budget."""

    kind: Literal["millivid"] = "millivid"
    windows: tuple[int, ...] = Field((1, 4, 16, 64), min_length=1, description="frames per window, finest level first")
    extra_budget: int = Field(256, ge=0, description="tokens of extra past context at the denoised level")


class FullResScheduleConfig(Frozen):
    """Finest level only: the first half of the frames is context, the second half is denoised."""

    kind: Literal["full_res"] = "full_res"
    frames: int = Field(14, ge=2, description="frames per step (half context, half denoised)")


class FramePackScheduleConfig(Frozen):
    """A few denoised finest frames plus context frames at increasingly coarse levels."""

    kind: Literal["framepack"] = "framepack"
    denoised: int = Field(3, ge=1, description="finest frames denoised per step")
    context: tuple[int, ...] = Field((3, 12, 48, 192), min_length=1, description="context frames per level, finest first")
    context_source: Literal["hierarchical", "kernel"] = Field(
        "hierarchical", description="coarse context from the hierarchical latents or FramePack's kernel compression"
    )


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
