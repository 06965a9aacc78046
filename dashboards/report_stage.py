"""Pipeline stage `report`: the comparison site of this pipeline run and its baseline (the
dashboards package), logged under `report/` on the pipeline's MLflow run (open report/index.html).

The site links the very pipeline run it describes, so every pipeline run gets its own, also when
the stage itself is cached; the stage's outputs point at the copy it first wrote under the storage
root (the site is a few MB, mostly plotly.js: one copy in MLflow per pipeline run is enough).

    publish_site(settings, pipeline_run_id, group)   # e.g. from the nightly flow, after its gate
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from millivid import storage
from millivid.config import ExperimentConfig
from millivid_dashboards.collect import baseline_pipeline_run
from millivid_dashboards.site import build_site
from millivid_platform import tracking
from millivid_platform.settings import PlatformSettings
from millivid_platform.stage_walk import stage_results
from millivid_platform.stages import PipelineContext, StageResult, StageRun, run_stage

SITE_FOLDER = "report"


def run(ctx: PipelineContext, config: ExperimentConfig, results: dict[str, Any]) -> StageResult:
    upstream = {row.stage: row.key for row in stage_results(results)}
    result = run_stage(ctx, "report", {"name": config.name}, upstream, lambda run: report(run, ctx, config))
    if result.cached and ctx.parent_run_id:
        publish_site(ctx.settings, ctx.parent_run_id, config.name)
    return result


def report(run: StageRun, ctx: PipelineContext, config: ExperimentConfig) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="millivid-report-") as folder:
        site = Path(folder)
        publish_site(ctx.settings, ctx.parent_run_id, config.name, site)
        uri = run.output_uri("site")
        for path in sorted(site.rglob("*")):
            if path.is_file():
                storage.write_bytes(storage.join(uri, path.relative_to(site).as_posix()), path.read_bytes())
    return {"report_uri": storage.join(uri, "index.html")}


def publish_site(settings: PlatformSettings, pipeline_run_id: str, group: str, out: Path | None = None) -> None:
    """Build the site of a pipeline run, with the baseline of its config `group` when there is one,
    into `out` (a temporary folder when None), and log it under report/ on the pipeline's run."""
    import mlflow

    experiment_id = mlflow.MlflowClient().get_run(pipeline_run_id).info.experiment_id
    baseline = baseline_pipeline_run(experiment_id, group)
    run_ids = [pipeline_run_id] + ([baseline] if baseline and baseline != pipeline_run_id else [])
    with tempfile.TemporaryDirectory(prefix="millivid-site-") as scratch:
        site = out or Path(scratch)
        baselines = frozenset([baseline]) if baseline else frozenset()
        build_site(run_ids, site, settings, f"MilliVid · {group}", baselines)
        log_folder(site, SITE_FOLDER, pipeline_run_id)


def log_folder(folder: Path, artifact_path: str, run_id: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            relative = path.parent.relative_to(folder).as_posix()
            tracking.log_artifact_file(path, artifact_path if relative == "." else f"{artifact_path}/{relative}", run_id)
