"""Pipeline stage `diffusion:<method>`: train one rollout method's diffusion transformer on Ray Train."""

from __future__ import annotations

import functools

from millivid import storage
from millivid.ae.checkpoint import load_autoencoder
from millivid.ae.codec import LatentCodec
from millivid.config import ExperimentConfig
from millivid.data.reader import open_dataset
from millivid.diffusion.checkpoint import RolloutModelInfo, save_rollout_model
from millivid.diffusion.dit import build_dit
from millivid.diffusion.schedule import budget_warnings
from millivid.diffusion.schedule_draw import write_schedule_picture
from millivid.diffusion.task import DiffusionTask, Preview
from millivid.experiment import diffusion_task, training_revisits
from millivid_platform import tracking
from millivid_platform.stages import PipelineContext, StageResult, StageRun, run_stage
from millivid_platform.training import TrainingJob, run_training

# Generated frames of the rollout picture at each held-out evaluation: it rolls out from a val
# clip of the schedule's span plus these frames (the preflight checks that val episodes are that long).
PREVIEW_FRAMES = 8


def make_task(config: ExperimentConfig, method: str, latents_uri: str, autoencoder_uri: str) -> DiffusionTask:
    """Built on each Ray Train worker (picklable through functools.partial)."""
    schedule = config.schedules[method]
    codec = LatentCodec(load_autoencoder(autoencoder_uri), config.compute.precision)
    preview = Preview(decode=codec.decode, reencode=codec.reencode if schedule.coarse_context_from_finest else None,
                      frames=PREVIEW_FRAMES)
    return diffusion_task(config, method, open_dataset(latents_uri), preview)


def train(ctx: PipelineContext, config: ExperimentConfig, method: str, latents: StageResult,
          autoencoder: StageResult) -> StageResult:
    if method not in config.diffusion.methods:
        raise ValueError(f"diffusion.methods has no method {method!r} (it has {', '.join(config.diffusion.methods)})")
    inputs = {
        "method": config.diffusion.methods[method],
        "model": config.diffusion.model,
        "train": config.diffusion.train,
        "compute": config.compute.result_fields(),
    }
    upstream = {"latents": latents.outputs["latents_hash"], "autoencoder": autoencoder.outputs["model_hash"]}
    return run_stage(ctx, f"diffusion:{method}", inputs, upstream,
                     functools.partial(train_method, config=config, method=method, latents=latents, autoencoder=autoencoder))


def train_method(run: StageRun, config: ExperimentConfig, method: str, latents: StageResult,
                 autoencoder: StageResult) -> dict[str, str]:
    meta = open_dataset(latents.outputs["latents_uri"]).manifest.meta
    info = RolloutModelInfo(
        method=method,
        schedule_config=config.diffusion.methods[method],
        model=config.diffusion.model,
        tokens_per_level=tuple(meta["tokens_per_level"]),
        channels=meta["latent_channels"],
        autoencoder_uri=autoencoder.outputs["model_uri"],
        latents_uri=latents.outputs["latents_uri"],
        dataset_uri=meta["source"],
    )
    log_schedule(run, config, method)
    revisits = training_revisits(config, method, open_dataset(info.dataset_uri))
    log_once(run, {"data/revisit_clip_share": revisits.share, "data/revisit_frame_share": revisits.revisit_frames_share})
    result = run_training(TrainingJob.for_stage(
        run, functools.partial(make_task, config, method, info.latents_uri, info.autoencoder_uri),
        config.diffusion.train, config.compute,
    ))
    model = build_dit(info.model, info.channels, info.tokens_per_level, config.schedules[method].context_source)
    model.load_state_dict(result.state["model"])
    uri = run.output_uri("model.pt")
    save_rollout_model(model, info, uri)
    tracking.log_artifact_bytes(storage.read_bytes(uri), "model/model.pt", run.run_id)
    return {"model_uri": uri, "model_hash": storage.sha256(uri), "revisit_clip_share": f"{revisits.share:.4f}"}


def log_schedule(run: StageRun, config: ExperimentConfig, method: str) -> None:
    """The schedule as numbers (tokens per step, reach, budget comparison) and as the paper draws it."""
    schedule = config.schedules[method]
    description = schedule.describe()
    log_once(run, {"schedule/max_tokens_per_step": description["max_tokens_per_step"],
                   "schedule/steps_per_chunk": description["steps"],
                   "schedule/new_frames_per_chunk": description["new_frames_per_chunk"],
                   "schedule/reach": schedule.reach.overall,
                   **{f"schedule/reach_level{level}": frames for level, frames in schedule.reach.per_level.items()}})
    warnings = budget_warnings(list(config.schedules.values()))
    tracking.set_tags({"millivid.budget_warnings": "; ".join(warnings) or "none"}, run.run_id)
    picture = run.output_uri("schedule.gif")
    write_schedule_picture(schedule, picture)
    tracking.log_artifact_bytes(storage.read_bytes(picture), "schedule/schedule.gif", run.run_id)


def log_once(run: StageRun, metrics: dict[str, float]) -> None:
    """Log the stage's step-0 facts unless the run has them: a resumed run (after a kill or a pause
    at the time limit) runs this body again, and every metric step is logged exactly once."""
    import mlflow

    logged = mlflow.MlflowClient().get_run(run.run_id).data.metrics
    fresh = {key: value for key, value in metrics.items() if key not in logged}
    if fresh:
        tracking.log_metrics(fresh, step=0, run_id=run.run_id)
