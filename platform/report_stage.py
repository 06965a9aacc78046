"""Pipeline stage `report`: one HTML page for the whole run, logged to the parent MLflow run."""

from __future__ import annotations

import dataclasses
from typing import Any

from millivid import storage
from millivid.config import ExperimentConfig
from millivid_dashboards.report import render_report
from millivid_platform import tracking
from millivid_platform.stages import PipelineContext, StageResult, StageRun, run_stage

PLOTS = ("plots/consistency.png", "plots/quality.png", "plots/latent_memory.png")


def run(ctx: PipelineContext, config: ExperimentConfig, results: dict[str, Any]) -> StageResult:
    stages = flatten(results)
    upstream = {row.stage: row.key for row in stages}
    result = run_stage(ctx, "report", {"name": config.name}, upstream, lambda run: report(run, ctx, config, stages))
    if result.cached and ctx.parent_run_id:  # every pipeline run shows its report, cached or not
        tracking.log_artifact_bytes(storage.read_bytes(result.outputs["report_uri"]), "report/index.html", ctx.parent_run_id)
    return result


def flatten(results: dict[str, Any]) -> list[StageResult]:
    rows: list[StageResult] = []
    for value in results.values():
        if isinstance(value, StageResult):
            rows.append(value)
        elif isinstance(value, dict):
            rows.extend(flatten(value))
    return rows


def report(run: StageRun, ctx: PipelineContext, config: ExperimentConfig, stages: list[StageResult]) -> dict[str, str]:
    evaluation = next((row for row in stages if row.stage == "evaluate"), None)
    summary, images = None, {}
    if evaluation is not None:
        root = evaluation.outputs["evaluation_uri"]
        summary = storage.read_json(storage.join(root, "summary.json"))
        images = {name: storage.read_bytes(storage.join(root, name)) for name in PLOTS if storage.exists(storage.join(root, name))}
    notes = []
    if summary and str(summary.get("lpips_backbone", "")).endswith(":random"):
        notes.append("LPIPS used a RANDOM backbone (pretrained AlexNet weights were not available): "
                     "compare methods with each other, not with published LPIPS numbers.")
    rows = [{k: v for k, v in dataclasses.asdict(row).items() if k in ("stage", "run_id", "cached", "seconds")} for row in stages]
    page = render_report(f"MilliVid pipeline: {config.name}", rows, summary, images, notes).encode()
    uri = run.output_uri("report.html")
    storage.write_bytes(uri, page)
    for target in filter(None, (run.run_id, ctx.parent_run_id)):
        tracking.log_artifact_bytes(page, "report/index.html", target)
    return {"report_uri": uri}
