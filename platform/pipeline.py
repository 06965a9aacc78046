"""The experiment pipeline's parameters and its parent MLflow run.

    params = PipelineParams(preset="smoke", overrides=["diffusion.train.steps=50"])
    with open_pipeline(settings, params) as (ctx, config):
        ...  # stages run with ctx; each gets a nested MLflow run
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from millivid.config import ExperimentConfig, config_hash, load_config
from millivid_platform import tracking
from millivid_platform.compute import ensure_ray
from millivid_platform.settings import PlatformSettings
from millivid_platform.stages import PipelineContext, StagePaused, mark_paused

log = logging.getLogger(__name__)

STAGES = ("data", "autoencoder", "encode", "diffusion", "evaluate", "report")
Stage = Literal["data", "autoencoder", "encode", "diffusion", "evaluate", "report"]


class PipelineParams(BaseModel):
    """What a user fills in to run the pipeline (the Prefect UI shows it as a form)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["smoke", "cpu", "paper"] = Field("smoke", description="configuration preset")
    overrides: list[str] = Field(default_factory=list, description="dotted KEY=VALUE overrides of the preset")
    config: ExperimentConfig | None = Field(None, description="a complete configuration (replaces preset+overrides)")
    force: list[str] = Field(default_factory=list, description="stages to redo even when cached (or 'all')")
    methods: list[str] | None = Field(None, description="subset of diffusion.methods to train and evaluate")
    time_limit_minutes: float | None = Field(
        None, gt=0,
        description="minutes after this run's start at which training pauses at a checkpoint; running the "
                    "same parameters again continues from there (not part of any cache key)",
    )

    def resolve(self) -> ExperimentConfig:
        return self.config if self.config is not None else load_config(self.preset, self.overrides)


def pause_message(paused: StagePaused, params: PipelineParams) -> str:
    """Where training stopped and how to go on (forcing again would restart the paused stage)."""
    again = "the same parameters but no force" if params.force else "the same parameters"
    return f"paused: {paused} after the {params.time_limit_minutes:g}-minute limit; run it again with {again} to continue"


@contextlib.contextmanager
def open_pipeline(
    settings: PlatformSettings, params: PipelineParams, run_name: str = "pipeline"
) -> Iterator[tuple[PipelineContext, ExperimentConfig]]:
    """Start Ray and the parent MLflow run; close the run with the pipeline's outcome.

    The time limit counts from here: its deadline is fixed now and travels to every stage.
    """
    import mlflow

    deadline = time.time() + 60 * params.time_limit_minutes if params.time_limit_minutes else None
    config = params.resolve()
    unknown = set(params.force) - set(STAGES) - {"all"}
    if unknown:
        raise ValueError(f"force: unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
    experiment_id = tracking.configure(settings)
    ensure_ray(settings)
    tags = {"millivid.preset": params.preset, "millivid.prefect_flow_run": _flow_run_id(), "millivid.config_name": config.name}
    parent = tracking.create_run(experiment_id, f"{run_name}-{config.name}", "pipeline", config, None, tags)
    tracking.log_config(config, parent)
    ctx = PipelineContext(settings, experiment_id, parent, frozenset(params.force), config.name, deadline)
    log.info("pipeline %s: config %s, MLflow run %s", config.name, config_hash(config), parent)
    try:
        yield ctx, config
    except StagePaused as paused:
        mark_paused(parent, paused)
        raise
    except BaseException:
        mlflow.MlflowClient().set_terminated(parent, "FAILED")
        raise
    mlflow.MlflowClient().set_terminated(parent, "FINISHED")


def _flow_run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "none")
    except ImportError:
        return "none"
