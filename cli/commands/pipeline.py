"""`millivid pipeline`: run the experiment pipeline (or a prefix of it) as a Prefect flow.

When every stage up to `--until` is cached (and none forced), the command answers from the cache
alone: it walks the stages as the flow would, with a probing context (`probe_context`), and starts
neither Ray nor Prefect nor records an MLflow run. A cached rerun then costs about what importing
the libraries costs (`millivid bench pipeline`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from millivid.config import PRESETS, load_config
from millivid_cli.main import add_config_arguments, emit, key_value_lines
from millivid_platform.pipeline import STAGES, PipelineParams

if TYPE_CHECKING:
    from millivid_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

EXIT_PAUSED = 75  # sysexits' EX_TEMPFAIL: not done yet, run the same command again

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

    config = load_config(args.config, args.overrides)  # the run's one load: ConfigError names the field
    preflight.check_config(config, args.until, args.methods)  # seconds, before Ray or Prefect start
    common: dict[str, Any] = {"force": args.force, "methods": args.methods or [], "time_limit_minutes": args.time_limit_minutes}
    if args.config in PRESETS:
        return PipelineParams.from_loaded(config, preset=args.config, overrides=args.overrides, **common)
    return PipelineParams.from_loaded(config, config=config, **common)


def run(args: argparse.Namespace) -> int:
    from millivid_platform.settings import load_settings

    params = params_from_args(args)
    settings = load_settings()
    settings.export_environment()
    started = time.perf_counter()
    cached = cached_results(settings, params, args.until)
    if cached is not None:
        print_results(args, cached, started, work_needed=False)
        return 0
    return run_flow(args, settings, params)


def run_flow(args: argparse.Namespace, settings: PlatformSettings, params: PipelineParams) -> int:
    """Run the flow up to `--until` on Prefect (its temporary server without PREFECT_API_URL)."""
    from millivid_platform import embedded_prefect

    embedded_prefect.start(settings)

    from millivid_flows import pipeline as flows

    started = time.perf_counter()
    # With --json, stdout carries the one JSON document: what libraries print meanwhile (MLflow's
    # "View run" lines, Ray workers' output relayed to the driver) goes to stderr with the logs.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        flow = flows.BY_HAND[next(name for name, until, _ in flows.STAGE_FLOWS if until == args.until)]
        state = flow(params, return_state=True)
    if state.is_cancelled():  # a stage paused at the time limit (the message says which, and how far)
        emit({"paused": state.message}, args.json, text=lambda paused: [paused["paused"]])
        return EXIT_PAUSED
    print_results(args, state.result(), started, work_needed=True)
    return 0


def cached_results(settings: PlatformSettings, params: PipelineParams, until: str) -> dict[str, Any] | None:
    """The flow's results read from the cache, or None when some stage up to `until` would run."""
    from millivid_platform.stages import CacheMiss

    try:
        return probe_stages(settings, params, until)
    except CacheMiss as miss:
        log.info("pipeline: work to do (%s)", miss)
        return None


def probe_stages(settings: PlatformSettings, params: PipelineParams, until: str) -> dict[str, Any]:
    """The flow's walk (`stage_walk.walk_stages`) with a probing context: the same stage functions
    (so the same cache keys), each returning the finished run it would reuse; raises `CacheMiss`
    where one would run. The results have the flow's shape; there is no pipeline run
    (`pipeline_run_id` None)."""
    from millivid_dashboards import report_stage
    from millivid_platform.pipeline import probe_context
    from millivid_platform.stage_walk import StageSteps, walk_stages

    ctx, config = probe_context(settings, params)
    return walk_stages(ctx, config, params, until, StageSteps.direct(report=report_stage.run))


def print_results(args: argparse.Namespace, results: dict[str, Any], started: float, work_needed: bool) -> None:
    """Each stage's result, as text or (`--json`) one JSON object; `work_needed` false: all came from the cache."""
    summary = {"wall_seconds": round(time.perf_counter() - started, 2), "stages": jsonable(results),
               "work_needed": work_needed}
    emit(summary, args.json, text=summary_lines)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = key_value_lines(summary["stages"], key_width=12)
    if not summary["work_needed"]:
        lines.append("every stage was cached: no work needed (neither Ray nor Prefect started, no MLflow run recorded)")
    return [*lines, f"done in {summary['wall_seconds']} s"]


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value
