"""`millivid schedule ...`: describe, compare, plan and draw rollout schedules.

NAME is a method of the config's diffusion.methods (e.g. millivid, full_res, framepack) or a
schedule kind. Overrides set schedule fields (`windows=[1,4,16,64] extra_budget=256`, `frames=14`,
`context=[3,12,48,192]`) plus `finest_tokens=N` / `levels=N` for the level geometry, which
otherwise comes from the config (data.size, autoencoder.model.patch and levels). With
finest_tokens, level l has finest_tokens / 4^l tokens and `levels` defaults to the schedule's own
level count (its config's `levels`: len(windows) or len(context)). Values parse as the config
loader parses overrides (YAML), and bad ones read as its errors do.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from millivid.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    describe_validation_error,
    load_config,
)
from millivid.diffusion.schedule_core import Schedule
from millivid.diffusion.schedules import FAMILIES, ScheduleConfig
from millivid.geometry import LevelGeometry
from millivid.schema import Frozen
from millivid_cli.main import CommandError, emit, key_value_lines, print_json

KINDS = tuple(FAMILIES)
DESCRIBED = ("name", "kind", "steps", "steps_per_level", "chunk_frames", "new_frames_per_chunk", "max_tokens_per_step",
             "min_tokens_per_step", "model_calls_per_new_frame", "reach", "context_source", "config", "geometry")


class LevelOverrides(Frozen):
    """The command's own overrides beside the schedule fields: the level geometry to build for."""

    finest_tokens: int | None = Field(None, ge=1, description="finest-level tokens, an n x n grid (n a power of two)")
    levels: int | None = Field(None, ge=1, description="levels (default: the schedule's own count, else the config's)")


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


def parse_overrides(base: dict[str, Any], overrides: list[str], origin: str) -> tuple[dict[str, Any], LevelOverrides]:
    """`base` with the KEY=VALUE overrides set as the config loader sets them (`apply_overrides`: values
    parsed as YAML), less the geometry keys, which come back as LevelOverrides.

    Raises ConfigError naming the override, or (from `origin`) the geometry field and its value."""
    fields = apply_overrides(base, overrides)
    geometry = {key: fields.pop(key) for key in LevelOverrides.model_fields if key in fields}
    return fields, validated(LevelOverrides, geometry, origin)


def validated(kind: Any, raw: dict[str, Any], origin: str) -> Any:
    """`raw` validated as `kind` (a model or a union); errors read as the config loader's."""
    try:
        return TypeAdapter(kind).validate_python(raw)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, origin, raw)) from None


def chosen_schedule(config: ExperimentConfig, name: str, overrides: list[str]) -> tuple[ScheduleConfig, LevelOverrides]:
    """The schedule config NAME stands for (a method of `config`, else a kind's defaults) with the
    overrides' schedule fields set, and the overrides' level geometry."""
    methods = config.diffusion.methods
    if name in methods:
        base = methods[name].model_dump(mode="json")
    elif name in KINDS:
        base = {"kind": name}
    else:
        raise CommandError(
            f"unknown schedule {name!r}: not a method of this config ({', '.join(methods)}) nor a kind ({', '.join(KINDS)})"
        )
    origin = f"schedule {name!r}"
    fields, geometry = parse_overrides(base, overrides, origin)
    return validated(ScheduleConfig, fields, origin), geometry


def level_tokens(config: ExperimentConfig, schedule: ScheduleConfig, geometry: LevelOverrides) -> tuple[tuple[int, ...], str]:
    """Tokens per level (finest first) and where they came from, as `millivid.geometry` counts them:
    the config's geometry, with `levels` (default: the schedule's own level count) or, given
    `finest_tokens`, an n x n grid of one-token patches."""
    g = config.geometry
    configured = f"config {config.name}: {g.size}x{g.size} frames, {g.patch}x{g.patch} patches"
    if geometry.finest_tokens is None and geometry.levels is None:
        return g.tokens_per_level, f"{configured}, {g.levels} levels"
    levels = geometry.levels or schedule.levels or g.levels
    if geometry.finest_tokens is None:
        try:
            chosen = LevelGeometry(g.size, g.patch, levels)
        except ValueError as err:
            raise ConfigError(f"levels: {err}") from None
        return chosen.tokens_per_level, f"{configured}, levels={levels}"
    try:
        chosen = LevelGeometry.from_finest_tokens(geometry.finest_tokens, levels)
    except ValueError as err:
        raise ConfigError(f"finest_tokens: {err}") from None
    return chosen.tokens_per_level, f"finest_tokens={geometry.finest_tokens}, levels={levels} (4x fewer per level)"


def resolve(args: argparse.Namespace, config: ExperimentConfig) -> tuple[Schedule, ScheduleConfig, dict[str, Any]]:
    """The Schedule named on the command line, its config, and the level geometry used."""
    from millivid.diffusion.schedule import ScheduleError, build_schedule

    chosen, geometry = chosen_schedule(config, args.name, args.overrides)
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
    return emit(result, args.json, text=lambda described: description_lines(described, schedule))


def description_lines(described: dict[str, Any], schedule: Schedule) -> list[str]:
    """The DESCRIBED numbers, then the first step drawn as one row of cells per level, coarsest first."""
    return [
        *key_value_lines({key: described[key] for key in DESCRIBED}, key_width=26),
        "\nstep 0 (rows coarsest first; D denoised, c context, . unseen; columns = frames, oldest left):",
        *(f"  level {level} |" + "".join(".cD"[value] for value in schedule.steps[0][level])
          for level in reversed(range(schedule.levels))),
    ]


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
    fields, geometry = parse_overrides({}, args.overrides, f"schedule compare --config {args.config}")
    if fields:
        raise CommandError(f"compare takes only finest_tokens=N / levels=N, not {', '.join(fields)}")
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
