"""Pipeline stage `diffusion:<method>`: train one rollout method's diffusion transformer on Ray Train."""

from __future__ import annotations

import functools

from millivid import storage
from millivid.ae.checkpoint import load_autoencoder
from millivid.ae.codec import LatentCodec
from millivid.config import ExperimentConfig
from millivid.data.clips import StoreClips
from millivid.data.store import open_dataset
from millivid.diffusion.checkpoint import RolloutModelInfo, save_rollout_model
from millivid.diffusion.dit import build_dit
from millivid.diffusion.schedule import budget_warnings
from millivid.diffusion.schedule_draw import write_schedule_picture
from millivid.diffusion.task import DiffusionTask, Preview
from millivid.eval.revisits import RevisitShare, clip_revisit_share
from millivid_platform import tracking
from millivid_platform.stages import PipelineContext, StageResult, StageRun, run_stage
from millivid_platform.training import TrainingJob, run_training


def make_task(info: RolloutModelInfo, config: ExperimentConfig) -> DiffusionTask:
    """Built on each Ray Train worker (picklable through functools.partial)."""
    latents = open_dataset(info.latents_uri)
    columns = [f"latent_{level}" for level in range(len(info.tokens_per_level))] + ["actions"]
    schedule = info.schedule()
    codec = LatentCodec(load_autoencoder(info.autoencoder_uri), config.compute.precision)
    preview = Preview(decode=codec.decode, reencode=codec.reencode if schedule.coarse_context_from_finest else None)
    return DiffusionTask(
        schedule, info.model, info.channels, StoreClips(latents, "train", columns), config.diffusion.train.batch_size,
        seed=config.diffusion.train.seed, eval_source=StoreClips(latents, "val", columns), preview=preview,
    )


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
        schedule_config=config.diffusion.methods[method].model_dump(mode="json"),
        model=config.diffusion.model,
        tokens_per_level=tuple(meta["tokens_per_level"]),
        channels=meta["latent_channels"],
        autoencoder_uri=autoencoder.outputs["model_uri"],
        latents_uri=latents.outputs["latents_uri"],
        dataset_uri=meta["source"],
    )
    log_schedule(run, config, method)
    revisits = training_revisits(config, method, info.dataset_uri)
    tracking.log_metrics({"data/revisit_clip_share": revisits.share, "data/revisit_frame_share": revisits.revisit_frames_share},
                         step=0, run_id=run.run_id)
    result = run_training(TrainingJob(
        stage=run.stage,
        make_task=functools.partial(make_task, info, config),
        train=config.diffusion.train,
        compute=config.compute,
        checkpoint_root=run.checkpoint_root,
        run_name=run.checkpoint_name,
        mlflow_run_id=run.run_id,
        tracking_uri=run.settings.resolved_tracking_uri,
        deadline=run.deadline,
    ))
    model = build_dit(info.model, info.channels, info.tokens_per_level, info.schedule().context_source)
    model.load_state_dict(result.state["model"])
    uri = run.output_uri("model.pt")
    save_rollout_model(model, info, uri)
    tracking.log_artifact_bytes(storage.read_bytes(uri), "model/model.pt", run.run_id)
    return {"model_uri": uri, "model_hash": storage.sha256(uri), "revisit_clip_share": f"{revisits.share:.4f}"}


def training_revisits(config: ExperimentConfig, method: str, dataset_uri: str) -> RevisitShare:
    """How often this method's training clips hold a revisit of their own context (evaluation's rule):
    how often training shows the model a use for memory within its reach."""
    schedule, rules = config.schedules[method], config.eval
    return clip_revisit_share(open_dataset(dataset_uri), "train", schedule.span, schedule.first_denoised_column,
                              rules.revisit_radius, rules.revisit_angle, rules.revisit_min_gap, seed=config.diffusion.train.seed)


def log_schedule(run: StageRun, config: ExperimentConfig, method: str) -> None:
    """The schedule as numbers (tokens per step, reach, budget comparison) and as the paper draws it."""
    schedule = config.schedules[method]
    description = schedule.describe()
    tracking.log_metrics({"schedule/max_tokens_per_step": description["max_tokens_per_step"],
                          "schedule/steps_per_chunk": description["steps"],
                          "schedule/new_frames_per_chunk": description["new_frames_per_chunk"],
                          "schedule/reach": schedule.reach.overall,
                          **{f"schedule/reach_level{level}": frames for level, frames in schedule.reach.per_level.items()}},
                         step=0, run_id=run.run_id)
    warnings = budget_warnings(list(config.schedules.values()))
    tracking.set_tags({"millivid.budget_warnings": "; ".join(warnings) or "none"}, run.run_id)
    picture = run.output_uri("schedule.gif")
    write_schedule_picture(schedule, picture)
    tracking.log_artifact_bytes(storage.read_bytes(picture), "schedule/schedule.gif", run.run_id)
