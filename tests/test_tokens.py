"""Gathering the tokens of a step: only CONTEXT/DENOISED cells, right values, common coordinates."""

import numpy as np
import pytest
import torch
from einops import rearrange

from millivid.diffusion.schedule import CONTEXT, DENOISED, UNSEEN, build_schedule, step_tokens
from millivid.diffusion.schedules import (
    FramePackScheduleConfig,
    FullResScheduleConfig,
    MilliVidScheduleConfig,
)
from millivid.diffusion.tokens import concat, gather, kernel_tokens, step_layout

TOKENS = (64, 16, 4)  # the cpu preset: 32x32 frames, 4x4 patches, 3 levels
CONFIGS = {
    "millivid": MilliVidScheduleConfig(windows=(1, 4, 16), extra_budget=64),
    "full_res": FullResScheduleConfig(frames=4),
    "framepack": FramePackScheduleConfig(denoised=1, context=(1, 4, 16)),
    "framepack_kernel": FramePackScheduleConfig(denoised=1, context=(1, 4, 16), context_source="kernel"),
}


def random_buffers(frames: int, batch: int = 2, channels: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = [torch.randn(batch, frames, n, channels, generator=generator) for n in TOKENS]
    actions = torch.randint(0, 3, (batch, frames), generator=generator)
    return latents, actions


@pytest.mark.parametrize("name", CONFIGS)
def test_layout_gathers_exactly_the_context_and_denoised_cells(name):
    schedule = build_schedule(CONFIGS[name], TOKENS)
    for step in schedule.steps:
        layout = step_layout(step, TOKENS, schedule.context_source)
        assert layout.tokens == step_tokens(step, TOKENS)
        gathered = np.zeros_like(step, dtype=bool)
        for segment in layout.segments:
            assert (step[segment.level, segment.columns] != UNSEEN).all()
            gathered[segment.level, segment.columns] = True
        assert (gathered == (step != UNSEEN)).all()
        denoised_cells = (step == DENOISED).sum() * TOKENS[int(np.flatnonzero((step == DENOISED).any(1))[0])]
        assert layout.denoised.sum() == denoised_cells


def test_gathered_values_and_actions_come_from_the_cells_frames():
    schedule = build_schedule(CONFIGS["millivid"], TOKENS)
    step = schedule.steps[3]
    layout = step_layout(step, TOKENS)
    latents, actions = random_buffers(100)
    frames = np.arange(schedule.span) + 40
    tokens = gather(latents, actions, frames, layout)
    assert tokens.latent.shape == (2, layout.tokens, 3) and tokens.valid.all()
    position = 0
    for segment in layout.segments:
        n = TOKENS[segment.level]
        for column in segment.columns:
            frame = frames[column]
            assert torch.equal(tokens.latent[:, position : position + n], latents[segment.level][:, frame])
            assert (tokens.action[:, position : position + n] == actions[:, frame : frame + 1]).all()
            assert (tokens.frame[:, position : position + n] == column).all()
            assert bool(tokens.denoised[0, position]) == (step[segment.level, column] == DENOISED)
            position += n
    assert position == layout.tokens


def test_levels_share_one_coordinate_frame():
    """A coarse token sits at the centre of the four finer tokens it covers."""
    step = np.array([[CONTEXT], [CONTEXT], [DENOISED]], dtype=np.int8)
    layout = step_layout(step, TOKENS)
    level0 = np.stack([layout.row, layout.col], 1)[layout.level == 0].reshape(8, 8, 2)
    level1 = np.stack([layout.row, layout.col], 1)[layout.level == 1].reshape(4, 4, 2)
    level2 = np.stack([layout.row, layout.col], 1)[layout.level == 2].reshape(2, 2, 2)
    assert np.allclose(rearrange(level0, "(h a) (w b) two -> h w two a b", a=2, b=2).mean((-1, -2)), level1)
    assert np.allclose(rearrange(level1, "(h a) (w b) two -> h w two a b", a=2, b=2).mean((-1, -2)), level2)


def test_kernel_context_uses_finest_latents_in_blocks():
    schedule = build_schedule(CONFIGS["framepack_kernel"], TOKENS)
    layout = step_layout(schedule.steps[0], TOKENS, "kernel")
    latents, actions = random_buffers(schedule.span)
    tokens = gather(latents, actions, np.arange(schedule.span), layout)
    assert sorted(tokens.kernel) == [1, 2]
    assert tokens.kernel[1].shape == (2 * 4 * 16, 3 * 4) and tokens.kernel[2].shape == (2 * 16 * 4, 3 * 16)
    assert (tokens.kind == 1).sum() == 2 * 4 * 16 and (tokens.latent[tokens.kind > 0] == 0).all()
    block = kernel_tokens(latents[0][:, :1], side=4)[0, 5]  # level-1 token (row 1, col 1) of frame 0
    finest = rearrange(latents[0][0, 0], "(h w) c -> h w c", h=8)
    assert torch.equal(block, rearrange(finest[2:4, 2:4], "kh kw c -> (kh kw c)"))


def test_concat_pads_shorter_steps_and_marks_padding_invalid():
    schedule = build_schedule(CONFIGS["millivid"], TOKENS)
    latents, actions = random_buffers(schedule.span, batch=1)
    columns = np.arange(schedule.span)
    long_step = gather(latents, actions, columns, step_layout(schedule.steps[0], TOKENS))
    short_matrix = np.where(columns < 10, UNSEEN, schedule.steps[0])
    short_step = gather(latents, actions, columns, step_layout(short_matrix, TOKENS))
    both = concat([long_step, short_step])
    n = long_step.valid.shape[1]
    assert both.latent.shape == (2, n, 3) and both.padded
    assert both.valid[0].all() and both.valid[1].sum() == short_step.valid.shape[1]
    assert not both.denoised[1, ~both.valid[1]].any()


def test_gather_refuses_frames_outside_the_buffers():
    schedule = build_schedule(CONFIGS["full_res"], TOKENS)
    latents, actions = random_buffers(4)
    with pytest.raises(ValueError, match="outside 0..3"):
        gather(latents, actions, np.arange(schedule.span) + 2, step_layout(schedule.steps[0], TOKENS))
    with pytest.raises(ValueError, match="levels=3"):
        step_layout(np.zeros((2, 4), dtype=np.int8), TOKENS)
    with pytest.raises(ValueError, match="square"):
        step_layout(schedule.steps[0], (60, 16, 4))
