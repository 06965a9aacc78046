"""Rollout schedules: the paper's numbers, the three families over many parameters, validation."""

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from millivid.config import load_config
from millivid.diffusion.config import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
)
from millivid.diffusion.schedule import (
    CONTEXT,
    DENOISED,
    UNSEEN,
    Schedule,
    ScheduleError,
    budget_warnings,
    build_schedule,
    build_schedules,
    training_step_weights,
)

PAPER_TOKENS = (256, 64, 16, 4)


def millivid(windows, extra_budget, tokens):
    return build_schedule(
        MilliVidScheduleConfig(windows=windows, extra_budget=extra_budget), tokens
    )


def runs(row):
    """[(value, start, stop)] of consecutive equal cells in a matrix row."""
    edges = np.flatnonzero(np.diff(row)) + 1
    starts, stops = np.r_[0, edges], np.r_[edges, len(row)]
    return [(int(row[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def depth_first_levels(levels, ratios):
    """Denoised level of each step of a coarse-to-fine chunk, written out independently."""

    def visit(level):
        return [level] + (
            [] if level == 0 else [x for _ in range(ratios[level - 1]) for x in visit(level - 1)]
        )

    return visit(levels - 1)


@pytest.mark.parametrize(
    ("windows", "budget", "tokens", "steps", "per_step", "span", "stride"),
    [
        ((1, 4, 16, 64), 256, PAPER_TOKENS, 85, 1280, 149, 64),
        ((3, 12, 48, 192), 768, PAPER_TOKENS, 85, 3840, 447, 192),
        ((1, 4, 16), 256, (256, 64, 16), 21, 1024, 37, 16),
        (
            (1, 4, 16, 64),
            64,
            (64, 16, 4, 1),
            85,
            320,
            149,
            64,
        ),  # the CPU-scale experiment in the notes
    ],
)
def test_millivid_paper_numbers(windows, budget, tokens, steps, per_step, span, stride):
    schedule = millivid(windows, budget, tokens)
    assert len(schedule.steps) == steps
    assert schedule.tokens_per_step == [per_step] * steps and schedule.max_tokens == per_step
    assert schedule.span == span == budget // tokens[-1] + sum(windows)
    assert schedule.stride == stride
    assert schedule.describe()["new_frames_per_chunk"] == stride


def test_millivid_step_zero_matches_the_paper():
    step = millivid((1, 4, 16, 64), 256, PAPER_TOKENS).steps[0]
    # 64 coarsest frames denoised given 64 past coarsest, 16 level-2, 4 level-1 and 1 finest recent frames
    assert runs(step[3]) == [(UNSEEN, 0, 21), (CONTEXT, 21, 85), (DENOISED, 85, 149)]
    assert runs(step[2]) == [(UNSEEN, 0, 5), (CONTEXT, 5, 21), (UNSEEN, 21, 149)]
    assert runs(step[1]) == [(UNSEEN, 0, 1), (CONTEXT, 1, 5), (UNSEEN, 5, 149)]
    assert runs(step[0]) == [(CONTEXT, 0, 1), (UNSEEN, 1, 149)]


def test_millivid_refinement_sees_past_and_future_coarse_frames():
    schedule = millivid((1, 4, 16, 64), 256, PAPER_TOKENS)
    level_2 = schedule.steps[1]  # first refinement: level 2 window right after the coarsest one
    assert schedule.denoised_level(1) == 2
    assert runs(level_2[2]) == [
        (UNSEEN, 0, 5),
        (CONTEXT, 5, 21),
        (DENOISED, 21, 37),
        (UNSEEN, 37, 149),
    ]
    assert runs(level_2[3]) == [
        (UNSEEN, 0, 5),
        (CONTEXT, 5, 69),
        (UNSEEN, 69, 149),
    ]  # past 16 and future 48 frames
    finest = schedule.steps[3]
    assert schedule.denoised_level(3) == 0
    assert runs(finest[0]) == [(CONTEXT, 0, 1), (DENOISED, 1, 2), (UNSEEN, 2, 149)]
    assert runs(finest[1]) == [(CONTEXT, 0, 4), (UNSEEN, 4, 149)]


WINDOW_CASES = [
    (levels, first, ratios)
    for levels in range(1, 5)
    for first in (1, 2, 3)
    for ratios in itertools.product((1, 2, 4), repeat=levels - 1)
    if levels < 4 or len(set(ratios)) == 1
]


@pytest.mark.parametrize(("levels", "first", "ratios"), WINDOW_CASES)
def test_millivid_family_properties(levels, first, ratios):
    windows = tuple(int(first * np.prod(ratios[:level])) for level in range(levels))
    for finest, extra_frames in itertools.product((64, 256), (0, 1, 3)):
        tokens = tuple(finest // 4**level for level in range(levels))
        budget = extra_frames * finest
        if levels == 1 and budget == 0:
            with pytest.raises(ScheduleError, match="no context"):
                millivid(windows, budget, tokens)
            continue
        schedule = millivid(windows, budget, tokens)
        extra = [budget // t for t in tokens]
        assert [
            schedule.denoised_level(i) for i in range(len(schedule.steps))
        ] == depth_first_levels(levels, ratios)
        assert schedule.tokens_per_step == [
            budget + sum(w * t for w, t in zip(windows, tokens, strict=True))
        ] * len(schedule.steps)
        assert schedule.stride == windows[-1]
        lagging = [sum(windows[level + 1 :]) for level in range(levels)]
        finer_context = [sum(windows)] if levels > 1 else []
        oldest = max(finer_context + [lag + e for lag, e in zip(lagging, extra, strict=True)])
        assert schedule.span == oldest + windows[-1]
        for index, step in enumerate(schedule.steps):
            level = schedule.denoised_level(index)
            assert (step == DENOISED).sum() == windows[level]
            assert (step[level] == CONTEXT).sum() == extra[level]
            for other in range(levels):
                if other != level:
                    assert (step[other] == CONTEXT).sum() == windows[other]


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("frames", [2, 4, 14, 30])
def test_full_res(levels, frames):
    tokens = tuple(256 // 4**level for level in range(levels))
    schedule = build_schedule(FullResScheduleConfig(frames=frames), tokens)
    half = frames // 2
    assert len(schedule.steps) == 1 and schedule.span == frames and schedule.stride == half
    assert schedule.max_tokens == frames * 256
    step = schedule.steps[0]
    assert runs(step[0]) == [(CONTEXT, 0, half), (DENOISED, half, frames)]
    assert not step[1:].any()


def test_full_res_paper_numbers():
    assert build_schedule(FullResScheduleConfig(frames=14), PAPER_TOKENS).max_tokens == 3584
    assert build_schedule(FullResScheduleConfig(frames=4), PAPER_TOKENS).max_tokens == 1024


@pytest.mark.parametrize("source", ["hierarchical", "kernel"])
def test_framepack_paper_numbers(source):
    schedule = build_schedule(
        FramePackScheduleConfig(denoised=3, context=(3, 12, 48, 192), context_source=source),
        PAPER_TOKENS,
    )
    assert schedule.tokens_per_step == [3840]
    assert schedule.context_source == source and schedule.coarse_context_from_finest
    assert schedule.stride == 3 and schedule.span == 258
    step = schedule.steps[0]
    assert runs(step[0]) == [(UNSEEN, 0, 252), (CONTEXT, 252, 255), (DENOISED, 255, 258)]
    assert runs(step[1]) == [(UNSEEN, 0, 240), (CONTEXT, 240, 252), (UNSEEN, 252, 258)]
    assert runs(step[2]) == [(UNSEEN, 0, 192), (CONTEXT, 192, 240), (UNSEEN, 240, 258)]
    assert runs(step[3]) == [(CONTEXT, 0, 192), (UNSEEN, 192, 258)]


@pytest.mark.parametrize("denoised", [1, 2, 3])
@pytest.mark.parametrize("context", [(1,), (0, 4), (2, 0, 8), (1, 4, 16), (3, 3, 3, 3)])
def test_framepack_family_properties(denoised, context):
    tokens = tuple(64 // 4**level for level in range(len(context)))
    schedule = build_schedule(FramePackScheduleConfig(denoised=denoised, context=context), tokens)
    step = schedule.steps[0]
    assert schedule.max_tokens == denoised * tokens[0] + sum(
        c * t for c, t in zip(context, tokens, strict=True)
    )
    assert schedule.span == denoised + sum(context) and schedule.stride == denoised
    columns_by_level = [np.flatnonzero(step[level] == CONTEXT) for level in range(len(context))]
    assert [len(columns) for columns in columns_by_level] == list(context)
    used = [columns for columns in columns_by_level if len(columns)]
    assert all(
        finer.min() > coarser.max()
        for coarser, finer in zip(used[::-1], used[::-1][1:], strict=False)
    )
    assert np.array_equal(
        np.flatnonzero(step[0] == DENOISED), np.arange(sum(context), schedule.span)
    )


def test_schedule_matrices_are_read_only_int8():
    schedule = millivid((1, 4, 16), 64, (64, 16, 4))
    for step in schedule.steps:
        assert step.dtype == np.int8 and step.shape == (3, 37)
        with pytest.raises(ValueError):
            step[0, 0] = DENOISED


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: MilliVidScheduleConfig(windows=(1, 3, 16)), "windows"),
        (lambda: MilliVidScheduleConfig(windows=(4, 2)), "windows"),
        (lambda: MilliVidScheduleConfig(windows=(0, 4)), "windows"),
        (lambda: MilliVidScheduleConfig(windows=()), "windows"),
        (lambda: MilliVidScheduleConfig(extra_budget=-1), "extra_budget"),
        (lambda: FullResScheduleConfig(frames=7), "frames"),
        (lambda: FramePackScheduleConfig(context=(3, -1)), "context"),
        (lambda: FramePackScheduleConfig(denoised=0), "denoised"),
    ],
)
def test_bad_schedule_configs_name_the_field(make, field):
    with pytest.raises(ValidationError) as info:
        make()
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("config", "tokens", "field"),
    [
        (
            MilliVidScheduleConfig(windows=(1, 4, 16, 64), extra_budget=100),
            PAPER_TOKENS,
            "extra_budget",
        ),
        (
            MilliVidScheduleConfig(windows=(1, 4, 16, 64), extra_budget=258),
            PAPER_TOKENS,
            "extra_budget",
        ),
        (MilliVidScheduleConfig(windows=(1, 4, 16)), PAPER_TOKENS, "windows"),
        (FramePackScheduleConfig(context=(3, 12, 48)), PAPER_TOKENS, "context"),
        (FullResScheduleConfig(), (), "tokens_per_level"),
        (FullResScheduleConfig(), (256, 0), "tokens_per_level"),
    ],
)
def test_configs_that_do_not_fit_the_geometry(config, tokens, field):
    with pytest.raises(ScheduleError, match=field):
        build_schedule(config, tokens)


def hand_built(steps, stride, **fields):
    return Schedule(
        name="hand",
        kind="custom",
        tokens_per_level=fields.pop("tokens", (4, 1)),
        steps=steps,
        stride=stride,
        **fields,
    )


C, D, U = CONTEXT, DENOISED, UNSEEN


@pytest.mark.parametrize(
    ("steps", "stride", "fields", "message"),
    [
        ([[[C, D]]], 1, {"tokens": (4,)}, None),  # the smallest valid schedule
        ([[[C, D], [U, D]]], 1, {}, "exactly one level"),
        ([[[C, C], [U, U]]], 1, {}, "exactly one level"),
        ([[[C, D, D]]], 1, {"tokens": (4,)}, "exactly once"),
        ([[[C, D, D]]], 3, {"tokens": (4,)}, "exactly once"),
        ([[[D, C]]], 1, {"tokens": (4,)}, "before any step has produced it"),
        (
            [[[C, D], [U, U]], [[U, U], [C, D]]],
            1,
            {},
            None,
        ),  # level 1 context from the previous chunk
        (
            [[[C, D], [U, C]], [[U, U], [C, D]]],
            1,
            {},
            "before any step has produced it",
        ),  # ... from a later step
        ([[[C, D], [C, U]]], 1, {}, "no step denoises it"),
        (
            [[[C, D], [C, U]]],
            1,
            {"coarse_context_from_finest": True},
            None,
        ),  # FramePack-style derived coarse context
        ([[[U, U], [C, D]]], 1, {}, "finest level"),
        ([[[C, 3]]], 1, {"tokens": (4,)}, "cells must be"),
        ([[C, D]], 1, {"tokens": (4,)}, "matrix"),
        ([[[C, D]], [[C, D, U]]], 1, {"tokens": (4,)}, "shape"),
        ([[[C, D]]], 1, {}, "shape"),  # 1 row but 2 levels of tokens
        ([[[C, D]]], 0, {"tokens": (4,)}, "stride"),
        ([[[C, D]]], 1, {"tokens": (4,), "context_source": "pixels"}, "context_source"),
        ([[[U, D]]], 1, {"tokens": (4,)}, "no context"),
        ([], 1, {"tokens": (4,)}, "no steps"),
    ],
)
def test_validation_names_the_problem(steps, stride, fields, message):
    if message is None:
        assert hand_built([np.array(s) for s in steps], stride, **fields).max_tokens > 0
        return
    with pytest.raises(ScheduleError, match=message):
        hand_built([np.array(s) for s in steps], stride, **fields)


def test_steady_state_allows_context_from_the_same_chunk_only_after_its_step():
    level_1_first = [np.array([[C, C, U], [C, D, U]]), np.array([[C, C, D], [C, C, U]])]
    assert hand_built(level_1_first, 1, tokens=(4, 1)).span == 3
    level_1_late = level_1_first[::-1]
    with pytest.raises(ScheduleError, match="step 0 uses level 1 column 1"):
        hand_built(level_1_late, 1, tokens=(4, 1))


@pytest.mark.parametrize(
    "schedule",
    [
        millivid((1, 4, 16, 64), 256, PAPER_TOKENS),
        millivid((1, 2, 8), 0, (64, 16, 4)),
        build_schedule(FullResScheduleConfig(), PAPER_TOKENS),
        build_schedule(FramePackScheduleConfig(), PAPER_TOKENS),
    ],
    ids=["millivid", "millivid-mixed-ratios", "full_res", "framepack"],
)
def test_training_weights_make_levels_equally_likely(schedule):
    weights = training_step_weights(schedule)
    levels = np.array([schedule.denoised_level(i) for i in range(len(schedule.steps))])
    assert weights.shape == (len(schedule.steps),) and np.isclose(weights.sum(), 1.0)
    per_level = [weights[levels == level].sum() for level in np.unique(levels)]
    assert np.allclose(per_level, 1 / len(per_level))
    for level in np.unique(levels):
        assert np.allclose(weights[levels == level], weights[levels == level][0])


def test_budget_warnings_trigger_above_ten_percent():
    paper = [
        millivid((3, 12, 48, 192), 768, PAPER_TOKENS),
        build_schedule(FullResScheduleConfig(frames=14), PAPER_TOKENS, "full_res"),
        build_schedule(FramePackScheduleConfig(), PAPER_TOKENS, "framepack"),
    ]
    assert budget_warnings(paper) == []  # 3584 vs 3840: 6.7% apart
    small = build_schedule(
        FullResScheduleConfig(frames=12), PAPER_TOKENS, "full_res_12"
    )  # 3072: 20% below
    warnings = budget_warnings([*paper, small])
    assert (
        len(warnings) == 1
        and "full_res_12" in warnings[0]
        and "3072" in warnings[0]
        and "3840" in warnings[0]
    )
    assert budget_warnings([*paper, small], tolerance=0.25) == []
    assert len(budget_warnings(paper, tolerance=0.05)) == 1
    exactly_ten = [
        hand_built([np.array([[C] * 9 + [D]])], 1, tokens=(1,)),
        hand_built([np.array([[C] * 8 + [D]])], 1, tokens=(1,)),
    ]
    assert budget_warnings(exactly_ten) == []
    assert budget_warnings([]) == []


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_presets_build_with_matched_budgets(preset):
    config = load_config(preset)
    schedules = build_schedules(config.diffusion.methods, config.geometry.tokens_per_level)
    assert set(schedules) == set(config.diffusion.methods)
    assert budget_warnings(list(schedules.values())) == []
    for name, schedule in schedules.items():
        assert schedule.name == name and schedule.levels == config.geometry.levels


def test_describe_is_plain_json():
    import json

    description = millivid((1, 4, 16), 256, (256, 64, 16)).describe()
    assert json.loads(json.dumps(description)) == json.loads(
        json.dumps(description, sort_keys=True)
    )
    assert (
        description["steps"] == 21
        and description["chunk_frames"] == 37
        and description["max_tokens_per_step"] == 1024
    )
    assert description["steps_per_level"] == {0: 16, 1: 4, 2: 1}
