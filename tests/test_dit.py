"""The diffusion transformer: order-free tokens with explicit positions, padding, conditioning, kernels."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from toys import CHANNELS, MILLIVID, TOKENS

from millivid.diffusion.config import DiTConfig
from millivid.diffusion.dit import DiT, build_dit, parameter_count
from millivid.diffusion.schedule import UNSEEN, build_schedule
from millivid.diffusion.schedules import FramePackScheduleConfig
from millivid.diffusion.tokens import NULL_ACTION, StepTokens, concat, gather, step_layout

CONFIG = DiTConfig(width=32, depth=2, heads=2)


def randomised(model: DiT, seed: int = 0) -> DiT:
    """Break adaLN-Zero's all-zero start so that every input can reach the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def step_tokens_of(schedule, index=0, batch=2, seed=0, matrix=None) -> StepTokens:
    generator = torch.Generator().manual_seed(seed)
    latents = [torch.randn(batch, schedule.span, n, CHANNELS, generator=generator) for n in TOKENS]
    actions = torch.randint(0, 3, (batch, schedule.span), generator=generator)
    matrix = schedule.steps[index] if matrix is None else matrix
    return gather(latents, actions, np.arange(schedule.span), step_layout(matrix, TOKENS, schedule.context_source))


def permuted(tokens: StepTokens, order: torch.Tensor) -> StepTokens:
    fields = {name: getattr(tokens, name)[:, order] for name in ("latent", "kind", "level", "frame", "row", "col", "action", "denoised", "valid")}
    return StepTokens(kernel=tokens.kernel, **fields)


def test_output_shape_and_zero_at_init():
    tokens = step_tokens_of(MILLIVID)
    model = build_dit(CONFIG, CHANNELS, TOKENS)
    out = model(tokens, torch.rand(2))
    assert out.shape == tokens.latent.shape
    assert (out == 0).all()  # adaLN-Zero: blocks and head start silent
    assert parameter_count(model) > 0


def test_token_order_does_not_matter_positions_are_explicit():
    tokens = step_tokens_of(MILLIVID, index=2)
    model = randomised(build_dit(CONFIG, CHANNELS, TOKENS))
    order = torch.randperm(tokens.latent.shape[1], generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.3, 0.8])
    assert torch.allclose(model(permuted(tokens, order), t), model(tokens, t)[:, order], atol=1e-5)
    moved = tokens.replace(row=tokens.row + 1.0)  # positions do matter
    assert not torch.allclose(model(moved, t), model(tokens, t), atol=1e-3)


def test_padding_is_invisible_to_the_valid_tokens():
    model = randomised(build_dit(CONFIG, CHANNELS, TOKENS))
    full = step_tokens_of(MILLIVID, batch=1, seed=1)
    short_matrix = np.where(np.arange(MILLIVID.span) < 6, UNSEEN, MILLIVID.steps[0])
    short = step_tokens_of(MILLIVID, batch=1, seed=2, matrix=short_matrix)
    t = torch.tensor([0.5])
    padded = concat([full, short])
    assert padded.padded
    out = model(padded, torch.tensor([0.5, 0.5]))
    n = short.latent.shape[1]
    assert torch.allclose(out[1, :n], model(short, t)[0], atol=1e-5)
    assert torch.allclose(out[0], model(full, t)[0], atol=1e-5)


def test_context_tokens_are_clean_whatever_t_and_actions_condition():
    model = randomised(build_dit(CONFIG, CHANNELS, TOKENS))
    tokens = step_tokens_of(MILLIVID)
    early, late = model.condition(tokens, torch.zeros(2)), model.condition(tokens, torch.ones(2))
    context = ~tokens.denoised
    assert torch.equal(early[context], late[context])
    assert not torch.allclose(early[tokens.denoised], late[tokens.denoised])
    null = tokens.replace(action=torch.full_like(tokens.action, NULL_ACTION))
    assert not torch.allclose(model(null, torch.ones(2) * 0.5), model(tokens, torch.ones(2) * 0.5))


def test_kernel_projection_starts_as_the_projection_of_the_block_mean():
    model = build_dit(CONFIG, CHANNELS, TOKENS, context_source="kernel")
    block = torch.randn(5, 4, CHANNELS)  # 5 level-1 tokens, each a 2x2 block of finest latents
    as_kernel = model.kernel_in["1"](block.flatten(1))
    assert torch.allclose(as_kernel, model.latent_in(block.mean(1)), atol=1e-5)
    assert model.kernel_in["2"].in_features == CHANNELS * 16


def test_kernel_tokens_need_a_kernel_model():
    schedule = build_schedule(FramePackScheduleConfig(denoised=1, context=(1, 2, 4), context_source="kernel"), TOKENS)
    tokens = step_tokens_of(schedule)
    assert randomised(build_dit(CONFIG, CHANNELS, TOKENS, "kernel"))(tokens, torch.rand(2)).isfinite().all()
    with pytest.raises(ValueError, match="kernel_context"):
        build_dit(CONFIG, CHANNELS, TOKENS)(tokens, torch.rand(2))


def test_bf16_autocast_tracks_fp32():
    model = randomised(build_dit(CONFIG, CHANNELS, TOKENS))
    tokens, t = step_tokens_of(MILLIVID), torch.rand(2)
    exact = model(tokens, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(tokens, t).float()
    assert (fast - exact).norm() / exact.norm() < 0.05


def test_width_must_split_into_heads():
    with pytest.raises(ValidationError, match="not divisible by heads"):
        DiTConfig(width=30, heads=4)


def test_rollout_model_file_round_trip_and_retired_format(tmp_path):
    import io

    from millivid.diffusion.checkpoint import (
        RolloutModelInfo,
        load_rollout_model,
        save_rollout_model,
    )

    info = RolloutModelInfo(method="millivid", schedule_config={"kind": "millivid", "windows": [1, 4, 16], "extra_budget": 4},
                            model=DiTConfig(width=16, depth=1, heads=2), tokens_per_level=TOKENS, channels=CHANNELS,
                            autoencoder_uri="ae", latents_uri="latents", dataset_uri="data")
    model = build_dit(info.model, CHANNELS, TOKENS)
    uri = str(tmp_path / "model.pt")
    save_rollout_model(model, info, uri)
    loaded, loaded_info = load_rollout_model(uri)
    assert loaded_info == info and loaded_info.schedule().reach.overall == 5 + 4
    old = tmp_path / "old.pt"
    buffer = io.BytesIO()
    torch.save({"format": "millivid-rollout-model/1", "info": info.model_dump(mode="json"), "state_dict": model.state_dict()}, buffer)
    old.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="retired format.*retrain"):
        load_rollout_model(str(old))
