"""Rollout planning: a schedule's chunk repeated over absolute frames, as a list of model calls.

Ground-truth context frames [0, context_frames) are known at every level. Chunk 0 is placed so
that step 0's first DENOISED column lands on frame `context_frames`; chunk c is shifted by
c * stride. Columns at frames < 0 are dropped (their cells become UNSEEN, their tokens are not
gathered). Steps whose DENOISED cells are all ground truth (or dropped) are skipped (none of the
built-in families has such steps, but a schedule whose levels lag each other would). Chunks are planned until every
finest frame in [context_frames, total_frames) is produced; then steps that neither produce such a
frame nor (transitively) feed one as context are left out, so the plan's model calls are exactly
those the wanted frames depend on. Coarse frames beyond total_frames may remain as look-ahead:
`frames_needed(plan)` says how far latent buffers and actions must reach.

`plan_rollout` raises ScheduleError unless, step by step: every CONTEXT cell is ground truth or
was produced by an earlier step (for FramePack, coarse context of a generated frame comes from its
finest latents), no DENOISED cell is ground truth or denoised twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from millivid.diffusion.schedule_core import CONTEXT, DENOISED, UNSEEN, Schedule, ScheduleError


@dataclass(frozen=True, eq=False)
class PlannedStep:
    """One model call of a rollout: step `index` of chunk `chunk`, denoising `level`, in absolute frames."""

    chunk: int
    index: int
    level: int
    frames: (
        np.ndarray
    )  # (span,) absolute frame of each column; may be < 0 (dropped) or >= total (look-ahead)
    matrix: np.ndarray  # (levels, span) the schedule step with columns at frames < 0 set to UNSEEN

    @property
    def denoised_frames(self) -> np.ndarray:
        """Absolute frames this step generates at `level`."""
        return self.frames[self.matrix[self.level] == DENOISED]


class Production:
    """Which (level, frame) cells are known so far: ground truth, or produced by a planned step."""

    def __init__(self, levels: int, context_frames: int) -> None:
        self.context_frames = context_frames
        self.producer = np.full(
            (levels, max(1, context_frames)), -1, dtype=np.int64
        )  # planned step index, -1 = none

    def grow(self, frames: np.ndarray) -> None:
        needed = int(frames.max()) + 1
        if needed > self.producer.shape[1]:
            extra = max(needed - self.producer.shape[1], self.producer.shape[1])
            self.producer = np.pad(self.producer, ((0, 0), (0, extra)), constant_values=-1)

    def known(self, frames: np.ndarray) -> np.ndarray:
        """(levels, span) whether each cell is ground truth or produced; frames < 0 read as unknown."""
        self.grow(frames)
        safe = np.maximum(frames, 0)
        return ((self.producer[:, safe] >= 0) | (safe < self.context_frames)) & (frames >= 0)

    def finest_done(self, stop: int) -> bool:
        """Whether every finest frame in [context_frames, stop) is known."""
        self.grow(np.array([stop]))
        return bool((self.producer[0, self.context_frames : stop] >= 0).all())


def plan_rollout(schedule: Schedule, context_frames: int, total_frames: int) -> list[PlannedStep]:
    """The model calls that roll `schedule` out from `context_frames` known frames to `total_frames`."""
    if context_frames < 0 or total_frames < context_frames:
        raise ScheduleError(
            f"plan: need 0 <= context_frames <= total_frames, got {context_frames} and {total_frames}"
        )
    base = context_frames - schedule.first_denoised_column
    production = Production(schedule.levels, context_frames)
    plan: list[PlannedStep] = []
    max_chunks = (total_frames - base) // schedule.stride + schedule.span // schedule.stride + 2
    chunk = 0
    while not production.finest_done(total_frames):
        if chunk >= max_chunks:
            raise ScheduleError(
                f"plan {schedule.name!r}: finest frames up to {total_frames} still missing after {chunk} chunks"
            )
        for index, step in enumerate(schedule.steps):
            frames = base + chunk * schedule.stride + np.arange(schedule.span)
            planned = place_step(
                schedule, production, chunk, index, np.where(frames >= 0, step, UNSEEN), frames
            )
            if planned is not None:
                production.producer[planned.level, planned.denoised_frames] = len(plan)
                plan.append(planned)
        chunk += 1
    return needed_steps(schedule, plan, production, total_frames)


def place_step(
    schedule: Schedule,
    production: Production,
    chunk: int,
    index: int,
    matrix: np.ndarray,
    frames: np.ndarray,
) -> PlannedStep | None:
    """The step in absolute frames, None when everything it would denoise is already known."""
    where = f"plan {schedule.name!r}: chunk {chunk} step {index}"
    known = production.known(frames)
    denoised = matrix == DENOISED
    if known[denoised].all():
        return None
    if known[denoised].any():
        raise ScheduleError(
            f"{where} would denoise frames that are already known {frames[(denoised & known).any(axis=0)].tolist()}"
        )
    available = known.copy()
    if schedule.coarse_context_from_finest:
        available[1:] |= known[0]
    missing = (matrix == CONTEXT) & ~available
    if missing.any():
        level, column = (int(i[0]) for i in np.nonzero(missing))
        raise ScheduleError(
            f"{where} uses level {level} frame {frames[column]} as context before it is known"
        )
    for array in (matrix, frames):
        array.setflags(write=False)
    return PlannedStep(chunk, index, schedule.denoised_level(index), frames, matrix)


def needed_steps(
    schedule: Schedule, plan: list[PlannedStep], production: Production, total_frames: int
) -> list[PlannedStep]:
    """The steps that produce a wanted finest frame or, transitively, context for one."""
    wanted = np.zeros(len(plan), dtype=bool)
    for position in reversed(range(len(plan))):
        step = plan[position]
        made = step.denoised_frames
        wanted[position] |= step.level == 0 and bool(
            ((made >= production.context_frames) & (made < total_frames)).any()
        )
        if not wanted[position]:
            continue
        levels, columns = np.nonzero(step.matrix == CONTEXT)
        frames = step.frames[columns]
        sources = production.producer[levels, frames]
        if schedule.coarse_context_from_finest:
            sources = np.where(sources < 0, production.producer[0, frames], sources)
        wanted[sources[sources >= 0]] = True
    return [step for step, keep in zip(plan, wanted, strict=True) if keep]


def visible_context(plan: list[PlannedStep], context_frames: int, total_frames: int) -> np.ndarray:
    """(total_frames - context_frames, context_frames) bool: whether ground-truth context frame c
    was within reach when rollout frame r was generated, i.e. CONTEXT (at any level) of a step that
    produced any level of frame context_frames + r. Coarse latents FramePack derives from the
    finest ones are not a step: for it only the finest step counts (see schedule_core's Reach)."""
    visible = np.zeros((total_frames - context_frames, context_frames), dtype=bool)
    for step in plan:
        made = step.denoised_frames
        made = made[(made >= context_frames) & (made < total_frames)] - context_frames
        seen = step.frames[(step.matrix == CONTEXT).any(axis=0)]
        seen = seen[(seen >= 0) & (seen < context_frames)]
        visible[np.ix_(made, seen)] = True
    return visible


def frames_needed(plan: list[PlannedStep]) -> int:
    """One past the largest frame any step touches: latent buffers and actions must reach this far."""
    touched = [step.frames[(step.matrix != UNSEEN).any(axis=0)].max() for step in plan]
    return int(max(touched)) + 1 if touched else 0


def describe_plan(
    schedule: Schedule, plan: list[PlannedStep], context_frames: int, total_frames: int
) -> dict[str, Any]:
    """Cost and reach of a rollout plan, as plain JSON-able values."""
    generated = total_frames - context_frames
    calls_per_level = np.bincount([step.level for step in plan], minlength=schedule.levels)
    return {
        "schedule": schedule.name,
        "context_frames": context_frames,
        "total_frames": total_frames,
        "generated_frames": generated,
        "model_calls": len(plan),
        "model_calls_per_level": {level: int(n) for level, n in enumerate(calls_per_level)},
        "model_calls_per_generated_frame": len(plan) / generated if generated else 0.0,
        "chunks": len({step.chunk for step in plan}),
        "tokens": sum(
            int((step.matrix != UNSEEN).sum(axis=1) @ np.array(schedule.tokens_per_level))
            for step in plan
        ),
        "frames_needed": frames_needed(plan),
    }
