"""Shared fixtures. Real services only: a local Ray, MLflow on SQLite, Prefect's test harness."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's ./workspace or ~/.prefect; set before anything imports Prefect.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="millivid-tests-"))
os.environ["MILLIVID_WORKSPACE"] = str(_SESSION_DIR / "workspace")
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("PREFECT_API_URL", None)
# Ray workers inherit the environment of the local cluster: let them import test modules
# (pytest imports tests/test_x.py as module `test_x`), so tasks defined in tests unpickle there.
_TESTS = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspace folder, used by `load_settings()` for this test."""
    folder = tmp_path / "workspace"
    monkeypatch.setenv("MILLIVID_WORKSPACE", str(folder))
    monkeypatch.delenv("MILLIVID_STORAGE_ROOT", raising=False)
    return folder


@pytest.fixture
def settings(workspace: Path):
    from millivid_platform.settings import load_settings

    return load_settings()


@pytest.fixture
def mlflow_store(settings, monkeypatch: pytest.MonkeyPatch):
    """MLflow on a fresh SQLite file in the test's workspace; yields the experiment id."""
    from millivid_platform import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.resolved_tracking_uri)
    settings.workspace.mkdir(parents=True, exist_ok=True)
    return tracking.configure(settings)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting one costs seconds)."""
    import ray

    from millivid_platform.compute import ensure_ray
    from millivid_platform.settings import load_settings

    ensure_ray(load_settings(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
