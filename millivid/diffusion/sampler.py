"""Deterministic DDIM sampling (eta = 0) of the DENOISED tokens of one step, with optional
classifier-free guidance; the CONTEXT tokens stay exactly as gathered throughout.

Noise: each rollout draws the starting noise of a planned step from its own generator seeded by
(rollout seed, chunk, step index), so a rollout is reproducible and does not depend on which other
rollouts share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch
from einops import rearrange

from millivid.diffusion.config import SamplerConfig
from millivid.diffusion.noise import ddim_step, time_grid
from millivid.diffusion.tokens import NULL_ACTION, StepTokens, concat
from millivid.schema import Precision
from millivid.training import autocast


def step_seed(seed: int, chunk: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, chunk, index]).generate_state(1, np.uint64)[0])


def step_noise(seeds: Sequence[int], chunk: int, index: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(b *shape) standard normal noise, row i drawn from (seeds[i], chunk, index) alone."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(step_seed(seed, chunk, index))) for seed in seeds]
    return torch.stack(rows).to(device)


@torch.no_grad()
def denoise(model: torch.nn.Module, tokens: StepTokens, noise: torch.Tensor, config: SamplerConfig, precision: Precision = "bf16") -> torch.Tensor:
    """Sample the DENOISED tokens of a step from `noise` (b m c); returns the clean latents (b m c).

    Every example of `tokens` must have the same m DENOISED tokens (a rollout batch shares its step).
    """
    batch, count, _ = noise.shape
    if tokens.denoised.sum() != batch * count:
        raise ValueError(f"noise has {count} tokens per example, the step denoises {int(tokens.denoised.sum())} in all for {batch} examples")
    where = rearrange(tokens.denoised, "b n -> b n 1")
    z, clean = noise, noise
    for t, s in pairwise(time_grid(config.steps).to(noise.device)):
        latent = tokens.latent.masked_scatter(where, z)  # CONTEXT positions keep their gathered values
        v = guided_velocity(model, tokens.replace(latent=latent), t.expand(batch), config.guidance, precision)
        z, clean = ddim_step(z, rearrange(v[tokens.denoised], "(b m) c -> b m c", b=batch), t, s)
    return clean


def guided_velocity(model: torch.nn.Module, tokens: StepTokens, t: torch.Tensor, guidance: float, precision: Precision) -> torch.Tensor:
    """v (b n c) in fp32; with guidance != 1, v_null + guidance * (v_action - v_null) from one doubled batch."""
    device = tokens.latent.device
    if guidance == 1.0:
        with autocast(device, precision):
            return model(tokens, t).float()
    unconditioned = tokens.replace(action=torch.full_like(tokens.action, NULL_ACTION))
    with autocast(device, precision):
        conditioned, null = model(concat([tokens, unconditioned]), torch.cat([t, t])).float().chunk(2)
    return null + guidance * (conditioned - null)
