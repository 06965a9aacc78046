"""`millivid baseline show | promote`: the evaluation that nightly regression gates compare with."""

from __future__ import annotations

import argparse

from millivid_platform.cli import CommandError, print_json


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    promote = sub.add_parser("promote", help="make a run the baseline of its group",
                             description="make an evaluate run (or the one inside a pipeline run) the baseline")
    promote.add_argument("run_id", help="MLflow run id of an evaluate stage or of a pipeline run")
    promote.add_argument("--group", help="baseline group (default: the run's config name)")
    promote.set_defaults(handler=run_promote)
    show = sub.add_parser("show", help="print the current baseline of a group", description="print the current baseline")
    show.add_argument("--group", default="smoke", help="baseline group, i.e. the config name (default: smoke)")
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

    experiment = tracking.configure(load_settings())
    run = regression.baseline_run(experiment, args.group)
    if run is None:
        raise CommandError(f"no baseline for '{args.group}'; promote one with `millivid baseline promote RUN_ID`")
    print_json({"group": args.group, "run_id": run.info.run_id, "outputs": regression.caching.outputs_of(run)})
    return 0
