"""The rollout sampler's guarantees (the issue's acceptance criteria), on a tiny randomised model.

fp32 throughout, so that "unchanged" can mean bit-identical.
"""

import numpy as np
import pytest
import torch
from einops import rearrange
from toys import CHANNELS, METHODS, TOKENS

from millivid.diffusion.config import DiTConfig, SamplerConfig
from millivid.diffusion.dit import build_dit
from millivid.diffusion.rollout import LatentBuffers, extend_actions, rollout, sample_step
from millivid.diffusion.sampler import denoise, step_noise
from millivid.diffusion.schedule import CONTEXT, build_schedule, plan_rollout
from millivid.diffusion.tokens import step_layout

SAMPLER = SamplerConfig(steps=3, batch_size=4)


def pooled_levels(finest: torch.Tensor) -> list[torch.Tensor]:
    """A stand-in autoencoder re-encoding: coarser levels are the mean-pooled finest latents."""
    grid = rearrange(finest, "b (h w) c -> b c h w", h=4)
    return [rearrange(torch.nn.functional.avg_pool2d(grid, 2**level), "b c h w -> b (h w) c") for level in range(3)]


def setup(name: str, batch: int = 2, known: int = 10, seed: int = 0):
    schedule = build_schedule(METHODS[name], TOKENS, name)
    torch.manual_seed(seed)
    model = build_dit(DiTConfig(width=32, depth=1, heads=2), CHANNELS, TOKENS, schedule.context_source)
    with torch.no_grad():
        for parameter in model.parameters():  # leave adaLN-Zero's silent start: every input must reach the output
            parameter.normal_(0, 0.2)
    generator = torch.Generator().manual_seed(seed + 1)
    context = pooled_levels(torch.rand(batch * known, TOKENS[0], CHANNELS, generator=generator) * 2 - 1)
    context = [rearrange(level, "(b t) n c -> b t n c", b=batch) for level in context]
    actions = torch.randint(0, 3, (batch, known + 8), generator=generator)
    return schedule, model.eval(), context, actions


def run(name, total=16, seeds=0, sampler=SAMPLER, batch=2, **overrides):
    schedule, model, context, actions = setup(name, batch)
    kwargs = {"reencode": pooled_levels, "precision": "fp32"} | overrides
    return rollout(model, schedule, context, actions, total, sampler, seeds, **kwargs), context


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN included (cells never produced stay NaN)."""
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def step_outputs(model, buffers, planned, layout):
    tokens = buffers.tokens(planned, layout)
    noise = step_noise([0, 1], planned.chunk, planned.index, (int(layout.denoised.sum()), CHANNELS), torch.device("cpu"))
    return denoise(model, tokens, noise, SAMPLER, "fp32")


@pytest.mark.parametrize("name", METHODS)
def test_denoised_tokens_never_attend_to_unseen_cells(name):
    """Every latent a step does not gather as CONTEXT is set to NaN: the step's output is unchanged."""
    schedule, model, context, actions = setup(name)
    plan = plan_rollout(schedule, 10, 16)
    planned = plan[len(plan) // 2]
    length = int(planned.frames.max()) + 1
    whole = [torch.randn(2, length, n, CHANNELS, generator=torch.Generator().manual_seed(3)) for n in TOKENS]
    buffers = LatentBuffers(schedule, whole, actions, length, pooled_levels)  # everything known: no check stands in the way
    layout = step_layout(planned.matrix, TOKENS, schedule.context_source)
    before = step_outputs(model, buffers, planned, layout)

    read = np.zeros((schedule.levels, length), dtype=bool)
    for segment in layout.segments:
        frames = planned.frames[segment.columns[~segment.denoised]]
        read[0 if segment.kernel else segment.level, frames] = True
    for level, buffer in enumerate(buffers.latents):
        buffer[:, torch.as_tensor(~read[level])] = torch.nan  # UNSEEN cells, frames outside the step, DENOISED cells
    assert torch.equal(step_outputs(model, buffers, planned, layout), before)

    level, frame = np.argwhere(read)[0]
    buffers.latents[level][:, frame] += 1  # a CONTEXT cell does reach the output
    assert not torch.allclose(step_outputs(model, buffers, planned, layout), before)


@pytest.mark.parametrize("name", METHODS)
def test_context_cells_never_change_and_only_denoised_cells_are_written(name):
    schedule, model, context, actions = setup(name)
    plan = plan_rollout(schedule, 10, 16)
    buffers = LatentBuffers(schedule, context, actions, max(16, max(int(p.frames.max()) + 1 for p in plan)), pooled_levels)
    for planned in plan:
        layout = step_layout(planned.matrix, TOKENS, schedule.context_source)
        before = [buffer.clone() for buffer in buffers.latents]
        known = buffers.known.copy()
        sample_step(model, buffers, planned, layout, SAMPLER, [0, 1], "fp32")
        for level in range(schedule.levels):
            context_frames = planned.frames[planned.matrix[level] == CONTEXT]
            assert same_bits(buffers.latents[level][:, context_frames], before[level][:, context_frames])
            assert same_bits(buffers.latents[level][:, torch.as_tensor(known[level])], before[level][:, torch.as_tensor(known[level])])
        written = buffers.known & ~known
        assert written[planned.level, planned.denoised_frames].all()
        assert written[planned.level].sum() == len(planned.denoised_frames)


@pytest.mark.parametrize("name", METHODS)
def test_rollout_keeps_ground_truth_context_bit_identical_and_makes_every_finest_frame(name):
    result, context = run(name, total=17)
    for level, given in enumerate(context):
        assert torch.equal(result.latents[level][:, :10], given)
    assert result.produced[0].all()
    assert result.latents[0].shape == (2, 17, 16, CHANNELS) and result.latents[0].isfinite().all()
    assert (result.latents[0][:, 10:].abs() <= 1).all()


def test_millivid_produces_every_level_of_every_frame():
    result, _ = run("millivid", total=18)
    assert result.produced.all() and all(latent.isfinite().all() for latent in result.latents)


@pytest.mark.parametrize("name", ["millivid", "framepack"])
def test_same_seed_same_rollout_and_batch_split_does_not_matter(name):
    together, _ = run(name, seeds=[5, 9])
    again, _ = run(name, seeds=[5, 9])
    assert torch.equal(together.latents[0], again.latents[0])
    one_at_a_time, _ = run(name, seeds=[5, 9], sampler=SAMPLER.model_copy(update={"batch_size": 1}))
    assert torch.allclose(together.latents[0], one_at_a_time.latents[0], atol=1e-5)
    schedule, model, context, actions = setup(name)
    second_alone = rollout(model, schedule, [c[1:] for c in context], actions[1:], 16, SAMPLER, [9], reencode=pooled_levels, precision="fp32")
    assert torch.allclose(together.latents[0][1:], second_alone.latents[0], atol=1e-5)
    other_seed, _ = run(name, seeds=[6, 9])
    assert not torch.allclose(other_seed.latents[0][0, 10:], together.latents[0][0, 10:])


def test_guidance_and_bf16_change_the_numbers_not_the_guarantees():
    plain, context = run("full_res")
    guided, _ = run("full_res", sampler=SAMPLER.model_copy(update={"guidance": 3.0}))
    fast, _ = run("full_res", precision="bf16")
    assert not torch.allclose(plain.latents[0], guided.latents[0])
    for result in (guided, fast):
        assert torch.equal(result.latents[0][:, :10], context[0]) and result.latents[0].isfinite().all()


def test_decode_turns_finest_latents_into_frames():
    def decode(latent, level):
        assert level == 0
        return rearrange(latent[..., :3], "b (h w) c -> b c h w", h=4) * 0.5 + 0.5

    result, _ = run("full_res", total=13, decode=decode)
    assert result.frames.shape == (2, 13, 3, 4, 4)
    assert torch.equal(result.frames[:, 12], decode(result.latents[0][:, 12], 0))


def test_actions_beyond_the_given_ones_repeat_the_last():
    actions = torch.tensor([[0, 1, 2], [2, 2, 1]])
    assert extend_actions(actions, 5).tolist() == [[0, 1, 2, 2, 2], [2, 2, 1, 1, 1]]
    assert extend_actions(actions, 2).tolist() == [[0, 1], [2, 2]]
    with pytest.raises(ValueError, match="0..2"):
        extend_actions(torch.tensor([[0, 3]]), 4)


def test_clear_errors_for_bad_inputs():
    schedule, model, context, actions = setup("framepack")
    with pytest.raises(ValueError, match="reencode"):
        rollout(model, schedule, context, actions, 16, SAMPLER, precision="fp32")
    with pytest.raises(ValueError, match="context level 1"):
        rollout(model, schedule, [context[0], context[1][:, :, :2], context[2]], actions, 16, SAMPLER)
    with pytest.raises(ValueError, match="3 levels"):
        rollout(model, schedule, context[:2], actions, 16, SAMPLER)
    with pytest.raises(ValueError, match="seeds"):
        rollout(model, schedule, context, actions, 16, SAMPLER, seeds=[1, 2, 3])
