"""A rollout schedule as data: one chunk of steps, each an integer matrix over (levels x frames).

Cell values: UNSEEN=0 (not in the step), CONTEXT=1 (clean input tokens), DENOISED=2 (tokens the
step generates). Row l is level l (0 = finest), column j is frame j of the chunk (0 = oldest). A
rollout repeats the chunk, shifted by `stride` frames each time. Every step denoises exactly one
level; its token count is the sum over its CONTEXT/DENOISED cells of the level's tokens per frame.

`validate_schedule` proves a schedule can be rolled out forever: each step denoises one level;
across repeated chunks every (level, frame) that is denoised at all is denoised exactly once, the
finest level included; and every CONTEXT cell was produced earlier (in an earlier chunk or by an
earlier step of the same chunk). Schedules validate themselves when constructed.

Reach (`Schedule.reach`): how many frames before a generated frame the steps that make it can see,
at any level. `per_level[l]`: every level-l frame is denoised by a step whose context starts at
least that many frames before it. `overall`: every finest frame is conditioned, directly or
through its coarser latents (which the finest step sees as context), on steps whose context starts
at least that many frames before it: the largest reach among the steps producing any level of the
frame, minimised over frames. Both are guarantees (minima): frames later in a chunk see further
back. A context frame further back than `overall` is out of sight of at least the chunk's earliest
frames; whether a given revisit frame could see it is asked per frame (`Production` in plan.py, the
evaluation's within / out of reach split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNSEEN, CONTEXT, DENOISED = 0, 1, 2
CONTEXT_SOURCES = ("hierarchical", "kernel")


class ScheduleError(ValueError):
    """A schedule (or its config, or a rollout plan) that cannot work; the message says which field or step."""


@dataclass(frozen=True)
class Reach:
    """Frames back a generated frame's steps can see (see the module docstring); all >= 0."""

    overall: int
    per_level: dict[int, int]  # denoised level -> frames; levels no step denoises are absent

    def describe(self) -> dict[str, Any]:
        return {"overall": self.overall, "per_level": dict(self.per_level)}


@dataclass(frozen=True, eq=False)
class Schedule:
    """One chunk of rollout steps; `steps[i]` is a read-only int8 matrix (levels, span).

    `coarse_context_from_finest`: CONTEXT cells at levels > 0 of generated frames come from those
    frames' finest latents (FramePack: re-encoded by the autoencoder for context_source
    "hierarchical", kernel-compressed by the model for "kernel"), not from a step denoising them.
    """

    name: str
    kind: str
    tokens_per_level: tuple[int, ...]
    steps: tuple[np.ndarray, ...]
    stride: int
    context_source: str = "hierarchical"
    coarse_context_from_finest: bool = False
    reach: Reach = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens_per_level", tuple(int(t) for t in self.tokens_per_level))
        object.__setattr__(
            self,
            "steps",
            tuple(read_only_matrix(step, index) for index, step in enumerate(self.steps)),
        )
        producers = validate_schedule(self)
        object.__setattr__(self, "reach", schedule_reach(self, producers))

    @property
    def levels(self) -> int:
        return len(self.tokens_per_level)

    @property
    def span(self) -> int:
        """Frames (columns) of one chunk."""
        return self.steps[0].shape[1]

    @property
    def tokens_per_step(self) -> list[int]:
        return [step_tokens(step, self.tokens_per_level) for step in self.steps]

    @property
    def max_tokens(self) -> int:
        return max(self.tokens_per_step)

    def denoised_level(self, index: int) -> int:
        return denoised_level(self.steps[index])

    @property
    def first_denoised_column(self) -> int:
        """Column of step 0's first DENOISED cell: a rollout places it on the first frame to generate."""
        return int(np.flatnonzero((self.steps[0] == DENOISED).any(axis=0))[0])

    def steps_per_level(self) -> dict[int, int]:
        counts = np.bincount(
            [self.denoised_level(i) for i in range(len(self.steps))], minlength=self.levels
        )
        return {level: int(n) for level, n in enumerate(counts)}

    def describe(self) -> dict[str, Any]:
        """The schedule's numbers as plain JSON-able values (what `millivid schedule describe` prints)."""
        tokens = self.tokens_per_step
        return {
            "name": self.name,
            "kind": self.kind,
            "levels": self.levels,
            "tokens_per_level": list(self.tokens_per_level),
            "steps": len(self.steps),
            "steps_per_level": self.steps_per_level(),
            "chunk_frames": self.span,
            "new_frames_per_chunk": self.stride,
            "tokens_per_step": tokens,
            "max_tokens_per_step": max(tokens),
            "min_tokens_per_step": min(tokens),
            "model_calls_per_new_frame": len(self.steps) / self.stride,
            "first_denoised_column": self.first_denoised_column,
            "reach": self.reach.describe(),
            "context_source": self.context_source,
            "coarse_context_from_finest": self.coarse_context_from_finest,
        }


def read_only_matrix(step: Any, index: int) -> np.ndarray:
    array = np.asarray(step)
    if array.ndim != 2:
        raise ScheduleError(
            f"step {index}: expected a (levels, span) matrix, got shape {array.shape}"
        )
    if array.dtype.kind not in "iub" or not np.isin(array, (UNSEEN, CONTEXT, DENOISED)).all():
        raise ScheduleError(
            f"step {index}: cells must be UNSEEN=0, CONTEXT=1 or DENOISED=2, got values {np.unique(array)[:8].tolist()}"
        )
    matrix = array.astype(np.int8, copy=True)
    matrix.setflags(write=False)
    return matrix


def step_tokens(step: np.ndarray, tokens_per_level: Sequence[int]) -> int:
    """Tokens of one step: every CONTEXT or DENOISED cell contributes its level's tokens per frame."""
    cells_per_level = (step != UNSEEN).sum(axis=1)
    return int(cells_per_level @ np.asarray(tokens_per_level, dtype=np.int64))


def denoised_level(step: np.ndarray) -> int:
    levels = np.flatnonzero((step == DENOISED).any(axis=1))
    if len(levels) != 1:
        raise ScheduleError(
            f"a step must denoise exactly one level, this one denoises levels {levels.tolist()}"
        )
    return int(levels[0])


def validate_schedule(schedule: Schedule) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Raise ScheduleError naming the first problem (see the module docstring for what is proved);
    returns the producers of every denoised level (see check_production)."""
    check_fields(schedule)
    producers = check_production(schedule)
    check_context_produced_first(schedule, producers)
    return producers


def schedule_reach(schedule: Schedule, producers: dict[int, tuple[np.ndarray, np.ndarray]]) -> Reach:
    """Reach of a validated schedule, from the steps producing each (level, frame residue)."""
    oldest = np.array([np.flatnonzero((step == CONTEXT).any(axis=0)).min() for step in schedule.steps])
    # back[l][r]: frames between the level-l producer of residue r and the oldest context of its step
    back = {level: columns - oldest[steps] for level, (columns, steps) in producers.items()}
    overall = np.max(np.stack(list(back.values())), axis=0).min()
    return Reach(int(overall), {level: int(back[level].min()) for level in sorted(back)})


def check_fields(schedule: Schedule) -> None:
    if not schedule.steps:
        raise ScheduleError(f"schedule {schedule.name!r}: has no steps")
    if not schedule.tokens_per_level or min(schedule.tokens_per_level) < 1:
        raise ScheduleError(
            f"schedule {schedule.name!r}: tokens_per_level must be positive, got {schedule.tokens_per_level}"
        )
    if schedule.context_source not in CONTEXT_SOURCES:
        raise ScheduleError(
            f"schedule {schedule.name!r}: context_source must be one of {CONTEXT_SOURCES}, got {schedule.context_source!r}"
        )
    shape = (schedule.levels, schedule.steps[0].shape[1])
    for index, step in enumerate(schedule.steps):
        if step.shape != shape:
            raise ScheduleError(
                f"schedule {schedule.name!r}: step {index} has shape {step.shape}, expected (levels, span) = {shape}"
            )
        try:
            denoised_level(step)
        except ScheduleError as err:
            raise ScheduleError(f"schedule {schedule.name!r}: step {index}: {err}") from None
        if not (step == CONTEXT).any():
            raise ScheduleError(
                f"schedule {schedule.name!r}: step {index} has no context, so its frames would ignore the past"
            )
    if not 1 <= schedule.stride <= schedule.span:
        raise ScheduleError(
            f"schedule {schedule.name!r}: stride must be in 1..span={schedule.span}, got {schedule.stride}"
        )


def check_production(schedule: Schedule) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per denoised level: (column, step) producing each frame residue modulo stride, one producer per residue."""
    producers = {}
    for level in range(schedule.levels):
        cells = [
            (column, index)
            for index, step in enumerate(schedule.steps)
            for column in np.flatnonzero(step[level] == DENOISED)
        ]
        if not cells:
            continue
        columns, steps = (np.array(values) for values in zip(*cells, strict=True))
        residues = columns % schedule.stride
        if len(cells) != schedule.stride or len(np.unique(residues)) != schedule.stride:
            raise ScheduleError(
                f"schedule {schedule.name!r}: level {level} must denoise each of the {schedule.stride} new frames of a "
                f"chunk exactly once, but denoises {len(cells)} cells covering {len(np.unique(residues))} distinct frames"
            )
        order = np.argsort(residues)
        producers[level] = (columns[order], steps[order])
    if 0 not in producers:
        raise ScheduleError(
            f"schedule {schedule.name!r}: no step denoises the finest level (0), so a rollout makes no frames"
        )
    return producers


def check_context_produced_first(
    schedule: Schedule, producers: dict[int, tuple[np.ndarray, np.ndarray]]
) -> None:
    """In an endless rollout, every CONTEXT cell must come from an earlier chunk or an earlier step of this one."""
    for index, step in enumerate(schedule.steps):
        for level in np.flatnonzero((step == CONTEXT).any(axis=1)):
            source = context_source_level(schedule, int(level), producers)
            columns = np.flatnonzero(step[level] == CONTEXT)
            producer_columns, producer_steps = producers[source]
            residues = columns % schedule.stride
            chunks_ago = (producer_columns[residues] - columns) // schedule.stride
            earlier = (chunks_ago > 0) | ((chunks_ago == 0) & (producer_steps[residues] < index))
            if not earlier.all():
                column = int(columns[~earlier][0])
                raise ScheduleError(
                    f"schedule {schedule.name!r}: step {index} uses level {level} column {column} as context "
                    f"before any step has produced it"
                )


def context_source_level(schedule: Schedule, level: int, producers: dict[int, Any]) -> int:
    if level in producers:
        return level
    if schedule.coarse_context_from_finest and level > 0:
        return 0
    raise ScheduleError(
        f"schedule {schedule.name!r}: level {level} is used as context but no step denoises it "
        "(FramePack-style schedules derive it from the finest level: coarse_context_from_finest=True)"
    )


def training_step_weights(schedule: Schedule) -> np.ndarray:
    """(steps,) probabilities: each denoised level equally likely, steps uniform within a level."""
    levels = np.array([schedule.denoised_level(i) for i in range(len(schedule.steps))])
    present, counts = np.unique(levels, return_counts=True)
    per_step = 1.0 / (len(present) * counts)
    return per_step[np.searchsorted(present, levels)]


def budget_warnings(schedules: Sequence[Schedule], tolerance: float = 0.10) -> list[str]:
    """One warning per schedule whose max tokens per step is more than `tolerance` below the largest.

    Methods are compared at equal per-step token budgets; checking against the largest covers every
    pair, since two schedules within `tolerance` of the largest are within it of each other.
    """
    if not schedules:
        return []
    largest = max(schedules, key=lambda schedule: schedule.max_tokens)
    warnings = []
    for schedule in schedules:
        gap = (largest.max_tokens - schedule.max_tokens) / largest.max_tokens
        if gap > tolerance:
            warnings.append(
                f"token budgets differ: {schedule.name!r} uses at most {schedule.max_tokens} tokens per step, "
                f"{gap:.0%} fewer than {largest.name!r} ({largest.max_tokens}); tolerance {tolerance:.0%}"
            )
    return warnings
