"""A trained diffusion model with a rollout schedule, as a rollout function of the comparison.

    method = DiffusionMethod(model, schedule, cfg.diffusion.sampler, decode=autoencoder.decode,
                             reencode=autoencoder.reencode)
    evaluate_methods(examples, {"millivid": method}, references, data, cfg)

It rolls out from the context latents of every level (EvalData.latents must be given) with the
ground-truth actions and the examples' seeds, decodes the generated finest latents, and returns
them as a Generated with every level's generated latents and which context frames its plan let
each generated frame see. Levels the schedule never denoises (full_res: every coarse level;
FramePack: they are derived) are the generated finest latents re-encoded with `reencode`, flagged
as derived (NaN without `reencode`). A plain class, so it pickles to Ray workers with its model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from millivid.diffusion.config import SamplerConfig
from millivid.diffusion.rollout import Decode, Reencode, decode_frames, rollout
from millivid.diffusion.schedule import Schedule, plan_rollout, visible_context
from millivid.eval.protocol import Generated, RolloutBatch
from millivid.schema import Precision


@dataclass
class DiffusionMethod:
    model: torch.nn.Module
    schedule: Schedule
    sampler: SamplerConfig
    decode: Decode
    reencode: Reencode | None = None
    precision: Precision = "bf16"
    progress: bool = False

    def __call__(self, batch: RolloutBatch) -> Generated:
        if batch.context_latents is None:
            raise ValueError(f"schedule {self.schedule.name!r} rolls out from latents: give EvalData.latents")
        known = batch.context_frames.shape[1]
        total = known + batch.rollout
        result = rollout(
            self.model,
            self.schedule,
            [torch.from_numpy(level) for level in batch.context_latents],
            torch.from_numpy(batch.actions),
            total,
            self.sampler,
            batch.seeds,
            reencode=self.reencode,
            precision=self.precision,
            progress=self.progress,
        )
        generated = [level[:, known:] for level in result.latents]
        return Generated(
            frames=rearrange(decode_frames(self.decode, generated[0]), "b t c h w -> b t h w c"),
            latents=self.every_level(generated, result.produced[:, known:]),
            visible=visible_context(plan_rollout(self.schedule, known, total), known, total),
            reach=self.schedule.reach,
            derived=self.derived_levels,
        )

    @property
    def derived_levels(self) -> tuple[int, ...]:
        """Levels no step of the schedule denoises."""
        return tuple(level for level, steps in self.schedule.steps_per_level().items() if not steps)

    def every_level(self, generated: list[torch.Tensor], produced: np.ndarray) -> tuple[np.ndarray, ...]:
        """generated: per level (b R n_l c), produced: (levels, R) -> per level (b R n_l c) float32
        arrays, derived levels re-encoded from the finest where the rollout has not already (FramePack
        with hierarchical context derives them with the same reencode while it rolls out)."""
        missing = [level for level in self.derived_levels if not produced[level].all()]
        if missing and self.reencode is not None:
            encoded = reencode_frames(self.reencode, generated[0])
            generated = [encoded[level] if level in missing else latent for level, latent in enumerate(generated)]
        return tuple(latent.float().cpu().numpy() for latent in generated)


@torch.no_grad()
def reencode_frames(reencode: Reencode, finest: torch.Tensor, chunk: int = 64) -> list[torch.Tensor]:
    """finest: (b T n0 c) -> per level (b T n_l c) on the CPU: `reencode`d `chunk` frames at a time."""
    flat = rearrange(finest, "b t n c -> (b t) n c")
    parts = [[level.float().cpu() for level in reencode(flat[i : i + chunk])] for i in range(0, len(flat), chunk)]
    return [rearrange(torch.cat(levels), "(b t) n c -> b t n c", b=finest.shape[0]) for levels in zip(*parts, strict=True)]
