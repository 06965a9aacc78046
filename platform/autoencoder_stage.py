"""Pipeline stages `autoencoder` (train on Ray Train) and `encode` (dataset -> per-level latents)."""

from __future__ import annotations

import functools
import json
import logging
import time

from millivid import storage
from millivid.ae.checkpoint import load_autoencoder, save_autoencoder
from millivid.ae.config import AutoencoderConfig, AutoencoderModelConfig
from millivid.ae.encode import encode_dataset
from millivid.ae.evaluate import compare_variants
from millivid.ae.figures import comparison_figure
from millivid.ae.frames import StoreFrames
from millivid.ae.model import build_autoencoder
from millivid.ae.task import AutoencoderTask, variant_config
from millivid.config import ExperimentConfig
from millivid.data.manifest import MANIFEST_NAME
from millivid.data.reader import open_dataset
from millivid.perceptual import Lpips
from millivid_platform import tracking
from millivid_platform.data_stage import progress_logger
from millivid_platform.stages import CacheMiss, PipelineContext, StageResult, StageRun, run_stage
from millivid_platform.training import TrainingJob, run_training

log = logging.getLogger(__name__)

COMPARISON_FRAMES = 256
FIGURE_FRAMES = 4


def make_task(cfg: AutoencoderConfig, size: int, dataset_uri: str) -> AutoencoderTask:
    """Built on each Ray Train worker (picklable through functools.partial)."""
    return AutoencoderTask(cfg, size, StoreFrames(open_dataset(dataset_uri)))


def train(ctx: PipelineContext, config: ExperimentConfig, data: StageResult) -> dict[str, StageResult]:
    """Train the hierarchical autoencoder (and the downscaled one when compared), by variant."""
    variants = ["hierarchical", "downscaled"] if config.autoencoder.compare_downscaled else ["hierarchical"]
    results = {
        variant: run_stage(
            ctx, "autoencoder" if variant == "hierarchical" else f"autoencoder:{variant}",
            {"autoencoder": trained_slice(config, variant), "size": config.data.size, "compute": config.compute.result_fields()},
            {"dataset": data.outputs["dataset_hash"]},
            functools.partial(train_variant, config=config, variant=variant, data=data),
        )
        for variant in variants
    }
    if len(results) > 1:
        if ctx.probe:  # the comparison runs on every pipeline run, cached variants or not
            raise CacheMiss("autoencoder: autoencoder.compare_downscaled compares the variants again")
        log_comparison(ctx, config, data, results)
    return results


def trained_slice(config: ExperimentConfig, variant: str) -> AutoencoderConfig:
    """What a variant's weights depend on: whether the pipeline also trains the other one does not
    count, nor, for the hierarchical variant, how the downscaled one is trained."""
    cfg = variant_config(config.autoencoder, variant).model_copy(update={"compare_downscaled": False})
    if variant == "hierarchical":
        default = AutoencoderModelConfig.model_fields["downscaled_training"].default
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"downscaled_training": default})})
    return cfg


def train_variant(run: StageRun, config: ExperimentConfig, variant: str, data: StageResult) -> dict[str, str]:
    cfg = variant_config(config.autoencoder, variant)
    dataset_uri = data.outputs["dataset_uri"]
    lpips_status = Lpips(cfg.lpips.net, cfg.lpips.backbone, cfg.lpips.weights_path).status
    tracking.set_tags({"millivid.lpips_backbone": lpips_status.tag, "millivid.lpips_reason": lpips_status.reason}, run.run_id)
    result = run_training(TrainingJob.for_stage(
        run, functools.partial(make_task, cfg, config.data.size, dataset_uri), cfg.train, config.compute
    ))
    model = build_autoencoder(cfg.model, config.data.size)
    model.load_state_dict(result.state["model"])
    model_uri = run.output_uri("model.pt")
    save_autoencoder(model, model_uri)
    tracking.log_artifact_bytes(storage.read_bytes(model_uri), "model/model.pt", run.run_id)
    return {"model_uri": model_uri, "model_hash": storage.sha256(model_uri)}


def log_comparison(ctx: PipelineContext, config: ExperimentConfig, data: StageResult, results: dict[str, StageResult]) -> None:
    """Hierarchical vs downscaled, level by level on held-out frames: a table and the figure."""
    models = {variant: load_autoencoder(result.outputs["model_uri"]) for variant, result in results.items()}
    frames = StoreFrames(open_dataset(data.outputs["dataset_uri"]), held_out_split="test").held_out(COMPARISON_FRAMES)
    lpips_cfg = config.autoencoder.lpips
    comparison = compare_variants(models, frames, Lpips(lpips_cfg.net, lpips_cfg.backbone, lpips_cfg.weights_path),
                                  precision=config.compute.precision)
    target = results["hierarchical"].run_id
    tracking.log_artifact_bytes(json.dumps(comparison, indent=2).encode(), "comparison/levels.json", target)
    tracking.log_artifact_bytes(comparison_figure(models, frames[:FIGURE_FRAMES]), "comparison/levels.png", target)
    for row in comparison["levels"]:
        for variant in models:
            tracking.log_metrics({f"compare/{variant}/{k}": row[variant][k] for k in ("psnr", "ssim", "lpips")},
                                 step=row["level"], run_id=target)
        difference = row["psnr_difference"]  # hierarchical minus downscaled
        tracking.log_metrics({f"compare/psnr_difference{suffix}": difference[key] for suffix, key in
                              (("", "mean"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))}, step=row["level"], run_id=target)


def encode(ctx: PipelineContext, config: ExperimentConfig, data: StageResult, autoencoder: StageResult) -> StageResult:
    upstream = {"dataset": data.outputs["dataset_hash"], "autoencoder": autoencoder.outputs["model_hash"]}
    settings = {"precision": config.compute.precision}
    return run_stage(ctx, "encode", settings, upstream,
                     functools.partial(write_latents, config=config, data=data, autoencoder=autoencoder))


def write_latents(run: StageRun, config: ExperimentConfig, data: StageResult, autoencoder: StageResult) -> dict[str, str]:
    model = load_autoencoder(autoencoder.outputs["model_uri"])
    source = open_dataset(data.outputs["dataset_uri"])
    uri = run.output_uri("latents")
    started = time.perf_counter()
    encode_dataset(model, source, uri, config.data.shard_frames, config.compute.precision,
                   meta={"autoencoder": autoencoder.outputs["model_uri"]}, progress=progress_logger("encode"))
    seconds = time.perf_counter() - started
    tracking.log_metrics({"encode/frames": source.manifest.frames, "encode/frames_per_s": source.manifest.frames / seconds},
                         step=0, run_id=run.run_id)
    manifest_uri = storage.join(uri, MANIFEST_NAME)
    return {"latents_uri": uri, "latents_hash": storage.sha256(manifest_uri)}
