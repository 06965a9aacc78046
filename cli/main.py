"""The `millivid` command line: one sub-command module per area, each importing its heavy libraries
(torch, Ray, Prefect, MLflow) only when it runs."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from millivid.config import ConfigError, ExperimentConfig, load_config

# name -> (module under millivid_cli.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "check the installation and show where services and data are"),
    "pipeline": ("pipeline", "run the experiment pipeline (data -> ... -> report) as a Prefect flow"),
    "data": ("data", "render, import, inspect and preview video datasets"),
    "ae": ("ae", "train, encode with and evaluate the hierarchical autoencoder"),
    "schedule": ("schedule", "describe and draw rollout schedules"),
    "rollout": ("rollout", "roll a trained model out from context frames into a video"),
    "eval": ("evaluate", "evaluate rollout methods: consistency and quality against rollout length"),
    "probe": ("probe", "context knockout: does a trained model use the frame a revisit shows again?"),
    "baseline": ("baseline", "show or promote the baseline of nightly regression gates"),
    "stack": ("stack", "start, check and stop the local MLflow / Prefect / Ray stack"),
    "ui": ("ui", "MLflow's UI over this workspace's runs and artifacts (embedded or stack)"),
    "bench": ("bench", "run a benchmark from bench/ and print one JSON object"),
    "report": ("report", "build the comparison site of pipeline runs from MLflow (static, opens from disk)"),
}


class CommandError(RuntimeError):
    """An error to show the user without a traceback; exits with code 1."""


def add_config_arguments(parser: argparse.ArgumentParser, default: str = "smoke") -> None:
    parser.add_argument("--config", default=default, help=f"preset (smoke, cpu, paper) or YAML file (default: {default})")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. autoencoder.model.width=128")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, args.overrides)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def key_value_lines(result: dict[str, Any], key_width: int = 14) -> list[str]:
    """One `key: value` line per key, the keys right-aligned in `key_width` characters."""
    return [f"{key:>{key_width}}: {value}" for key, value in result.items()]


def emit(result: Any, as_json: bool, text: Callable[[Any], Iterable[str]] = key_value_lines) -> int:
    """Print a command's result on stdout: one JSON object with `--json`, else the lines `text(result)`
    makes (by default `key_value_lines`). Returns 0, the exit status of a command that got this far."""
    if as_json:
        print_json(result)
    else:
        for line in text(result):
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="millivid", description="MilliVid experiment platform")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"millivid_cli.commands.{module}").register(command)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's arguments. KEY=VALUE overrides may also follow options that come after a
    command's other positionals (`schedule describe NAME --config cpu windows=[1,4]`): argparse
    hands the overrides' positional its (empty) share at NAME and leaves those over."""
    parser = build_parser()
    args, left_over = parser.parse_known_args(argv)
    if left_over and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in left_over):
        args.overrides = [*args.overrides, *left_over]
    elif left_over:
        parser.error(f"unrecognized arguments: {' '.join(left_over)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        from millivid_platform.diagnosed import quiet_prefect_run_logs

        quiet_prefect_run_logs()
    try:
        result = args.handler(args)
    except (ConfigError, CommandError, ValueError, OSError) as err:
        if args.verbose and not isinstance(err, (ConfigError, CommandError)):
            raise
        print(f"error: {err}", file=sys.stderr)  # bad input names its file or field; -v shows the traceback
        return 2 if isinstance(err, ConfigError) else 1
    return int(result or 0)


if __name__ == "__main__":
    # `python -m` runs this file as a second copy of the module, whose CommandError is not the one
    # the commands raise: run the imported module's main(), which catches it
    from millivid_cli.main import main as imported_main

    sys.exit(imported_main())
