"""A trained diffusion model with a rollout schedule, as a rollout function of the comparison.

    method = DiffusionMethod(model, schedule, cfg.diffusion.sampler, decode=autoencoder.decode,
                             reencode=autoencoder.encode)
    evaluate_methods(examples, {"millivid": method}, references, data, cfg)

It rolls out from the context latents of every level (EvalData.latents must be given) with the
ground-truth actions and the examples' seeds, and decodes only the generated finest latents.
A plain class, so it pickles to Ray workers with its model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from millivid.diffusion.config import SamplerConfig
from millivid.diffusion.rollout import Decode, Reencode, decode_frames, rollout
from millivid.diffusion.schedule import Schedule
from millivid.eval.protocol import RolloutBatch
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

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        if batch.context_latents is None:
            raise ValueError(f"schedule {self.schedule.name!r} rolls out from latents: give EvalData.latents")
        known = batch.context_frames.shape[1]
        result = rollout(
            self.model,
            self.schedule,
            [torch.from_numpy(level) for level in batch.context_latents],
            torch.from_numpy(batch.actions),
            known + batch.rollout,
            self.sampler,
            batch.seeds,
            reencode=self.reencode,
            precision=self.precision,
            progress=self.progress,
        )
        frames = decode_frames(self.decode, result.latents[0][:, known:])
        return rearrange(frames, "b t c h w -> b t h w c")
