"""`millivid stack up | status | down`: the local MLflow, Prefect and Ray services."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from typing import Any

from millivid_cli.main import CommandError, emit

SERVED_DEPLOYMENTS = "millivid_flows.serve"  # the module the stack runs to serve the `<flow>/local` deployments


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start MLflow, Prefect, a Ray head and the served deployments on 127.0.0.1",
                        description="start the local stack (data in the workspace) and print the addresses")
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for each service to be healthy")
    up.set_defaults(handler=run_up)
    status = sub.add_parser("status", help="show the stack's processes and health", description="show the stack")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=run_status)
    down = sub.add_parser("down", help="stop every process `up` started", description="stop the local stack")
    down.set_defaults(handler=run_down)
    env = sub.add_parser("env", help="print the exports that point the CLI at the stack",
                         description="print shell exports for MLFLOW_TRACKING_URI, PREFECT_API_URL, RAY_ADDRESS")
    env.set_defaults(handler=run_env)


def run_up(args: argparse.Namespace) -> int:
    from millivid_platform import stack
    from millivid_platform.settings import load_settings

    settings = load_settings()
    try:
        stack.up(settings, SERVED_DEPLOYMENTS, timeout=args.timeout, echo=functools.partial(print, flush=True))  # progress, also when piped
    except RuntimeError as err:
        raise CommandError(f"{err}\n(`millivid stack down` stops what did start)") from None
    print("\nstack is up. Point this shell at it with:\n")
    run_env(args)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from millivid_platform import stack
    from millivid_platform.settings import load_settings

    rows = stack.status(load_settings())
    emit({"services": rows}, args.json, text=service_lines)
    return 0 if rows and all(row["healthy"] for row in rows) else 1


def service_lines(status: dict[str, Any]) -> Iterator[str]:
    """One line per service: its state, address, pid and log; or that the stack is not running."""
    if not status["services"]:
        yield "stack is not running (`millivid stack up`)"
    for row in status["services"]:
        state = "healthy" if row["healthy"] else ("running, not healthy" if row["alive"] else "stopped")
        yield f"{row['name']:>12}: {state:<22} {row['url']} (pid {row['pid']}, log {row['log']})"


def run_down(args: argparse.Namespace) -> int:
    from millivid_platform import stack
    from millivid_platform.settings import load_settings

    stack.down(load_settings())
    return 0


def run_env(args: argparse.Namespace) -> int:
    from millivid_platform import stack
    from millivid_platform.settings import load_settings

    for key, value in stack.client_environment(load_settings()).items():
        print(f"export {key}={value}")
    return 0
