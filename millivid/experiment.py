"""What one ExperimentConfig builds for its stages, shared by the pipeline's stages and the
science-only benchmarks (bench/headline.py), so both train and measure the same things.

    task = diffusion_task(config, "millivid", open_dataset(latents_uri))
    share = training_revisits(config, "millivid", open_dataset(frames_uri))
    budget = token_budget(config.schedules.values())
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from millivid.config import ExperimentConfig
from millivid.data.clips import StoreClips
from millivid.data.columns import DataError
from millivid.data.reader import Dataset
from millivid.diffusion.schedule import Schedule, budget_warnings
from millivid.diffusion.task import DiffusionTask, Preview
from millivid.eval.revisits import RevisitShare, clip_revisit_share


def diffusion_task(config: ExperimentConfig, method: str, latents: Dataset, preview: Preview | None = None) -> DiffusionTask:
    """The training task of `method` on a latent dataset (millivid.ae.encode): clips of the train
    split, held-out evaluation on the val split. Raises DataError when the latents do not have the
    levels the config's schedules are built for."""
    schedule = config.schedules[method]
    found = tuple(latents.manifest.meta.get("tokens_per_level", ()))
    if found != schedule.tokens_per_level:
        raise DataError(f"{latents.uri}: latents have tokens per level {found}, the config's schedules expect "
                        f"{schedule.tokens_per_level} (data.size / autoencoder.model.patch / autoencoder.model.levels)")
    columns = [f"latent_{level}" for level in range(schedule.levels)] + ["actions"]
    return DiffusionTask(
        schedule, config.diffusion.model, int(latents.manifest.meta["latent_channels"]),
        StoreClips(latents, "train", columns), config.diffusion.train.batch_size,
        seed=config.diffusion.train.seed, eval_source=StoreClips(latents, "val", columns), preview=preview,
        activation_checkpointing=config.compute.activation_checkpointing,
    )


def training_revisits(config: ExperimentConfig, method: str, frames: Dataset) -> RevisitShare:
    """How often `method`'s training clips (its schedule's span, the columns before its first
    denoised one as context) hold a revisit of their own context, by the evaluation's rule: how
    often training shows the model a use for memory within its reach."""
    schedule, rules = config.schedules[method], config.eval
    return clip_revisit_share(frames, "train", schedule.span, schedule.first_denoised_column,
                              rules.revisit_radius, rules.revisit_angle, rules.revisit_min_gap, seed=config.diffusion.train.seed)


def token_budget(schedules: Iterable[Schedule]) -> dict[str, Any]:
    """Tokens per step of every schedule and the warnings when they are not comparable."""
    schedules = list(schedules)
    return {"tokens_per_step": {schedule.name: schedule.max_tokens for schedule in schedules},
            "warnings": budget_warnings(schedules) if schedules else []}
