"""The pipeline's stages in order, each fed what the ones before it returned: one walk shared by the
flow (stages as Prefect tasks, in an MLflow parent run) and the command line's cache probe (stages
called as they are, in a probing context).

    results = walk_stages(ctx, config, params, "diffusion", StageSteps.direct(report=report_stage.run))

The report stage builds the dashboards' site, a package above this one, so the caller supplies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from millivid.config import ExperimentConfig
from millivid_platform import (
    autoencoder_stage,
    data_stage,
    diffusion_stage,
    evaluation_stage,
    preflight,
)
from millivid_platform.pipeline import STAGES, PipelineParams, Stage, log_headline_metrics
from millivid_platform.stages import PipelineContext, StageResult


@dataclass(frozen=True)
class StageSteps:
    """How a walk calls each stage; every step takes the context and the config first, as the stage
    functions do (`data` takes the whole config: the walk does not know which part a step needs)."""

    data: Callable[[PipelineContext, ExperimentConfig], StageResult]
    autoencoder: Callable[[PipelineContext, ExperimentConfig, StageResult], dict[str, StageResult]]
    encode: Callable[[PipelineContext, ExperimentConfig, StageResult, StageResult], StageResult]
    diffusion: Callable[[PipelineContext, ExperimentConfig, str, StageResult, StageResult], StageResult]
    evaluate: Callable[..., StageResult]
    report: Callable[[PipelineContext, ExperimentConfig, dict[str, Any]], StageResult]

    @classmethod
    def direct(cls, report: Callable[[PipelineContext, ExperimentConfig, dict[str, Any]], StageResult]) -> StageSteps:
        """The platform's stage functions called as they are."""
        return cls(
            data=lambda ctx, config: data_stage.run(ctx, config.data),
            autoencoder=autoencoder_stage.train,
            encode=autoencoder_stage.encode,
            diffusion=diffusion_stage.train,
            evaluate=evaluation_stage.run,
            report=report,
        )


def walk_stages(ctx: PipelineContext, config: ExperimentConfig, params: PipelineParams, until: Stage,
                steps: StageSteps) -> dict[str, Any]:
    """Run `steps` from data up to and including `until`; returns each stage's result by stage
    (`autoencoder` by variant, `diffusion` by method), the headline `metrics` once evaluated, and the
    pipeline's `pipeline_run_id` (None when probing), `experiment_id` and `config_name`.

    Raises preflight's ConfigError when the dataset does not fit the config (before any training),
    and, with a probing context, `stages.CacheMiss` at the first stage that would do work.
    """
    last = STAGES.index(until)
    results: dict[str, Any] = {"data": steps.data(ctx, config)}
    preflight.check_dataset(config, results["data"].outputs["dataset_uri"], until, params.methods)
    if last >= STAGES.index("autoencoder"):
        results["autoencoder"] = steps.autoencoder(ctx, config, results["data"])
    if last >= STAGES.index("encode"):
        autoencoder = results["autoencoder"]["hierarchical"]
        results["encode"] = steps.encode(ctx, config, results["data"], autoencoder)
    if last >= STAGES.index("diffusion"):
        methods = params.methods or list(config.diffusion.methods)
        results["diffusion"] = {method: steps.diffusion(ctx, config, method, results["encode"], autoencoder)
                                for method in methods}
    if last >= STAGES.index("evaluate"):
        results["evaluate"] = steps.evaluate(ctx, config, results["data"], autoencoder, results["encode"],
                                             results["diffusion"])
        results["metrics"] = log_headline_metrics(ctx, results["evaluate"], list(results["diffusion"]))
    if last >= STAGES.index("report"):
        results["report"] = steps.report(ctx, config, results)
    return {**results, "pipeline_run_id": ctx.parent_run_id, "experiment_id": ctx.experiment_id, "config_name": config.name}


def stage_results(results: dict[str, Any]) -> list[StageResult]:
    """Every StageResult in a walk's results (nested by variant or method), in stage order."""
    rows: list[StageResult] = []
    for value in results.values():
        if isinstance(value, StageResult):
            rows.append(value)
        elif isinstance(value, dict):
            rows.extend(stage_results(value))
    return rows
