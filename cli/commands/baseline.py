"""`millivid baseline show | promote`: the evaluation that nightly regression gates compare with."""

from __future__ import annotations

import argparse

from millivid_cli.main import CommandError, print_json


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
    from millivid_platform.pipeline import HEADLINE_KEYS
    from millivid_platform.settings import load_settings

    settings = load_settings()
    experiment = tracking.configure(settings)
    run = regression.baseline_run(experiment, args.group)
    if run is None:
        raise CommandError(f"no baseline for '{args.group}'; promote one with `millivid baseline promote RUN_ID`")
    baseline = regression.describe_baseline(settings, run)
    if args.json:
        print_json(baseline)
        return 0
    print(f"baseline of '{args.group}': evaluate run {baseline['run_id']} ({baseline['run_name']})")
    print(f"  promoted {baseline['promoted_at'] or 'before promotion dates were recorded'}, "
          f"evaluated {baseline['evaluated_at']}, commit {(baseline['git_commit'] or '?')[:12]}")
    print(f"  MLflow: {baseline['link']}")
    for name, value in baseline["metrics"].items():  # the headline numbers; --json has them all
        if name.rsplit("/", 1)[-1] in HEADLINE_KEYS:
            print(f"  {name:<40} {value:.4g}")
    return 0
