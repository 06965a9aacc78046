"""`millivid report`: the comparison site of pipeline runs, built from MLflow, opened from disk."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from millivid_cli.main import CommandError, emit


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", help="MLflow experiment (default: the settings' experiment, millivid)")
    parser.add_argument("--runs", nargs="+", default=[], metavar="ID",
                        help="pipeline runs to compare, first is shown first (a stage run's id stands for its pipeline run); "
                             "default: the latest --last finished pipeline runs")
    parser.add_argument("--last", type=int, default=10, help="how many recent pipeline runs without --runs (default: 10)")
    parser.add_argument("--out", required=True, help="folder to write the site to (open OUT/index.html)")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the regression baseline of the runs' config")
    parser.add_argument("--no-log", action="store_true", help="do not log the site to MLflow (a new run named 'site')")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout stays the command's
    import mlflow

    from millivid_dashboards import report_stage
    from millivid_dashboards.collect import (
        baseline_pipeline_run,
        latest_pipeline_runs,
        pipeline_run_id,
    )
    from millivid_dashboards.site import build_site
    from millivid_platform import tracking
    from millivid_platform.settings import load_settings

    settings = load_settings(**({"experiment": args.experiment} if args.experiment else {}))
    experiment_id = tracking.configure(settings)
    client = mlflow.MlflowClient()
    try:
        run_ids = [pipeline_run_id(client, run_id) for run_id in args.runs] or latest_pipeline_runs(settings.experiment, args.last)
    except mlflow.exceptions.MlflowException as err:
        raise CommandError(err.message) from None
    if not run_ids:
        raise CommandError(f"no finished pipeline runs in experiment {settings.experiment!r}; run `millivid pipeline` first")
    baselines = set()
    if not args.no_baseline:
        groups = dict.fromkeys(client.get_run(run_id).data.tags.get("millivid.config_name") for run_id in run_ids)
        baselines = {found for group in groups if group and (found := baseline_pipeline_run(experiment_id, group))}
    run_ids += [run_id for run_id in sorted(baselines) if run_id not in run_ids]
    index = build_site(run_ids, Path(args.out), settings, f"MilliVid · {settings.experiment}", frozenset(baselines))
    logged = None
    if not args.no_log:
        logged = tracking.create_run(experiment_id, f"site-{len(run_ids)}-runs", "site", None, None,
                                     {"millivid.site_runs": " ".join(run_ids)})
        report_stage.log_folder(index.parent, "site", logged)
        client.set_terminated(logged)
    result = {"index": str(index), "runs": run_ids, "baselines": sorted(baselines),
              "mlflow_run": tracking.run_url(settings, experiment_id, logged, "site/index.html") if logged else None}
    return emit(result, args.json, text=site_lines)


def site_lines(result: dict[str, Any]) -> Iterator[str]:
    """Where the site is, and its MLflow run when it was logged."""
    yield f"site of {len(result['runs'])} run(s): {result['index']}"
    if result["mlflow_run"]:
        yield f"logged to MLflow under site/: {result['mlflow_run']}"
