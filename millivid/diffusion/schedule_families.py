"""The three rollout families as small pure functions: config + tokens per level -> Schedule.

Each family lists its steps as windows of frames in chunk-relative coordinates (frame 0 = the
first frame the chunk's first step generates); `rasterize` turns them into matrices whose column 0
is the oldest frame any step touches.

millivid (windows w_0..w_{L-1} finest first, extra budget E): a depth-first coarse-to-fine
traversal over staggered levels. At chunk start the frontier (first frame not generated yet) of
level l lags level l+1's by w_{l+1}: f_{L-1} = 0, f_l = f_{l+1} - w_{l+1}. The chunk denoises the
coarsest window [0, w_{L-1}); each level-l window is followed by w_l / w_{l-1} windows of level
l-1 at its own frontier (1 + r + r^2 + ... steps). A step denoising [s, s + w_l) at level l sees:
  - E / tokens(l) past frames of level l: [s - E/tokens(l), s);
  - each finer level k < l: its w_k most recently generated frames [f_k - w_k, f_k);
  - each coarser level k > l: w_k frames from the start of the extra past window,
    [s - E/tokens(l), s - E/tokens(l) + w_k), covering past and future (already generated
    thanks to the stagger).
Every step has E + sum_k w_k tokens(k) tokens; the chunk adds w_{L-1} frames at every level.

full_res (F frames): finest level only, F/2 context frames then F/2 denoised; stride F/2.

framepack (d denoised, context c_0..c_{L-1} finest first): d denoised finest frames after
c_0 finest context frames, before those c_1 frames at level 1, and so on (older context is
coarser); stride d. Coarse context of generated frames is derived from their finest latents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from millivid.diffusion.config import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
    ScheduleConfig,
)
from millivid.diffusion.schedule_core import CONTEXT, DENOISED, Schedule, ScheduleError


@dataclass(frozen=True)
class Window:
    """Frames [start, stop) of one level, in chunk-relative frame coordinates."""

    level: int
    start: int
    stop: int


@dataclass(frozen=True)
class StepWindows:
    denoised: Window
    context: tuple[Window, ...]


def build_schedule(
    config: ScheduleConfig, tokens_per_level: Sequence[int], name: str | None = None
) -> Schedule:
    """The Schedule of `config` for a latent with `tokens_per_level` (finest first); name defaults to the kind."""
    tokens = tuple(int(t) for t in tokens_per_level)
    if not tokens or min(tokens) < 1:
        raise ScheduleError(
            f"tokens_per_level must be positive integers, finest first, got {tokens_per_level!r}"
        )
    name = name or config.kind
    is_framepack = isinstance(config, FramePackScheduleConfig)
    if isinstance(config, MilliVidScheduleConfig):
        steps, stride = millivid_steps(config, tokens), config.windows[-1]
    elif isinstance(config, FullResScheduleConfig):
        steps, stride = full_res_steps(config), config.frames // 2
    elif is_framepack:
        steps, stride = framepack_steps(config, tokens), config.denoised
    else:
        raise ScheduleError(f"schedule {name!r}: unknown schedule config {type(config).__name__}")
    return Schedule(
        name=name,
        kind=config.kind,
        tokens_per_level=tokens,
        steps=rasterize(steps, len(tokens)),
        stride=stride,
        context_source=config.context_source if is_framepack else "hierarchical",
        coarse_context_from_finest=is_framepack,
    )


def build_schedules(
    methods: Mapping[str, ScheduleConfig], tokens_per_level: Sequence[int]
) -> dict[str, Schedule]:
    """Schedules of every method of a DiffusionConfig (`config.diffusion.methods`), by method name."""
    return {
        name: build_schedule(config, tokens_per_level, name) for name, config in methods.items()
    }


def millivid_steps(config: MilliVidScheduleConfig, tokens: tuple[int, ...]) -> list[StepWindows]:
    windows, budget = config.windows, config.extra_budget
    if len(windows) != len(tokens):
        raise ScheduleError(
            f"millivid windows: {len(windows)} windows {windows} for {len(tokens)} levels (tokens {tokens})"
        )
    for level, per_frame in enumerate(tokens):
        if budget % per_frame:
            raise ScheduleError(
                f"millivid extra_budget: {budget} tokens is not a whole number of level-{level} frames ({per_frame} tokens each)"
            )
    frontiers = [-sum(windows[level + 1 :]) for level in range(len(windows))]
    steps: list[StepWindows] = []
    depth_first(len(windows) - 1, windows, [budget // t for t in tokens], frontiers, steps)
    return steps


def depth_first(
    level: int,
    windows: Sequence[int],
    extra: Sequence[int],
    frontiers: list[int],
    steps: list[StepWindows],
) -> None:
    """Denoise the next window of `level`, then refine it with the windows of the next finer level."""
    start = frontiers[level]
    past = start - extra[level]
    finer = [Window(k, frontiers[k] - windows[k], frontiers[k]) for k in range(level)]
    coarser = [Window(k, past, past + windows[k]) for k in range(level + 1, len(windows))]
    same = [Window(level, past, start)] if extra[level] else []
    steps.append(
        StepWindows(Window(level, start, start + windows[level]), tuple(same + finer + coarser))
    )
    frontiers[level] += windows[level]
    if level > 0:
        for _ in range(windows[level] // windows[level - 1]):
            depth_first(level - 1, windows, extra, frontiers, steps)


def full_res_steps(config: FullResScheduleConfig) -> list[StepWindows]:
    half = config.frames // 2
    return [StepWindows(Window(0, 0, half), (Window(0, -half, 0),))]


def framepack_steps(config: FramePackScheduleConfig, tokens: tuple[int, ...]) -> list[StepWindows]:
    if len(config.context) != len(tokens):
        raise ScheduleError(
            f"framepack context: {len(config.context)} levels {config.context} for {len(tokens)} levels (tokens {tokens})"
        )
    ends = np.cumsum((0, *config.context))
    context = tuple(
        Window(level, -int(ends[level + 1]), -int(ends[level]))
        for level, count in enumerate(config.context)
        if count
    )
    return [StepWindows(Window(0, 0, config.denoised), context)]


def rasterize(steps: Sequence[StepWindows], levels: int) -> tuple[np.ndarray, ...]:
    """(levels, span) int8 matrices; column 0 is the oldest frame any step touches."""
    windows = [window for step in steps for window in (step.denoised, *step.context)]
    oldest = min(window.start for window in windows)
    span = max(window.stop for window in windows) - oldest
    matrices = []
    for step in steps:
        matrix = np.zeros((levels, span), dtype=np.int8)
        for window, value in [(w, CONTEXT) for w in step.context] + [(step.denoised, DENOISED)]:
            matrix[window.level, window.start - oldest : window.stop - oldest] = value
        matrices.append(matrix)
    return tuple(matrices)
