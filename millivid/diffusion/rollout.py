"""Roll a schedule out from ground-truth context frames to any length, chunk after chunk.

Per-level latent buffers hold every frame the plan touches (NaN until known). Each planned step
gathers its CONTEXT tokens from the buffers, samples its DENOISED tokens from noise and writes
only those back: context latents are never changed. For FramePack with hierarchical context, a
generated frame's coarse levels are re-encoded from its finest latents as soon as it is written
(`reencode`, e.g. the autoencoder's encode of its decode). Frames past the given actions (the
plan's look-ahead) repeat the last action.

    result = rollout(model, schedule, context, actions, total_frames=64, config=sampler, decode=ae.decode)
    result.latents[0]   # (b 64 n0 c) finest latents of every frame
    result.frames       # (b 64 3 h w) decoded, when `decode` is given
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange, repeat
from tqdm.auto import tqdm

from millivid.diffusion.config import SamplerConfig
from millivid.diffusion.sampler import denoise, step_noise
from millivid.diffusion.schedule import PlannedStep, Schedule, frames_needed, plan_rollout
from millivid.diffusion.tokens import NUM_ACTIONS, StepTokens, TokenLayout, gather, step_layout
from millivid.schema import Precision

Decode = Callable[[torch.Tensor, int], torch.Tensor]  # (b n_l c), level -> (b 3 h w)
Reencode = Callable[[torch.Tensor], Sequence[torch.Tensor]]  # finest (b n0 c) -> every level's (b n_l c)


@dataclass
class Rollout:
    latents: tuple[torch.Tensor, ...]  # per level (b T n_l c) float32, NaN where never produced
    produced: np.ndarray  # (levels, T) bool: which (level, frame) latents exist
    frames: torch.Tensor | None = None  # (b T 3 h w) decoded finest frames, when a decoder was given


class LatentBuffers:
    """Latents of every frame of a batch of rollouts, per level, plus which (level, frame) are known."""

    def __init__(self, schedule: Schedule, context: Sequence[torch.Tensor], actions: torch.Tensor, length: int, reencode: Reencode | None = None):
        batch, known_frames = context[0].shape[:2]
        channels = context[0].shape[-1]
        needs_reencode = schedule.coarse_context_from_finest and schedule.context_source == "hierarchical"
        if needs_reencode and reencode is None:
            raise ValueError(f"schedule {schedule.name!r} takes the coarse context of generated frames from their finest latents: pass reencode=")
        self.schedule, self.reencode = schedule, reencode if needs_reencode else None
        self.latents = [torch.full((batch, length, n, channels), torch.nan, device=context[0].device) for n in schedule.tokens_per_level]
        for buffer, given in zip(self.latents, context, strict=True):
            buffer[:, :known_frames] = given
        self.known = np.zeros((schedule.levels, length), dtype=bool)
        self.known[:, :known_frames] = True
        self.actions = extend_actions(actions, length)

    def tokens(self, planned: PlannedStep, layout: TokenLayout) -> StepTokens:
        for segment in layout.segments:
            frames = planned.frames[segment.columns[~segment.denoised]]
            source = 0 if segment.kernel else segment.level
            if not self.known[source, frames].all():
                missing = frames[~self.known[source, frames]].tolist()
                raise RuntimeError(f"chunk {planned.chunk} step {planned.index}: level-{source} latents of frames {missing} are used as context but were never produced")
        return gather(self.latents, self.actions, planned.frames, layout)

    def write(self, planned: PlannedStep, layout: TokenLayout, values: torch.Tensor) -> None:
        """values: (b m c) the step's DENOISED tokens in layout order."""
        segment = layout.denoised_segment
        frames = planned.frames[segment.columns[segment.denoised]]
        self.latents[segment.level][:, frames] = rearrange(values, "b (f n) c -> b f n c", f=len(frames))
        self.known[segment.level, frames] = True
        if segment.level == 0 and self.reencode is not None:
            self.derive_coarse_levels(frames)

    def derive_coarse_levels(self, frames: np.ndarray) -> None:
        """FramePack with hierarchical context: a generated frame's coarse latents come from its finest ones."""
        batch = self.actions.shape[0]
        levels = self.reencode(rearrange(self.latents[0][:, frames], "b f n c -> (b f) n c"))
        for level in range(1, self.schedule.levels):
            self.latents[level][:, frames] = rearrange(levels[level].float(), "(b f) n c -> b f n c", b=batch)
            self.known[level, frames] = True


def extend_actions(actions: torch.Tensor, length: int) -> torch.Tensor:
    """(b A) -> (b length): cut, or extended by repeating the last action (look-ahead past the data)."""
    if actions.ndim != 2 or actions.shape[1] < 1:
        raise ValueError(f"actions must be (b frames) with at least one frame, got shape {tuple(actions.shape)}")
    actions = actions.long()
    if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
        raise ValueError(f"actions must be in 0..{NUM_ACTIONS - 1}, got values {torch.unique(actions).tolist()}")
    missing = max(0, length - actions.shape[1])
    return torch.cat([actions[:, :length], repeat(actions[:, -1:], "b 1 -> b f", f=missing)], dim=1)


@torch.no_grad()
def rollout(
    model: torch.nn.Module,
    schedule: Schedule,
    context: Sequence[torch.Tensor],
    actions: torch.Tensor,
    total_frames: int,
    config: SamplerConfig,
    seeds: int | Sequence[int] = 0,
    *,
    decode: Decode | None = None,
    reencode: Reencode | None = None,
    precision: Precision = "bf16",
    progress: bool = False,
) -> Rollout:
    """Generate frames [t0, total_frames) of b rollouts from their t0 context frames.

    context[l]: (b t0 n_l c) latents of every level; actions: (b A) per frame (see tokens.py for the
    convention), repeated past A; seeds: one per rollout (an int s means s, s+1, ...). Rollouts are
    sampled `config.batch_size` at a time; results do not depend on that split.
    """
    device = next(model.parameters()).device
    context = check_context(schedule, context, getattr(model, "channels", None))
    actions = torch.as_tensor(actions)
    batch, known = context[0].shape[:2]
    seeds = list(range(seeds, seeds + batch)) if isinstance(seeds, int) else list(seeds)
    if len(seeds) != batch or actions.shape[0] != batch:
        raise ValueError(f"{batch} rollouts need {batch} seeds and (b A) actions, got {len(seeds)} seeds and actions {tuple(actions.shape)}")
    plan = plan_rollout(schedule, known, total_frames)
    length = max(total_frames, frames_needed(plan))
    layouts = [step_layout(planned.matrix, schedule.tokens_per_level, schedule.context_source) for planned in plan]
    groups = range(0, batch, config.batch_size)
    bar = tqdm(total=len(plan) * len(groups), desc=f"rollout {schedule.name}", unit="step", disable=not progress)
    parts = []
    for start in groups:
        rows = slice(start, start + config.batch_size)
        buffers = LatentBuffers(schedule, [c[rows].to(device) for c in context], actions[rows].to(device), length, reencode)
        for planned, layout in zip(plan, layouts, strict=True):
            sample_step(model, buffers, planned, layout, config, seeds[rows], precision)
            bar.update()
        parts.append(buffers)
    bar.close()
    latents = tuple(torch.cat([part.latents[level][:, :total_frames] for part in parts]) for level in range(schedule.levels))
    result = Rollout(latents, parts[0].known[:, :total_frames].copy())
    if decode is not None:
        result.frames = decode_frames(decode, latents[0])
    return result


@torch.no_grad()
def sample_step(model: torch.nn.Module, buffers: LatentBuffers, planned: PlannedStep, layout: TokenLayout, config: SamplerConfig, seeds: Sequence[int], precision: Precision = "bf16") -> None:
    """Run one planned step: gather, denoise its DENOISED tokens from fresh noise, write them back."""
    tokens = buffers.tokens(planned, layout)
    count = int(layout.denoised.sum())
    noise = step_noise(seeds, planned.chunk, planned.index, (count, tokens.latent.shape[-1]), tokens.latent.device)
    buffers.write(planned, layout, denoise(model, tokens, noise, config, precision))


def check_context(schedule: Schedule, context: Sequence[torch.Tensor], channels: int | None) -> list[torch.Tensor]:
    context = [torch.as_tensor(c).float() for c in context]
    if len(context) != schedule.levels:
        raise ValueError(f"context: expected latents of {schedule.levels} levels, got {len(context)}")
    head = context[0].shape[:2]
    for level, (latent, tokens) in enumerate(zip(context, schedule.tokens_per_level, strict=True)):
        expected = (*head, tokens, channels or latent.shape[-1])
        if tuple(latent.shape) != expected:
            raise ValueError(f"context level {level}: expected shape (b t0 n_l c) = {expected}, got {tuple(latent.shape)}")
    return context


@torch.no_grad()
def decode_frames(decode: Decode, finest: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """finest: (b T n0 c) -> (b T 3 h w), decoded `chunk` frames at a time."""
    flat = rearrange(finest, "b t n c -> (b t) n c")
    frames = torch.cat([decode(flat[i : i + chunk], 0).float() for i in range(0, len(flat), chunk)])
    return rearrange(frames, "(b t) ... -> b t ...", b=finest.shape[0])
