"""Token geometry of the hierarchical latent: how many tokens each pyramid level of a frame has.

Level 0 is the finest. Level l is the frame mean-pooled 2^l times per side, cut into
`patch` x `patch` patches, so a `size` x `size` frame has (size / 2^l / patch)^2 tokens at level l.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LevelGeometry:
    size: int
    patch: int
    levels: int

    def __post_init__(self) -> None:
        problem = geometry_problem(self.size, self.patch, self.levels)
        if problem:
            raise ValueError(problem)

    @classmethod
    def from_finest_tokens(cls, finest_tokens: int, levels: int) -> LevelGeometry:
        """`levels` levels whose finest has `finest_tokens` = n^2 tokens: an n x n frame of 1 x 1
        patches, 4x fewer tokens per coarser level (256, 4 -> 256, 64, 16, 4).

        Raises ValueError unless n is a power of two that halves `levels - 1` times."""
        side = math.isqrt(max(finest_tokens, 0))
        if side * side != finest_tokens or geometry_problem(side, 1, levels):
            raise ValueError(
                f"{finest_tokens} tokens are not an n x n grid (n a power of two) that halves per side "
                f"{levels - 1} times for {levels} levels"
            )
        return cls(side, 1, levels)

    def grid(self, level: int) -> int:
        """Tokens per side at `level`."""
        self._check_level(level)
        return self.size // (2**level) // self.patch

    def tokens(self, level: int) -> int:
        """Tokens per frame at `level`."""
        return self.grid(level) ** 2

    @property
    def tokens_per_level(self) -> tuple[int, ...]:
        return tuple(self.tokens(level) for level in range(self.levels))

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} outside 0..{self.levels - 1}")


def geometry_problem(size: int, patch: int, levels: int) -> str | None:
    """Why (size, patch, levels) is not a valid pyramid geometry, or None when it is."""
    if size < 1 or size & (size - 1):
        return f"frame size must be a power of two, got {size}"
    if patch < 1:
        return f"patch must be >= 1, got {patch}"
    if levels < 1:
        return f"levels must be >= 1, got {levels}"
    coarsest = size // (2 ** (levels - 1))
    if size % (2 ** (levels - 1)) or coarsest < patch or coarsest % patch:
        return (
            f"{levels} levels of a {size}x{size} frame leave a {coarsest}x{coarsest} coarsest level "
            f"(after {levels - 1} halvings), which {patch}x{patch} patches do not tile; "
            f"use fewer levels, a smaller patch or a larger frame"
        )
    return None
