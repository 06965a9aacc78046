"""The experiment pipeline and the stage flows users run by hand.

prepare data -> train autoencoder -> encode latents -> train diffusion (per method) -> evaluate
-> report. Every stage flow is the pipeline up to that stage: upstream stages come from the cache
when their inputs are unchanged, so a stage flow needs no paths from the user. With a time limit,
a flow whose training paused ends Cancelled with a message saying where and how to continue.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, State

from millivid_dashboards import report_stage
from millivid_flows import run_page
from millivid_platform import preflight
from millivid_platform.pipeline import PipelineParams, Stage, open_pipeline, pause_message
from millivid_platform.settings import load_settings
from millivid_platform.stage_walk import StageSteps, walk_stages
from millivid_platform.stages import PipelineContext, StagePaused, StageResult

DEFAULT_PARAMS = PipelineParams()

# Results pass between tasks in memory; caching across runs is the platform's (MLflow-backed).
stage_task = task(cache_policy=NO_CACHE, persist_result=False)
# The stage functions the tasks run: the same table the command line's cache probe walks.
STAGE_FUNCTIONS = StageSteps.direct(report=report_stage.run)


def announced(ctx: PipelineContext, result: Any) -> Any:
    run_page.announce(ctx.settings, ctx.experiment_id, result)
    return result


def run_label() -> str:
    """Flow runs are named after what they run (preset and overrides), not random words."""
    from prefect.runtime import flow_run

    return flow_run.parameters["params"].label


@stage_task(name="prepare-data")
def prepare_data_task(ctx, config) -> StageResult:
    return announced(ctx, STAGE_FUNCTIONS.data(ctx, config))


@stage_task(name="train-autoencoder")
def train_autoencoder_task(ctx, config, data: StageResult) -> dict[str, StageResult]:
    return announced(ctx, STAGE_FUNCTIONS.autoencoder(ctx, config, data))


@stage_task(name="encode-latents")
def encode_task(ctx, config, data: StageResult, autoencoder: StageResult) -> StageResult:
    return announced(ctx, STAGE_FUNCTIONS.encode(ctx, config, data, autoencoder))


@stage_task(name="train-diffusion", task_run_name="train-diffusion-{method}")
def train_diffusion_task(ctx, config, method: str, latents: StageResult, autoencoder: StageResult) -> StageResult:
    return announced(ctx, STAGE_FUNCTIONS.diffusion(ctx, config, method, latents, autoencoder))


@stage_task(name="evaluate")
def evaluate_task(ctx, config, data, autoencoder, latents, models: dict[str, StageResult]) -> StageResult:
    return announced(ctx, STAGE_FUNCTIONS.evaluate(ctx, config, data, autoencoder, latents, models))


@stage_task(name="report")
def report_task(ctx, config, results: dict[str, Any]) -> StageResult:
    return announced(ctx, STAGE_FUNCTIONS.report(ctx, config, results))


TASK_STEPS = StageSteps(data=prepare_data_task, autoencoder=train_autoencoder_task, encode=encode_task,
                        diffusion=train_diffusion_task, evaluate=evaluate_task, report=report_task)


def run_until(params: PipelineParams, until: Stage, run_name: str) -> dict[str, Any]:
    """Run the pipeline's stages up to and including `until` as tasks of the current flow, in a new
    MLflow parent run; returns each stage's outputs (`stage_walk.walk_stages`) and the run's ids."""
    with open_pipeline(load_settings(), params, run_name) as (ctx, config):
        preflight.check_config(config, until, params.methods)
        return walk_stages(ctx, config, params, until, TASK_STEPS)


def run_flow(params: PipelineParams, until: Stage, flow_name: str) -> dict[str, Any] | State:
    """`run_until` for a flow: the project's logs in the run's logs, a summary artifact at the end;
    a stage paused at the time limit ends the flow run Cancelled.

    Not Failed (nothing went wrong) and not Completed (there are no results yet): Prefect has no
    terminal "paused until run again" state, and a Paused flow run would wait to be resumed in place.
    """
    with run_page.project_logs_in_flow_run():
        try:
            results = run_until(params, until, flow_name)
        except StagePaused as paused:
            return Cancelled(message=pause_message(paused, params))
        run_page.publish_pipeline_summary(load_settings(), flow_name, params.label, results)
        return results


# The flows users run by hand, each the pipeline up to a stage: (flow name, last stage, description).
# The description is the flow's docstring, shown in the Prefect UI and on its deployments.
STAGE_FLOWS: tuple[tuple[str, Stage, str], ...] = (
    ("pipeline", "report", "The whole experiment: data to report."),
    ("prepare-data", "data", "Render the built-in world or import episodes into a sharded dataset."),
    ("train-autoencoder", "autoencoder", "Train the hierarchical autoencoder (data from the cache or prepared first)."),
    ("encode-latents", "encode", "Encode the dataset into per-level latents with the trained autoencoder."),
    ("train-diffusion", "diffusion", "Train the diffusion model of each rollout method in `params.methods` on the latents."),
    ("evaluate", "evaluate", "Evaluate the methods' rollouts: consistency and quality against rollout length."),
)


def stage_flow(name: str, until: Stage, description: str) -> Flow:
    """The flow `name`: `run_flow` up to `until`, importable as `name` with `_` for `-`.

    Prefect records a served flow's entrypoint as its module and function `__qualname__`, so the
    function is named after the module attribute it is bound to."""

    def run(params: PipelineParams = DEFAULT_PARAMS) -> dict[str, Any] | State:
        return run_flow(params, until, name)

    run.__name__ = run.__qualname__ = name.replace("-", "_")
    run.__doc__ = description
    return flow(name=name, description=description, flow_run_name=run_label, log_prints=True)(run)


BY_HAND: dict[str, Flow] = {name: stage_flow(name, until, description) for name, until, description in STAGE_FLOWS}
pipeline, prepare_data, train_autoencoder, encode_latents, train_diffusion, evaluate = BY_HAND.values()
