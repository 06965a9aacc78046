"""MilliVid's coarse-to-fine rollout, cell by cell as the official release builds it.

Source: dcharatan/millivid, `source/strategy/strategy_millivid.py` (`StrategyMilliVid.run`);
tests/data/release_millivid.json holds that code's matrices for several settings.

Parameters: windows w_0..w_{L-1} (frames per step, finest level first, each a whole multiple of
the finer one) and an extra context budget E in tokens. Level l of a step holds E // tokens(l)
extra frames when it is the level being denoised.

One chunk spans sum(w) + E // tokens(L-1) frames; its last w_{L-1} frames are new. The chunk is a
depth-first traversal: denoise the w_{L-1} coarsest frames, then each level-l window is followed
by the w_l / w_{l-1} windows of level l-1 that refine it (1 + r + r^2 + ... steps), so a chunk
finishes every level of its frames before the next chunk starts.

Every step's context is foveated around the frames it refines. Each level l remembers its latest
window [s_l, s_l + w_l) (for levels not yet reached in this chunk: the previous chunk's, which
ends where this chunk's new frames begin). Going from the finest level to the coarsest, a covered
interval [left, right) grows: a level that is not denoised contributes w_l context frames, the part
of its window that falls before or inside [left, right) packed just left of it, the part after it
just right of it (future frames already generated at that coarser level); the denoised level marks
its window DENOISED and adds E // tokens(l) context frames just left of [left, right). Finer levels
thus sit nearest to the frames being refined, coarser ones farther out, and the coarsest level
fills the rest of the budget. Every step has sum_l w_l tokens(l) + (E // tokens(l*)) tokens(l*)
tokens, l* the denoised level: exactly sum_l w_l tokens(l) + E when E is a multiple of every
level's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from millivid.diffusion.schedule_core import CONTEXT, DENOISED, ScheduleError
from millivid.diffusion.schedules.chunk import Chunk
from millivid.schema import Frozen


class MilliVidScheduleConfig(Frozen):
    """Coarse-to-fine depth-first rollout: per-level windows (finest first) plus an extra context budget."""

    kind: Literal["millivid"] = "millivid"
    windows: tuple[int, ...] = Field(
        (1, 4, 16, 64), min_length=1, description="frames per step at each level, finest level first"
    )
    extra_budget: int = Field(
        256, ge=0, description="tokens of extra context at the denoised level (release: extra_budget)"
    )

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

    @property
    def levels(self) -> int:
        """Levels this schedule spells out: one window each."""
        return len(self.windows)


def build(config: MilliVidScheduleConfig, tokens: tuple[int, ...]) -> Chunk:
    windows = config.windows
    if len(windows) != len(tokens):
        raise ScheduleError(
            f"millivid windows: {len(windows)} windows {windows} for {len(tokens)} levels (tokens {tokens})"
        )
    extra = tuple(config.extra_budget // per_frame for per_frame in tokens)
    span = sum(windows) + extra[-1]
    # start of each level's latest window: one window before the chunk's new frames
    starts = [span - windows[-1] - window for window in windows]
    steps: list[np.ndarray] = []

    def traverse(level: int) -> None:
        starts[level] += windows[level]
        steps.append(foveated_step(level, starts, windows, extra, span))
        for _ in range(windows[level] // windows[level - 1] if level else 0):
            traverse(level - 1)

    traverse(len(windows) - 1)
    return Chunk(tuple(steps), stride=windows[-1])


def foveated_step(
    denoised: int, starts: Sequence[int], windows: Sequence[int], extra: Sequence[int], span: int
) -> np.ndarray:
    """(levels, span) matrix of the step that denoises `denoised`'s latest window."""
    matrix = np.zeros((len(windows), span), dtype=np.int8)
    left = right = starts[0]
    for level, (start, window) in enumerate(zip(starts, windows, strict=True)):
        stop = start + window
        if level == denoised:
            matrix[level, start:stop] = DENOISED
            left -= extra[level]
            matrix[level, left : left + extra[level]] = CONTEXT
            continue
        before_or_inside = overlap(start, stop, None, right)
        after = overlap(start, stop, right, None)
        left, right = left - before_or_inside, right + after
        matrix[level, left : left + before_or_inside] = CONTEXT
        matrix[level, right - after : right] = CONTEXT
    return matrix


def overlap(start: int, stop: int, lower: int | None, upper: int | None) -> int:
    """Frames of [start, stop) inside [lower, upper) (None: unbounded)."""
    low = start if lower is None else max(start, lower)
    high = stop if upper is None else min(stop, upper)
    return max(0, high - low)
