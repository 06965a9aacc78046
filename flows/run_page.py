"""What a flow run's page in the Prefect UI shows besides Prefect's own lines.

* The project's log records (`millivid*` loggers: stage progress, cache hits, warnings, MLflow
  links) go to the flow run's logs; Prefect sends only its own loggers' records by default.
* Markdown artifacts: a summary per pipeline run (its stages with their MLflow runs, the headline
  numbers, the report) and, for the nightly flow, the regression table.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from millivid_dashboards.report_stage import SITE_FOLDER
from millivid_platform import tracking
from millivid_platform.pipeline import HEADLINE_KEYS
from millivid_platform.settings import PlatformSettings
from millivid_platform.stage_walk import stage_results
from millivid_platform.stages import StageResult

PROJECT_LOGGERS = ("millivid", "millivid_platform", "millivid_flows", "millivid_dashboards")

log = logging.getLogger(__name__)


class FlowRunLogHandler(APILogHandler):
    """Prefect's API log handler bound to one flow run: records logged outside Prefect's run
    context (other threads of the run's process) still reach that run's logs."""

    def __init__(self, flow_run_id: Any):
        super().__init__(level=logging.INFO)
        self.flow_run_id = flow_run_id

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "flow_run_id", None) is None and FlowRunContext.get() is None and TaskRunContext.get() is None:
            record = logging.makeLogRecord({**record.__dict__, "flow_run_id": self.flow_run_id})
        super().emit(record)


@contextlib.contextmanager
def project_logs_in_flow_run() -> Iterator[None]:
    """For the flow run in progress: the project's INFO records and above go to its logs."""
    from prefect.runtime import flow_run

    if flow_run.id is None:
        yield
        return
    handler = FlowRunLogHandler(flow_run.id)
    # skip loggers already sent to Prefect (PREFECT_LOGGING_EXTRA_LOGGERS), or each line would show twice
    loggers = [logger for logger in map(logging.getLogger, PROJECT_LOGGERS)
               if not any(isinstance(h, APILogHandler) for h in logger.handlers)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if logger.getEffectiveLevel() > logging.INFO:  # a worker's root logger lets only warnings through
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def announce(settings: PlatformSettings, experiment_id: str, result: StageResult | dict[str, StageResult]) -> None:
    """One line per finished stage in the run's logs: ran or reused, and its MLflow run."""
    for row in stage_results({"result": result}):
        outcome = "cached (reused a finished run)" if row.cached else f"done in {row.seconds:.1f} s"
        log.info("%s: %s; MLflow run %s", row.stage, outcome, tracking.run_url(settings, experiment_id, row.run_id))


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys hold lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def publish_pipeline_summary(settings: PlatformSettings, flow_name: str, label: str, results: dict[str, Any]) -> None:
    """A markdown artifact on the flow run: its stages with their MLflow runs, the headline numbers, the report."""
    experiment, parent = results["experiment_id"], results["pipeline_run_id"]
    lines = [f"# {flow_name} · {label}", "",
             f"MLflow: [the pipeline's run]({tracking.run_url(settings, experiment, parent)})"
             f"{ui_hint(settings)}", "",
             "| stage | MLflow run | outcome | seconds |", "| --- | --- | --- | ---: |"]
    for row in stage_results(results):
        outcome = "cached" if row.cached else "ran"
        lines.append(f"| {row.stage} | [{row.run_id[:8]}]({tracking.run_url(settings, experiment, row.run_id)}) "
                     f"| {outcome} | {row.seconds:.1f} |")
    if results.get("metrics"):
        lines += ["", *headline_table(results["metrics"])]
    if "report" in results:
        report = tracking.run_url(settings, experiment, parent, f"{SITE_FOLDER}/index.html")
        lines += ["", f"Report: [{SITE_FOLDER}/index.html]({report}) (on the pipeline's run)"]
    create_markdown_artifact("\n".join(lines), key=artifact_key(flow_name, results["config_name"], "summary"),
                             description=f"{flow_name} {label}: stages, MLflow runs, headline numbers")


def headline_table(metrics: dict[str, float]) -> list[str]:
    methods = list(dict.fromkeys(key.split("/", 1)[1] for key in metrics if "/" in key))
    holds = metrics.get("headline_holds")
    verdict = "n/a" if holds is None else "holds" if holds else "does not hold"
    lines = [f"## Headline: {verdict}", "", "| method | " + " | ".join(HEADLINE_KEYS) + " |",
             "| --- |" + " ---: |" * len(HEADLINE_KEYS)]
    for method in methods:
        cells = [f"{metrics[f'{key}/{method}']:.4g}" if f"{key}/{method}" in metrics else "–" for key in HEADLINE_KEYS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def publish_regression_table(settings: PlatformSettings, experiment_id: str, verdict: dict[str, Any]) -> None:
    """The nightly comparison as a markdown table, one row per method and metric."""
    def link(run_id: str) -> str:
        return f"[{run_id[:8]}]({tracking.run_url(settings, experiment_id, run_id)})"

    lines = [f"# Nightly regression · {verdict['group']}: {verdict['status']}", "", verdict["message"], ""]
    if "baseline_run" in verdict:
        lines += [f"Baseline: {link(verdict['baseline_run'])} · this evaluation: {link(verdict['evaluation_run'])}"
                  f"{ui_hint(settings)}", "",
                  "| method | metric | baseline | current | worse by | 95% CI | tolerance | regressed |",
                  "| --- | --- | ---: | ---: | ---: | --- | ---: | --- |"]
        for row in verdict["comparisons"]:
            lines.append(f"| {row['method']} | {row['metric']} | {row['baseline']:.4g} | {row['current']:.4g} "
                         f"| {row['worse_by']:.4g} | {row['ci_low']:.4g} .. {row['ci_high']:.4g} | {row['tolerance']:g} "
                         f"| {'**yes**' if row['regressed'] else 'no'} |")
    create_markdown_artifact("\n".join(lines), key=artifact_key("regression", verdict["group"]),
                             description=f"nightly regression of {verdict['group']}: {verdict['status']}")


def ui_hint(settings: PlatformSettings) -> str:
    """Links into an embedded store open once `millivid ui` serves it."""
    return "" if tracking.has_server(settings) else " (open with `millivid ui`)"
