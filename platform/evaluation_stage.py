"""Pipeline stage `evaluate`: every method and reference line on the same test examples.

Examples are split over Ray tasks (one CPU each); every example's numbers depend only on its own
seed, so any number of workers gives the same result. Curves go to MLflow with `step` = rollout
frame index; per-method summary numbers (LPIPS over windows, on revisit frames within and out of
reach, latent MSE on revisit frames per level) at step 0; tables (rows, curves, latent memory),
plots, videos and the JSON summary go as artifacts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from millivid import storage
from millivid.ae.checkpoint import load_autoencoder
from millivid.ae.codec import LatentCodec
from millivid.config import ExperimentConfig
from millivid.data.reader import open_dataset
from millivid.diffusion.checkpoint import load_rollout_model
from millivid.eval.compare import SubsetResult, evaluate_subset, finish, merge_subsets
from millivid.eval.methods import DiffusionMethod
from millivid.eval.protocol import EvalData, Example, draw_examples
from millivid.eval.references import standard_references
from millivid.experiment import token_budget
from millivid_platform import tracking
from millivid_platform.compute import map_tasks
from millivid_platform.stages import PipelineContext, StageResult, StageRun, run_stage

log = logging.getLogger(__name__)


def run(ctx: PipelineContext, config: ExperimentConfig, data: StageResult, autoencoder: StageResult,
        latents: StageResult, models: dict[str, StageResult]) -> StageResult:
    upstream = {
        "dataset": data.outputs["dataset_hash"],
        "autoencoder": autoencoder.outputs["model_hash"],
        "latents": latents.outputs["latents_hash"],
        **{f"model:{name}": result.outputs["model_hash"] for name, result in sorted(models.items())},
    }
    # how many workers share the examples does not change a number (tested), so it is not part of the key
    inputs = {"eval": config.eval.model_dump(exclude={"workers"}), "sampler": config.diffusion.sampler,
              "precision": config.compute.precision}
    body = functools.partial(evaluate, config=config, data=data, autoencoder=autoencoder, latents=latents, models=models)
    return run_stage(ctx, "evaluate", inputs, upstream, body)


@functools.cache
def _cached_example_data(dataset_uri: str, latents_uri: str) -> EvalData:
    return EvalData(open_dataset(dataset_uri), open_dataset(latents_uri))


def evaluate_examples(job: tuple[Sequence[Example], list[int], dict[str, Any], ExperimentConfig, str, str]) -> SubsetResult:
    """One Ray task: a subset of the examples, every method and reference."""
    examples, indices, methods, config, dataset_uri, latents_uri = job
    logging.getLogger("millivid").setLevel(logging.INFO)  # per-method progress reaches the driver's log
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    data = _cached_example_data(dataset_uri, latents_uri)
    codec = next(iter(methods.values())).codec if methods else None
    references = standard_references(data, config.eval, decode=codec.decode if codec else None)
    rollouts = {name: method.rollout for name, method in methods.items()}
    return evaluate_subset(examples, indices, rollouts, references, data, config.eval)


class Method:
    """A trained rollout model with its codec; loaded once per worker."""

    def __init__(self, model_uri: str, config: ExperimentConfig):
        self.model_uri, self.config = model_uri, config
        model, info = load_rollout_model(model_uri)
        self.schedule = info.schedule()
        self.codec = LatentCodec(load_autoencoder(info.autoencoder_uri), config.compute.precision)
        # reencode also gives the latent memory the coarse levels a schedule does not denoise
        self.rollout = DiffusionMethod(
            model, self.schedule, config.diffusion.sampler, self.codec.decode, self.codec.reencode, config.compute.precision,
        )


def evaluate(run: StageRun, config: ExperimentConfig, data: StageResult, autoencoder: StageResult,
             latents: StageResult, models: dict[str, StageResult]) -> dict[str, str]:
    dataset_uri, latents_uri = data.outputs["dataset_uri"], latents.outputs["latents_uri"]
    examples = draw_examples(open_dataset(dataset_uri), config.eval)
    methods = {name: Method(result.outputs["model_uri"], config) for name, result in sorted(models.items())}
    budget = token_budget(method.schedule for method in methods.values())
    tracking.set_tags({"millivid.budget_warnings": "; ".join(budget["warnings"]) or "none"}, run.run_id)
    workers = max(1, min(len(examples), config.eval.workers or worker_count()))
    groups = [list(range(len(examples)))[rank::workers] for rank in range(workers)]
    log.info("evaluate: %d examples x (%d methods + references) on %d workers", len(examples), len(methods), workers)
    parts = map_tasks(evaluate_examples, [(examples, group, methods, config, dataset_uri, latents_uri) for group in groups])
    merged = merge_subsets(parts)
    result = finish(merged, examples, list(methods), reference_names(merged, methods), config.eval, budget)
    uri = run.output_uri("evaluation")
    written = result.write(uri)
    log_results(run, result, written)
    return {"evaluation_uri": uri, "summary_hash": storage.sha256(written["summary"])}


def reference_names(merged: SubsetResult, methods: dict[str, Any]) -> list[str]:
    seen = list(dict.fromkeys(merged.rows["method"].to_pylist()))
    return [name for name in seen if name not in methods]


def worker_count() -> int:
    import ray

    return int(ray.available_resources().get("CPU", 1))


def summary_numbers(summary: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(line, metric key, mean) of the summary's headline numbers; lines are methods and references,
    then the latent memory's candidates (methods and latent references)."""
    numbers = []
    for name, entry in summary["per_method"].items():
        numbers += [(name, f"{metric}_{window}", entry[window][metric]["mean"])
                    for window in ("last_half", "last_quarter") for metric in ("lpips", "psnr", "ssim")]
        for subset in ("revisit", "revisit_within_reach", "revisit_out_of_reach"):
            numbers.append((name, f"lpips_{subset}", ((entry[subset] or {}).get("lpips") or {}).get("mean")))
    for level, candidates in summary["latent_memory"]["levels"].items():
        numbers += [(name, f"latent_mse_revisit_level{level}", entry["mse"]["mean"]) for name, entry in candidates.items()]
    return numbers


def log_results(run: StageRun, result: Any, written: dict[str, str]) -> None:
    curves = result.curves
    frame_curves = curves.filter(pc.equal(curves["subset"], "all"))
    rows = []
    for method, metric, frame, mean in zip(*(frame_curves[c].to_pylist() for c in ("method", "metric", "frame", "mean")), strict=True):
        if mean is not None and np.isfinite(mean):
            rows.append((frame, {f"{metric}/{method}": mean}))
    by_step: dict[int, dict[str, float]] = {}
    for frame, values in rows:
        by_step.setdefault(frame, {}).update(values)
    for frame, values in sorted(by_step.items()):
        tracking.log_metrics(values, step=frame, run_id=run.run_id)
    summary_metrics = {f"summary/{name}/{key}": mean for name, key, mean in summary_numbers(result.summary) if mean is not None}
    if summary_metrics:
        tracking.log_metrics(summary_metrics, step=0, run_id=run.run_id)
    headline = result.summary.get("headline")
    tracking.set_tags({"millivid.headline": "n/a" if headline is None else "holds" if headline["holds"] else "does not hold",
                       "millivid.lpips_backbone": result.summary["lpips_backbone"],
                       "millivid.fvd": "available" if result.summary["fvd"].get("available") else
                       f"unavailable: {result.summary['fvd'].get('reason')}"}, run.run_id)
    for name, uri in written.items():
        folder = name.rsplit("/", 1)[0] if "/" in name else None
        tracking.log_artifact_bytes(storage.read_bytes(uri), f"evaluation/{folder + '/' if folder else ''}{uri.rsplit('/', 1)[-1]}", run.run_id)
