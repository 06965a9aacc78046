"""Find a stage's outputs by MLflow run id, or take a URI as given."""

from __future__ import annotations

import re

from millivid_platform import caching, tracking
from millivid_platform.settings import PlatformSettings

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_output(settings: PlatformSettings, run_or_uri: str, key: str) -> str:
    """`run_or_uri` is an MLflow run id (its `key` output is returned) or already a URI."""
    if not RUN_ID.match(run_or_uri):
        return run_or_uri
    import mlflow

    tracking.configure(settings)
    try:
        run = mlflow.MlflowClient().get_run(run_or_uri)
    except mlflow.exceptions.MlflowException as err:
        raise ValueError(f"MLflow run {run_or_uri}: {err.message}") from None
    outputs = caching.outputs_of(run)
    if key not in outputs:
        raise ValueError(f"MLflow run {run_or_uri} has no output {key!r} (it has: {', '.join(outputs) or 'none'})")
    return outputs[key]
