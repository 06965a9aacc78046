"""Custom steps of prefect.yaml's `pull` section: a worker runs them before each flow run."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def enter_project() -> dict[str, str]:
    """Run the flow in the folder of the project the worker has installed, as `millivid pipeline`
    runs in it: relative settings (the default `./workspace`) mean the same on both paths.

    Prefect's own `set_working_directory` would need that folder's path written into prefect.yaml,
    which differs from machine to machine (and placeholders such as `{{ $VAR }}` have no defaults).
    """
    os.chdir(PROJECT_ROOT)
    return {"directory": str(PROJECT_ROOT)}
