"""Rollout plans: replayed cell by cell by an independent checker, for many schedules and lengths."""

import math

import numpy as np
import pytest
from toys import PAPER_TOKENS

from millivid.diffusion.schedule import (
    CONTEXT,
    DENOISED,
    UNSEEN,
    Schedule,
    ScheduleError,
    build_schedule,
    describe_plan,
    frames_needed,
    plan_rollout,
)
from millivid.diffusion.schedules import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
)


def tokens_for(levels, finest=64):
    return tuple(finest // 4**level for level in range(levels))


SCHEDULES = {
    "millivid-1": build_schedule(
        MilliVidScheduleConfig(windows=(2,), extra_budget=64), tokens_for(1)
    ),
    "millivid-1-2": build_schedule(
        MilliVidScheduleConfig(windows=(1, 2), extra_budget=64), tokens_for(2)
    ),
    "millivid-1-4-16": build_schedule(
        MilliVidScheduleConfig(windows=(1, 4, 16), extra_budget=64), tokens_for(3)
    ),
    "millivid-1-4-16-E0": build_schedule(
        MilliVidScheduleConfig(windows=(1, 4, 16), extra_budget=0), tokens_for(3)
    ),
    "millivid-2-4-8-E3": build_schedule(
        MilliVidScheduleConfig(windows=(2, 4, 8), extra_budget=192), tokens_for(3)
    ),
    "millivid-1-1-2": build_schedule(
        MilliVidScheduleConfig(windows=(1, 1, 2), extra_budget=64), tokens_for(3)
    ),
    "millivid-1-2-4-8": build_schedule(
        MilliVidScheduleConfig(windows=(1, 2, 4, 8), extra_budget=64), tokens_for(4)
    ),
    "full_res-2": build_schedule(FullResScheduleConfig(frames=2), tokens_for(3)),
    "full_res-6": build_schedule(FullResScheduleConfig(frames=6), tokens_for(1)),
    "framepack-1-4-16": build_schedule(
        FramePackScheduleConfig(denoised=1, context=(1, 4, 16)), tokens_for(3)
    ),
    "framepack-3-0-5": build_schedule(
        FramePackScheduleConfig(denoised=3, context=(2, 0, 5), context_source="kernel"),
        tokens_for(3),
    ),
}


def replay(schedule: Schedule, plan, context: int, total: int) -> None:
    """Check a plan against the schedule cell by cell, without using the planner's own bookkeeping."""
    origin = int(np.flatnonzero((schedule.steps[0] == DENOISED).any(axis=0))[0])
    horizon = total + 2 * schedule.span + 2 * schedule.stride
    ground_truth = np.zeros((schedule.levels, horizon), dtype=bool)
    ground_truth[:, :context] = True
    known = ground_truth.copy()
    order = [(step.chunk, step.index) for step in plan]
    assert order == sorted(set(order)), "steps out of order or repeated"
    for step in plan:
        frames = context - origin + step.chunk * schedule.stride + np.arange(schedule.span)
        assert np.array_equal(step.frames, frames)
        assert np.array_equal(
            step.matrix, np.where(frames >= 0, schedule.steps[step.index], UNSEEN)
        )
        assert step.level == schedule.denoised_level(step.index)
        assert not step.matrix.flags.writeable and not step.frames.flags.writeable
        levels, columns = np.nonzero(step.matrix == CONTEXT)
        available = known[levels, frames[columns]]
        if schedule.coarse_context_from_finest:
            available |= (levels > 0) & known[0, frames[columns]]
        assert available.all(), (
            f"chunk {step.chunk} step {step.index}: context {frames[columns[~available]]} unknown"
        )
        levels, columns = np.nonzero(step.matrix == DENOISED)
        assert len(levels) and set(levels.tolist()) == {step.level}
        assert (frames[columns] >= 0).all()
        assert not ground_truth[levels, frames[columns]].any(), "denoises ground truth"
        assert not known[levels, frames[columns]].any(), "denoises a cell twice"
        known[levels, frames[columns]] = True
    assert known[0, context:total].all(), "a finest frame was never produced"


def assert_every_step_needed(schedule: Schedule, plan, context: int, total: int) -> None:
    """Each planned step makes a wanted finest frame or a cell that a later planned step reads."""
    read = set()
    for step in reversed(plan):
        made = {(step.level, int(frame)) for frame in step.denoised_frames}
        makes_wanted = step.level == 0 and any(context <= frame < total for _, frame in made)
        assert makes_wanted or made & read, f"chunk {step.chunk} step {step.index} is not needed"
        for level, column in zip(*np.nonzero(step.matrix == CONTEXT), strict=True):
            frame = int(step.frames[column])
            read.add((int(level), frame))
            if schedule.coarse_context_from_finest:
                read.add((0, frame))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_plan_invariants_over_many_lengths(name):
    schedule = SCHEDULES[name]
    for context in (0, 1, 5, 21, 64):
        for generated in (0, 1, 17, 90):
            total = context + generated
            plan = plan_rollout(schedule, context, total)
            replay(schedule, plan, context, total)
            assert_every_step_needed(schedule, plan, context, total)
            assert all(step.matrix.shape == (schedule.levels, schedule.span) for step in plan)
            touched = [int(step.frames[(step.matrix != UNSEEN).any(axis=0)].max()) for step in plan]
            assert frames_needed(plan) == (max(touched) + 1 if plan else 0)
            assert frames_needed(plan) >= total or generated == 0
            finest_window = (
                schedule.stride
                if schedule.kind != "millivid"
                else int((schedule.steps[-1] == DENOISED).sum())
            )
            assert sum(step.level == 0 for step in plan) == math.ceil(generated / finest_window)


@pytest.mark.parametrize(
    ("windows", "budget", "finest_calls", "calls", "chunks", "needed"),
    [
        # the paper's evaluation: 256 context frames, rollout to 1024: 4 chunks of 192 new frames,
        # every level of a chunk's frames finished inside it, so nothing is generated past 1024
        ((3, 12, 48, 192), 768, 256, 4 * 85, 4, 1024),
        ((1, 4, 16, 64), 256, 768, 12 * 85, 12, 1024),
    ],
)
def test_paper_evaluation_plan(windows, budget, finest_calls, calls, chunks, needed):
    schedule = build_schedule(
        MilliVidScheduleConfig(windows=windows, extra_budget=budget), PAPER_TOKENS
    )
    plan = plan_rollout(schedule, 256, 1024)
    replay(schedule, plan, 256, 1024)
    assert_every_step_needed(schedule, plan, 256, 1024)
    summary = describe_plan(schedule, plan, 256, 1024)
    assert summary["model_calls_per_level"][0] == finest_calls
    assert (summary["model_calls"], summary["chunks"], summary["frames_needed"]) == (
        calls,
        chunks,
        needed,
    )
    tokens = schedule.tokens_per_step
    assert all(tokens[step.index] == schedule.max_tokens for step in plan)
    first_chunk = [step for step in plan if step.chunk == 0]
    assert [step.index for step in first_chunk] == list(range(len(schedule.steps))), (
        "the first chunk starts right after the context: every step makes new frames"
    )
    assert first_chunk[0].denoised_frames.tolist() == list(range(256, 256 + windows[-1]))


def test_plans_of_the_paper_baselines():
    full_res = build_schedule(FullResScheduleConfig(frames=14), PAPER_TOKENS)
    plan = plan_rollout(full_res, 256, 1024)
    replay(full_res, plan, 256, 1024)
    assert len(plan) == 110 and plan[0].denoised_frames.tolist() == list(range(256, 263))
    assert frames_needed(plan) == 1026
    framepack = build_schedule(FramePackScheduleConfig(), PAPER_TOKENS)
    plan = plan_rollout(framepack, 256, 1024)
    replay(framepack, plan, 256, 1024)
    assert len(plan) == 256 and frames_needed(plan) == 1024
    assert (
        plan[0].frames[0] == 1 and plan[0].matrix[3, 0] == CONTEXT
    )  # the oldest coarse context frame


def test_negative_frames_are_dropped_and_never_gathered():
    schedule = SCHEDULES["millivid-1-4-16"]
    plan = plan_rollout(schedule, 3, 40)
    early = [step for step in plan if (step.frames < 0).any()]
    for step in early:
        assert not step.matrix[:, step.frames < 0].any()
        assert np.array_equal(
            step.matrix[:, step.frames >= 0], schedule.steps[step.index][:, step.frames >= 0]
        )
    assert any((step.matrix != schedule.steps[step.index]).any() for step in early), (
        "a short context drops some cells"
    )


def test_plan_is_deterministic_and_empty_without_frames_to_make():
    schedule = SCHEDULES["millivid-1-4-16"]
    first, second = plan_rollout(schedule, 10, 50), plan_rollout(schedule, 10, 50)
    assert [(s.chunk, s.index) for s in first] == [(s.chunk, s.index) for s in second]
    assert plan_rollout(schedule, 10, 10) == [] and frames_needed([]) == 0


@pytest.mark.parametrize(("context", "total"), [(-1, 5), (6, 5)])
def test_bad_lengths(context, total):
    with pytest.raises(ScheduleError, match="context_frames"):
        plan_rollout(SCHEDULES["full_res-2"], context, total)


def test_a_step_straddling_ground_truth_is_refused():
    # level 1 is denoised two frames at a time, one of which is still ground truth in the first chunk
    steps = [
        np.array([[CONTEXT, CONTEXT, DENOISED, DENOISED], [UNSEEN] * 4]),
        np.array([[UNSEEN] * 4, [CONTEXT, DENOISED, DENOISED, UNSEEN]]),
    ]
    schedule = Schedule("straddle", "custom", (4, 1), steps, stride=2)
    with pytest.raises(
        ScheduleError, match="chunk 0 step 1 would denoise frames that are already known"
    ):
        plan_rollout(schedule, 4, 10)
