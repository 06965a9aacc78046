"""Full-resolution autoregressive rollout: the finest level only, as the release's baseline.

Source: dcharatan/millivid, `source/strategy/strategy_baseline.py`: one step of F finest frames,
the first F // 2 context and the rest denoised (14 frames = 7 + 7 in the paper's main comparison).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from millivid.diffusion.schedule_core import CONTEXT, DENOISED
from millivid.diffusion.schedules.chunk import Chunk
from millivid.schema import Frozen


class FullResScheduleConfig(Frozen):
    """Finest level only: the first frames // 2 are context, the others are denoised."""

    kind: Literal["full_res"] = "full_res"
    frames: int = Field(14, ge=2, description="finest frames per step: frames // 2 context, the rest denoised")

    @property
    def levels(self) -> None:
        """None: it steps the finest level only, so it fits any number of levels."""
        return None


def build(config: FullResScheduleConfig, tokens: tuple[int, ...]) -> Chunk:
    context = config.frames // 2
    matrix = np.zeros((len(tokens), config.frames), dtype=np.int8)
    matrix[0, :context] = CONTEXT
    matrix[0, context:] = DENOISED
    return Chunk((matrix,), stride=config.frames - context)
