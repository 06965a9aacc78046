"""Each method's rollout schedule, animated from the Schedule object the sampler rolls out.

Schedules come from each run's resolved configuration (`ExperimentConfig.schedules`), so what is
drawn is what ran; runs whose method has the same schedule share one picture.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from millivid.config import ExperimentConfig
from millivid.diffusion.schedule import Schedule
from millivid_dashboards.charts import RunStyle
from millivid_dashboards.collect import PipelineRun
from millivid_dashboards.page import Page, escape
from millivid_dashboards.schedule_chart import schedule_figure

log = logging.getLogger(__name__)


def run_schedules(run: PipelineRun) -> dict[str, Schedule]:
    if run.config is None:
        return {}
    try:
        return ExperimentConfig.model_validate(run.config).schedules
    except ValueError as err:  # a config from older code that the current schema rejects
        log.warning("run %s: schedules not drawn, its config does not load now: %s", run.run_id, err)
        return {}


def schedule_identity(schedule: Schedule) -> str:
    return json.dumps([schedule.name, schedule.kind, [step.tolist() for step in schedule.steps], schedule.tokens_per_level])


def schedules_page(runs: Sequence[PipelineRun], styles: dict[str, RunStyle]) -> Page:
    page = Page("schedules.html", "Rollout schedules")
    page.add("<p>Frames left to right (0 = the chunk's first new frame), levels bottom (finest) to top (coarsest). "
             "Press play or drag the slider to step through a chunk; the bars below are the tokens of every step, the "
             "current one highlighted; the bracket is the schedule's reach.</p>")
    found: dict[str, tuple[Schedule, list[str]]] = {}
    for run in runs:
        for schedule in run_schedules(run).values():
            found.setdefault(schedule_identity(schedule), (schedule, []))[1].append(run.run_id)
    if not found:
        page.add("<p>No run has a resolved configuration to draw its schedules from.</p>")
    for schedule, run_ids in found.values():
        labels = ", ".join(styles[run_id].label for run_id in run_ids)
        page.add(f"<div data-runs='{escape(' '.join(run_ids))}'><h3>{escape(schedule.name)}</h3>"
                 f"<p><small>used by {escape(labels)}</small></p>{page.chart(schedule_figure(schedule))}</div>")
    return page
