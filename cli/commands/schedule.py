"""`millivid schedule ...`: describe, compare, plan and draw rollout schedules.

NAME is a method of the config's diffusion.methods (e.g. millivid, full_res, framepack) or a
schedule kind. Overrides set schedule fields (`windows=[1,4,16,64] extra_budget=256`, `frames=14`,
`context=[3,12,48,192]`) plus `finest_tokens=N` / `levels=N` for the level geometry, which
otherwise comes from the config (data.size, autoencoder.model.patch and levels). With
finest_tokens, level l has finest_tokens / 4^l tokens and `levels` defaults to the schedule's own
level count (len(windows) or len(context)).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from pydantic import TypeAdapter, ValidationError

from millivid.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    describe_validation_error,
    load_config,
)
from millivid.diffusion.schedules import (
    FAMILIES,
    FramePackScheduleConfig,
    MilliVidScheduleConfig,
    ScheduleConfig,
)
from millivid.geometry import LevelGeometry, geometry_problem
from millivid_cli.main import CommandError, print_json

KINDS = tuple(FAMILIES)
GEOMETRY_KEYS = ("finest_tokens", "levels")


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    describe = actions.add_parser(
        "describe", help="steps, tokens per step and chunk geometry of one schedule"
    )
    add_schedule_arguments(describe)
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(handler=run_describe)

    draw = actions.add_parser(
        "draw", help="animated GIF / HTML, or overview PNG, of a schedule's steps"
    )
    add_schedule_arguments(draw)
    draw.add_argument(
        "--out",
        required=True,
        help="output file or URI: .gif or .html (animated), .png (all steps)",
    )
    draw.add_argument("--frame-ms", type=int, default=250, help="milliseconds per step in a GIF")
    draw.set_defaults(handler=run_draw)

    plan = actions.add_parser(
        "plan", help="model calls and look-ahead of a rollout (defaults: the config's eval sizes)"
    )
    add_schedule_arguments(plan)
    plan.add_argument(
        "--context", type=int, help="ground-truth context frames (default: eval.context)"
    )
    plan.add_argument(
        "--total",
        type=int,
        help="frames in all, context included (default: eval.context + eval.rollout)",
    )
    plan.add_argument("--out", help="also draw every model call over absolute frames to this .png")
    plan.set_defaults(handler=run_plan)

    compare = actions.add_parser(
        "compare", help="every method of the config side by side, with token-budget warnings"
    )
    add_config_argument(compare)
    compare.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="finest_tokens=N and/or levels=N"
    )
    compare.set_defaults(handler=run_compare)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="smoke", help="preset (smoke, cpu, paper) or YAML file (default: smoke)"
    )


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", help=f"method name in diffusion.methods, or a kind ({', '.join(KINDS)})"
    )
    add_config_argument(parser)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="schedule fields (windows=[1,4,16,64] extra_budget=256 frames=14 ...) and finest_tokens=N, levels=N",
    )


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, int]]:
    """(schedule field overrides, {finest_tokens/levels: int}); values parsed as the config loader does."""
    fields, geometry = [], {}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in GEOMETRY_KEYS:
            fields.append(item)
            continue
        value = apply_overrides({}, [item]).get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"override {item!r}: {key} must be a positive integer")
        geometry[key] = value
    return fields, geometry


def schedule_config(config: ExperimentConfig, name: str, fields: list[str]) -> ScheduleConfig:
    methods = config.diffusion.methods
    if name in methods:
        raw = methods[name].model_dump(mode="json")
    elif name in KINDS:
        raw = {"kind": name}
    else:
        raise CommandError(
            f"unknown schedule {name!r}: not a method of this config ({', '.join(methods)}) nor a kind ({', '.join(KINDS)})"
        )
    try:
        return TypeAdapter(ScheduleConfig).validate_python(apply_overrides(raw, fields))
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, f"schedule {name!r}")) from None


def level_tokens(
    config: ExperimentConfig, schedule: ScheduleConfig, geometry: dict[str, int]
) -> tuple[tuple[int, ...], str]:
    """Tokens per level (finest first) and where they came from, as `millivid.geometry` counts them.

    `finest_tokens=N` stands for an `n x n` token grid (N = n^2): a frame of `n x n` one-token patches."""
    g = config.geometry
    if not geometry:
        return (
            g.tokens_per_level,
            f"config {config.name}: {g.size}x{g.size} frames, {g.patch}x{g.patch} patches, {g.levels} levels",
        )
    levels = geometry.get("levels") or own_levels(schedule) or g.levels
    if "finest_tokens" not in geometry:
        problem = geometry_problem(g.size, g.patch, levels)
        if problem:
            raise ConfigError(f"levels: {problem}")
        return LevelGeometry(g.size, g.patch, levels).tokens_per_level, (
            f"config {config.name}: {g.size}x{g.size} frames, {g.patch}x{g.patch} patches, levels={levels}"
        )
    finest = geometry["finest_tokens"]
    side = math.isqrt(finest)
    if side * side != finest or geometry_problem(side, 1, levels):
        raise ConfigError(
            f"finest_tokens: {finest} tokens are not an n x n grid (n a power of two) that halves per side "
            f"{levels - 1} times for {levels} levels"
        )
    return LevelGeometry(side, 1, levels).tokens_per_level, f"finest_tokens={finest}, levels={levels} (4x fewer per level)"


def own_levels(schedule: ScheduleConfig) -> int | None:
    """Levels a schedule config spells out itself (full_res works with any number)."""
    if isinstance(schedule, MilliVidScheduleConfig):
        return len(schedule.windows)
    if isinstance(schedule, FramePackScheduleConfig):
        return len(schedule.context)
    return None


def resolve(args: argparse.Namespace, config: ExperimentConfig) -> tuple[Any, ScheduleConfig, dict[str, Any]]:
    """The Schedule named on the command line, its config, and the level geometry used."""
    from millivid.diffusion.schedule import ScheduleError, build_schedule

    fields, geometry = split_overrides(args.overrides)
    chosen = schedule_config(config, args.name, fields)
    tokens, source = level_tokens(config, chosen, geometry)
    try:
        schedule = build_schedule(chosen, tokens, args.name)
    except ScheduleError as err:
        raise ConfigError(str(err)) from None
    return (
        schedule,
        chosen,
        {"levels": len(tokens), "tokens_per_level": list(tokens), "source": source},
    )


def run_describe(args: argparse.Namespace) -> int:
    schedule, chosen, geometry = resolve(args, load_config(args.config))
    result = {**schedule.describe(), "config": chosen.model_dump(mode="json"), "geometry": geometry}
    if args.json:
        print_json(result)
        return 0
    for key in (
        "name",
        "kind",
        "steps",
        "steps_per_level",
        "chunk_frames",
        "new_frames_per_chunk",
        "max_tokens_per_step",
        "min_tokens_per_step",
        "model_calls_per_new_frame",
        "reach",
        "context_source",
        "config",
        "geometry",
    ):
        print(f"{key:>26}: {result[key]}")
    print(
        "\nstep 0 (rows coarsest first; D denoised, c context, . unseen; columns = frames, oldest left):"
    )
    for level in reversed(range(schedule.levels)):
        print(f"  level {level} |" + "".join(".cD"[value] for value in schedule.steps[0][level]))
    return 0


def run_draw(args: argparse.Namespace) -> int:
    from millivid.diffusion.schedule import ScheduleError
    from millivid.diffusion.schedule_draw import write_schedule_picture

    schedule, _, _ = resolve(args, load_config(args.config))
    try:
        write_schedule_picture(schedule, args.out, frame_ms=args.frame_ms)
    except ScheduleError as err:
        raise CommandError(f"--out: {err}") from None
    print_json({"out": args.out, "schedule": schedule.name, "steps": len(schedule.steps)})
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from millivid.diffusion.schedule import ScheduleError, describe_plan, plan_rollout

    config = load_config(args.config)
    schedule, _, geometry = resolve(args, config)
    evaluation = config.eval
    context = evaluation.context if args.context is None else args.context
    total = context + evaluation.rollout if args.total is None else args.total
    try:
        plan = plan_rollout(schedule, context, total)
    except ScheduleError as err:
        raise CommandError(str(err)) from None
    result = {**describe_plan(schedule, plan, context, total), "geometry": geometry}
    if args.out:
        from millivid import storage
        from millivid.diffusion.schedule_draw import plan_png

        if not args.out.lower().endswith(".png"):
            raise CommandError(f"--out {args.out}: a plan is drawn as .png")
        storage.write_bytes(args.out, plan_png(schedule, plan, context, total))
        result["out"] = args.out
    print_json(result)
    return 0


def without_step_list(description: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in description.items() if key != "tokens_per_step"}


def run_compare(args: argparse.Namespace) -> int:
    from millivid.diffusion.schedule import ScheduleError, budget_warnings, build_schedule

    config = load_config(args.config)
    fields, geometry = split_overrides(args.overrides)
    if fields:
        raise CommandError(f"compare takes only finest_tokens=N / levels=N, got {fields}")
    schedules = []
    for name, chosen in config.diffusion.methods.items():
        try:
            schedules.append(
                build_schedule(chosen, level_tokens(config, chosen, geometry)[0], name)
            )
        except ScheduleError as err:
            raise ConfigError(f"diffusion.methods.{name}: {err}") from None
    print_json(
        {
            "config": args.config,
            "methods": {
                schedule.name: without_step_list(schedule.describe()) for schedule in schedules
            },
            "budget_warnings": budget_warnings(schedules),
            "eval": {"context": config.eval.context, "revisit_min_gap": config.eval.revisit_min_gap,
                     "headline_method": config.eval.headline_method},
        }
    )
    return 0
