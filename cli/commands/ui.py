"""`millivid ui`: MLflow's UI over this workspace's runs, artifacts included, embedded or stack."""

from __future__ import annotations

import argparse
import os


def tcp_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: a TCP port is between 1 and 65535")
    return port


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=tcp_port, help="port to serve on (default: the stack's MLflow port, "
                                                 "MILLIVID_STACK_MLFLOW_PORT, 5050)")
    parser.epilog = ("With MLFLOW_TRACKING_URI naming a server, or the local stack running, it prints that "
                     "server's address; otherwise it serves the workspace's store until stopped (Ctrl-C).")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from millivid_platform import stack, tracking
    from millivid_platform.settings import load_settings

    settings = load_settings()
    if tracking.has_server(settings):
        print(f"MLflow UI: {tracking.ui_url(settings)} (the tracking server MLFLOW_TRACKING_URI names)")
        return 0
    stack_mlflow = next((row for row in stack.status(settings) if row["name"] == "mlflow" and row["healthy"]), None)
    if stack_mlflow is not None:  # a second server on the same SQLite file would compete with it
        print(f"MLflow UI: {stack_mlflow['url']} (the local stack's server, over this workspace)")
        return 0
    service = stack.mlflow_service(settings, args.port, store=settings.resolved_tracking_uri)
    print(f"MLflow UI: {service.url} (serving {settings.resolved_tracking_uri}; Ctrl-C stops it)", flush=True)
    os.execve(service.command[0], service.command, {**os.environ, **service.env})
