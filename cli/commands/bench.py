"""`millivid bench NAME --json`: run a benchmark module from bench/ and print one JSON object."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil

from millivid_cli.main import CommandError, print_json


def available() -> list[str]:
    import millivid_bench

    return sorted(m.name for m in pkgutil.iter_modules(millivid_bench.__path__) if not m.name.startswith("_"))


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="benchmark name (a module in bench/); 'list' shows them")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    parser.add_argument("--quick", action="store_true", help="a short run, for checking that it works")
    parser.add_argument("--preset", help="experiment preset or YAML file, for benchmarks that run one (headline; "
                        "dotted overrides in MILLIVID_HEADLINE_OVERRIDES)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = available()
    if args.name == "list":
        print_json({"benchmarks": names})
        return 0
    if args.name not in names:
        raise CommandError(f"unknown benchmark {args.name!r}; available: {', '.join(names) or 'none'}")
    module = importlib.import_module(f"millivid_bench.{args.name}")
    options = {"preset": args.preset} if args.preset else {}
    if options and "preset" not in inspect.signature(module.run).parameters:
        raise CommandError(f"benchmark {args.name!r} takes no --preset")
    print_json(module.run(quick=args.quick, **options))
    return 0
