"""`millivid baseline show | promote`: the evaluation that nightly regression gates compare with."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from millivid_cli.main import CommandError, emit


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    promote = sub.add_parser("promote", help="make a run the baseline of its group",
                             description="make an evaluate run (or the one inside a pipeline run) the baseline")
    promote.add_argument("run_id", help="MLflow run id of an evaluate stage or of a pipeline run")
    promote.add_argument("--group", help="baseline group (default: the run's config name)")
    promote.set_defaults(handler=run_promote)
    show = sub.add_parser("show", help="print the current baseline of a group", description="print the current baseline")
    show.add_argument("--group", default="smoke", help="baseline group, i.e. the config name (default: smoke)")
    show.add_argument("--json", action="store_true", help="print one JSON object (all summary metrics)")
    show.set_defaults(handler=run_show)


def run_promote(args: argparse.Namespace) -> int:
    from millivid_platform import regression, tracking
    from millivid_platform.settings import load_settings

    tracking.configure(load_settings())
    try:
        group, run_id = regression.promote(args.run_id, args.group)
    except Exception as err:  # MLflow's "run not found" and ours read the same to a user
        raise CommandError(str(err)) from None
    print(f"run {run_id} is now the baseline of '{group}'")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from millivid_platform import regression, tracking
    from millivid_platform.settings import load_settings

    settings = load_settings()
    experiment = tracking.configure(settings)
    run = regression.baseline_run(experiment, args.group)
    if run is None:
        raise CommandError(f"no baseline for '{args.group}'; promote one with `millivid baseline promote RUN_ID`")
    baseline = regression.describe_baseline(settings, run)
    return emit(baseline, args.json, text=lambda found: baseline_lines(found, args.group))


def baseline_lines(baseline: dict[str, Any], group: str) -> Iterator[str]:
    """The baseline's run, dates, commit, MLflow link and headline numbers (`--json` has every metric)."""
    from millivid_platform.pipeline import HEADLINE_KEYS

    yield f"baseline of '{group}': evaluate run {baseline['run_id']} ({baseline['run_name']})"
    yield (f"  promoted {baseline['promoted_at'] or 'before promotion dates were recorded'}, "
           f"evaluated {baseline['evaluated_at']}, commit {(baseline['git_commit'] or '?')[:12]}")
    yield f"  MLflow: {baseline['link']}"
    for name, value in baseline["metrics"].items():
        if name.rsplit("/", 1)[-1] in HEADLINE_KEYS:
            yield f"  {name:<40} {value:.4g}"
