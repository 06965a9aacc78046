"""FramePack: a few denoised finest frames after context frames that grow coarser with age.

Source: dcharatan/millivid, `source/strategy/strategy_framepack.py` and
`source/model/model_video_framepack.py`: d denoised finest frames after c_0 finest context frames,
before those c_1 frames at level 1, and so on (older context is coarser). The release's model
outputs only the finest tokens of the denoised frames, so the step denoises level 0; the coarse
context of generated frames comes from their finest latents — re-encoded by the autoencoder
(context_source "hierarchical") or compressed by the model's per-level kernels ("kernel",
FramePack's own way).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from millivid.diffusion.schedule_core import CONTEXT, DENOISED, ScheduleError
from millivid.diffusion.schedules.chunk import Chunk
from millivid.schema import Frozen


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

    @property
    def levels(self) -> int:
        """Levels this schedule spells out: one context count each."""
        return len(self.context)


def build(config: FramePackScheduleConfig, tokens: tuple[int, ...]) -> Chunk:
    if len(config.context) != len(tokens):
        raise ScheduleError(
            f"framepack context: {len(config.context)} levels {config.context} for {len(tokens)} levels (tokens {tokens})"
        )
    span = config.denoised + sum(config.context)
    matrix = np.zeros((len(tokens), span), dtype=np.int8)
    start = 0
    for level in reversed(range(len(tokens))):  # oldest first: coarsest level at the left
        matrix[level, start : start + config.context[level]] = CONTEXT
        start += config.context[level]
    matrix[0, start:] = DENOISED
    return Chunk((matrix,), stride=config.denoised, coarse_context_from_finest=True)
