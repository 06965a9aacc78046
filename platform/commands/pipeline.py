"""`millivid pipeline`: run the experiment pipeline (or a prefix of it) as a Prefect flow."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from typing import Any

from millivid.config import PRESETS, load_config
from millivid_platform.cli import add_config_arguments, print_json
from millivid_platform.pipeline import STAGES, PipelineParams

EXIT_PAUSED = 75  # sysexits' EX_TEMPFAIL: not done yet, run the same command again

FLOW_FOR_STAGE = {
    "data": "prepare_data",
    "autoencoder": "train_autoencoder",
    "encode": "encode_latents",
    "diffusion": "train_diffusion",
    "evaluate": "evaluate",
    "report": "pipeline",
}


def register(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--force", nargs="+", default=[], choices=[*STAGES, "all"], metavar="STAGE",
                        help=f"redo these stages even when cached ({', '.join(STAGES)}, all)")
    parser.add_argument("--until", choices=STAGES, default="report", help="last stage to run (default: report)")
    parser.add_argument("--methods", nargs="+", help="diffusion methods to train/evaluate (default: all in the config)")
    add_flow_arguments(parser)
    parser.set_defaults(handler=run)


def add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that runs the pipeline's flows takes besides the config (pipeline, ae train/encode)."""
    parser.add_argument("--time-limit", type=minutes, metavar="MINUTES", dest="time_limit_minutes",
                        help="pause training at a checkpoint once this many minutes have passed; "
                             "the same command run again continues from there")
    parser.add_argument("--json", action="store_true", help="print the stages' outputs as one JSON object")
    parser.epilog = (f"exit status: 0 done; 1 error; 2 invalid configuration or data that does not fit it; "
                     f"{EXIT_PAUSED} paused at --time-limit (the same command run again continues the paused training)")


def minutes(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: a time limit is a positive number of minutes")
    return value


def params_from_args(args: argparse.Namespace) -> PipelineParams:
    """The flow's parameters, once everything the command line and the config alone decide checks out."""
    from millivid_platform import preflight

    config = load_config(args.config, args.overrides)
    preflight.check_config(config, args.until, args.methods)  # seconds, before Ray or Prefect start
    common: dict[str, Any] = {"force": args.force, "methods": args.methods or [], "time_limit_minutes": args.time_limit_minutes}
    if args.config in PRESETS:
        return PipelineParams(preset=args.config, overrides=args.overrides, **common)
    return PipelineParams(config=config, **common)


def run(args: argparse.Namespace) -> int:
    from millivid_platform import embedded_prefect
    from millivid_platform.compute import ensure_ray
    from millivid_platform.settings import load_settings

    params = params_from_args(args)
    settings = load_settings()
    settings.export_environment()
    ensure_ray(settings)  # before Prefect's flow engine installs its signal handlers
    embedded_prefect.start(settings)

    from millivid_flows import pipeline as flows

    started = time.perf_counter()
    # With --json, stdout carries the one JSON document: what libraries print meanwhile (MLflow's
    # "View run" lines, Ray workers' output relayed to the driver) goes to stderr with the logs.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        state = getattr(flows, FLOW_FOR_STAGE[args.until])(params, return_state=True)
    if state.is_cancelled():  # a stage paused at the time limit (the message says which, and how far)
        if args.json:
            print_json({"paused": state.message})
        else:
            print(state.message)
        return EXIT_PAUSED
    results = state.result()
    summary = {"wall_seconds": round(time.perf_counter() - started, 2), "stages": jsonable(results)}
    if args.json:
        print_json(summary)
    else:
        for stage, result in summary["stages"].items():
            print(f"{stage:>12}: {result}")
        print(f"done in {summary['wall_seconds']} s")
    return 0


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value
