"""Runs as line sources: one style per run, and runs that share a cached result drawn once.

    styles = run_styles(runs, visible=3)                 # the first three runs shown when a page opens
    shared(runs, styles, lambda run: run.evaluation.source_run_id if run.evaluation else None)
        # [(RunStyle of every run sharing that evaluation, the first such run), ...]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from millivid_dashboards.charts import RunStyle
from millivid_dashboards.collect import PipelineRun

Run = TypeVar("Run", bound=PipelineRun)


def run_styles(runs: Sequence[PipelineRun], visible: int) -> dict[str, RunStyle]:
    return {run.run_id: RunStyle((run.run_id,), run.label, index, index < visible) for index, run in enumerate(runs)}


def shared(runs: Sequence[Run], styles: dict[str, RunStyle], key: Callable[[Run], Hashable | None]) -> list[tuple[RunStyle, Run]]:
    """Group runs by `key` (None: left out); a group's label names its first run and how many share it."""
    groups: dict[Hashable, list[Run]] = {}
    for run in runs:
        found = key(run)
        if found is not None:
            groups.setdefault(found, []).append(run)
    out = []
    for members in groups.values():
        first = styles[members[0].run_id]
        label = first.label if len(members) == 1 else f"{first.label} (+{len(members) - 1} sharing it)"
        keys = tuple(run.run_id for run in members)
        out.append((RunStyle(keys, label, first.index, any(styles[run].visible for run in keys)), members[0]))
    return out
