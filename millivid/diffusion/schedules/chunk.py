"""What a schedule family builds: one chunk of step matrices and how far the chunk moves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chunk:
    """steps: (levels, span) int8 matrices of UNSEEN/CONTEXT/DENOISED; stride: new frames per chunk.

    `coarse_context_from_finest`: context at levels > 0 of generated frames comes from their finest
    latents (FramePack), not from a step that denoises those levels.
    """

    steps: tuple[np.ndarray, ...]
    stride: int
    coarse_context_from_finest: bool = False
