"""The site's first page: which runs, where they are in MLflow and Prefect, what differs between
them (resolved config, versions, commit), each run's verdict and summary tables.

It draws no chart, so it reads the same in MLflow's artifact preview, where scripts next to it do
not load.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from millivid_dashboards.collect import PipelineRun
from millivid_dashboards.config_diff import MISSING, differing_keys, flat_config
from millivid_dashboards.page import Page, escape
from millivid_dashboards.tables import (
    consistency_table,
    headline_section,
    latent_memory_table,
    verdict_badge,
)
from millivid_platform.settings import PlatformSettings
from millivid_platform.tracking import run_url, ui_url

TAG_COMMIT, TAG_DIRTY = "mlflow.source.git.commit", "millivid.git_dirty"
TAG_FLOW_RUN, TAG_FLOW_RUN_URL = "millivid.prefect_flow_run", "millivid.prefect_flow_run_url"
TAG_REGRESSION, TAG_REGRESSION_BASELINE = "millivid.regression", "millivid.regression_baseline"
VERSION_PREFIX = "millivid.version."


def link(url: str | None, text: str) -> str:
    return f"<a href='{escape(url)}'>{escape(text)}</a>" if url else escape(text)


def started(run: PipelineRun) -> str:
    return dt.datetime.fromtimestamp(run.start_time / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def commit(run: PipelineRun) -> str:
    sha = run.tags.get(TAG_COMMIT, "unknown")
    dirty = " <small>+ uncommitted changes</small>" if run.tags.get(TAG_DIRTY) == "true" else ""
    return f"<code title='{escape(sha)}'>{escape(sha[:10])}</code>{dirty}"


def versions(run: PipelineRun) -> dict[str, str]:
    return {key.removeprefix(VERSION_PREFIX): value for key, value in run.tags.items() if key.startswith(VERSION_PREFIX)}


def overview_page(runs: Sequence[PipelineRun], settings: PlatformSettings, notes: Sequence[str]) -> Page:
    page = Page("index.html", "Overview")
    page.add(*(f"<p class='note'>{escape(note)}</p>" for note in notes))
    page.add(runs_table(runs, settings), differences(runs), version_differences(runs))
    page.add("<h2>Runs in detail</h2>", *(run_details(run, settings, open_=index == 0) for index, run in enumerate(runs)))
    return page


def runs_table(runs: Sequence[PipelineRun], settings: PlatformSettings) -> str:
    rows = []
    for run in runs:
        evaluation = run.stages.get("evaluate")
        evaluate_link = link(run_url(settings, run.experiment_id, evaluation.source_run_id), "evaluate") if evaluation else "–"
        baseline = " <small>(baseline)</small>" if run.baseline else ""
        summary = run.evaluation.summary if run.evaluation else None
        cells = [
            link(run_url(settings, run.experiment_id, run.run_id), run.label) + baseline,
            escape(started(run)), escape(run.status), commit(run), dataset_cell(run),
            verdict_badge(summary), regression_cell(run, settings), evaluate_link,
            prefect_cell(run),
        ]
        rows.append("<tr>" + "".join(f"<td class='text'>{cell}</td>" for cell in cells) + "</tr>")
    header = "".join(f"<th>{name}</th>" for name in ("run (MLflow)", "started", "status", "commit", "dataset",
                                                      "headline", "regression gate", "evaluation (MLflow)", "Prefect"))
    return (f"<p>Links open the MLflow UI at <code>{escape(ui_url(settings))}</code> (for the embedded workspace: "
            f"<code>millivid ui</code> or <code>millivid stack up</code>).</p><table><tr>{header}</tr>{''.join(rows)}</table>")


def prefect_cell(run: PipelineRun) -> str:
    """The flow run's page where a Prefect server keeps it; Prefect's temporary server is gone after the run."""
    flow_run = run.tags.get(TAG_FLOW_RUN, "none")
    if flow_run == "none":
        return "<small>not run by Prefect</small>"
    return link(run.tags.get(TAG_FLOW_RUN_URL), "flow run") if TAG_FLOW_RUN_URL in run.tags else \
        f"<small>flow run <code>{escape(flow_run[:8])}</code> (temporary server)</small>"


def dataset_cell(run: PipelineRun) -> str:
    if not run.dataset:
        return "–"
    data = run.metrics.get("data", {})
    counts = f"{data['data/episodes']:.0f} episodes, {data['data/frames']:.0f} frames" if "data/episodes" in data else ""
    return (f"<span title='{escape(run.dataset['source'])}'>{escape(run.dataset['name'])}</span> "
            f"<small><code>{escape(run.dataset['digest'][:12])}</code> {escape(counts)}</small>")


def regression_cell(run: PipelineRun, settings: PlatformSettings) -> str:
    status = run.tags.get(TAG_REGRESSION)
    if not status:
        return "–"
    baseline = run.tags.get(TAG_REGRESSION_BASELINE)
    return escape(status) + (f" <small>vs {link(run_url(settings, run.experiment_id, baseline), baseline[:7])}</small>" if baseline else "")


def differences(runs: Sequence[PipelineRun]) -> str:
    """Resolved config keys whose values differ; with a baseline among the runs, cells that differ
    from the baseline's value are highlighted (the baseline's column comes first)."""
    ordered = sorted(runs, key=lambda run: not run.baseline)
    if len(ordered) < 2:
        return "<h2>Configuration</h2><p>One run and no baseline to compare it with (promote one with " \
               "<code>millivid baseline promote RUN_ID</code>); its resolved configuration is under Runs in detail.</p>"
    rows = differing_keys({run.run_id: run.config for run in ordered})
    baseline = ordered[0] if ordered[0].baseline else None
    return "<h2>Configuration: what differs</h2>" + difference_table(rows, ordered, baseline, "resolved configurations")


def version_differences(runs: Sequence[PipelineRun]) -> str:
    rows = differing_keys({run.run_id: versions(run) for run in runs})
    commits = {run.tags.get(TAG_COMMIT) for run in runs}
    note = "one commit" if len(commits) == 1 else f"{len(commits)} commits (see the runs table)"
    return f"<h2>Code and package versions</h2><p>{note}.</p>" + difference_table(rows, list(runs), None, "package versions")


def difference_table(rows: list[tuple[str, dict[str, str]]], runs: Sequence[PipelineRun], baseline: PipelineRun | None,
                     what: str) -> str:
    if not rows:
        return f"<p>The runs' {what} are identical.</p>"
    header = "".join(f"<th class='text'>{escape(run.label)}{' (baseline)' if run is baseline else ''}</th>" for run in runs)
    body = []
    for key, values in rows:
        cells = []
        for run in runs:
            value = values.get(run.run_id, MISSING)
            differs = baseline is not None and run is not baseline and value != values.get(baseline.run_id, MISSING)
            cells.append(f"<td class='text{' differs' if differs else ''}'><code>{escape(value)}</code></td>")
        body.append(f"<tr><td class='text'><code>{escape(key)}</code></td>{''.join(cells)}</tr>")
    note = "<p>Highlighted: differs from the baseline.</p>" if baseline else ""
    return f"{note}<table><tr><th>key</th>{header}</tr>{''.join(body)}</table>"


def run_details(run: PipelineRun, settings: PlatformSettings, open_: bool) -> str:
    summary = run.evaluation.summary if run.evaluation else None
    parts = [stage_table(run, settings)]
    if summary:
        parts += ["<h3>Headline</h3>", headline_section(summary), "<h3>Consistency</h3>", consistency_table(summary),
                  "<h3>Latent memory</h3>", latent_memory_table(summary.get("latent_memory"))]
    else:
        parts.append("<p>No evaluation in this run.</p>")
    config = flat_config(run.config)
    rows = "".join(f"<tr><td class='text'><code>{escape(key)}</code></td><td class='text'><code>{escape(value)}</code></td></tr>"
                   for key, value in config.items())
    parts.append(f"<details><summary>resolved configuration ({len(config)} keys)</summary><table>{rows}</table></details>"
                 if config else "<p>No resolved configuration recorded (config.json).</p>")
    return (f"<details{' open' if open_ else ''}><summary><b>{escape(run.label)}</b> · {verdict_badge(summary)}</summary>"
            f"{''.join(parts)}</details>")


def stage_table(run: PipelineRun, settings: PlatformSettings) -> str:
    rows = []
    for record in run.stages.values():
        source = (f"cached from {link(run_url(settings, run.experiment_id, record.source_run_id), record.source_run_id[:7])}"
                  if record.cached else "ran")
        rows.append(f"<tr><td class='text'>{escape(record.stage)}</td>"
                    f"<td class='text'>{link(run_url(settings, run.experiment_id, record.run_id), record.run_id[:7])}</td>"
                    f"<td class='text'>{source}</td><td class='text'>{escape(record.status)}</td><td>{record.seconds:.1f}</td></tr>")
    return ("<table><tr><th>stage</th><th>MLflow run</th><th></th><th>status</th><th>seconds</th></tr>"
            f"{''.join(rows)}</table>")
