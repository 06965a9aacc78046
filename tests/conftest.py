"""Shared fixtures. Real services only: a local Ray, MLflow on SQLite, Prefect's test harness."""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from millivid_platform.compute import LOOPBACK_ONLY

# Tests never touch the user's ./workspace or ~/.prefect; set before anything imports Prefect.
# Each test process has its own session folder: under pytest-xdist (`make test`) the workers
# inherit the environment the controller set here, and take their own over it.
_PARENT_SESSION_DIR = os.environ.get("MILLIVID_TESTS_SESSION_DIR")  # the xdist controller's, in a worker
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="millivid-tests-"))
os.environ["MILLIVID_TESTS_SESSION_DIR"] = str(_SESSION_DIR)
os.environ["MILLIVID_WORKSPACE"] = str(_SESSION_DIR / "workspace")
if _PARENT_SESSION_DIR and os.environ.get("PREFECT_HOME", "").startswith(_PARENT_SESSION_DIR):
    del os.environ["PREFECT_HOME"]  # the controller's; a PREFECT_HOME the user set is kept
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("PREFECT_API_URL", None)
# Ray keeps machine-wide state in its temp folder (e.g. the record of the "current" cluster, which
# any other cluster on the machine may have written): the tests' clusters keep theirs here.
os.environ["RAY_TMPDIR"] = str(_SESSION_DIR)
os.environ.update(LOOPBACK_ONLY)  # as ensure_ray does, but before any test imports ray
# Test processes of `make test` share the cores (pytest-xdist): torch's CPU kernels, here and in
# the commands tests start, get their share of threads, not each all of them (set before torch loads).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))
# Ray workers inherit the environment of the local cluster: let them import test modules
# (pytest imports tests/test_x.py as module `test_x`), so tasks defined in tests unpickle there.
_TESTS = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ.get("PYTHONPATH")) if p)



def _prefect_logging_on_the_real_stderr() -> Path:
    """Prefect's own logging.yml, its console handler writing to `sys.__stderr__`.

    Prefect (re)configures logging with `stream: ext://sys.stderr`, bound to whatever sys.stderr is
    then: inside a test using `capsys`, that test's capture, closed when it ends, so every later log
    line of a flow fails. fd 2 is still captured by pytest per test."""
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("prefect")
    default = Path(spec.origin).parent / "logging" / "logging.yml"
    config = yaml.safe_load(default.read_text())
    config["handlers"]["console"]["stream"] = "ext://sys.__stderr__"
    path = _SESSION_DIR / "prefect-logging.yml"
    path.write_text(yaml.safe_dump(config))
    return path


os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(_prefect_logging_on_the_real_stderr())


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


@pytest.fixture(params=["local", "memory"])
def storage_root(request, tmp_path):
    """A folder URI that does not exist yet, on the local disk and on fsspec's in-memory filesystem
    (one per test); removed afterwards."""
    from millivid import storage

    uri = str(tmp_path / "store") if request.param == "local" else f"memory://{tmp_path.name}/store"
    yield uri
    storage.remove(uri, recursive=True)


@pytest.fixture(scope="module")
def lpips():
    """LPIPS with random backbone weights: no download, the same network shape as the real one."""
    import warnings

    from millivid.perceptual import Lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Lpips("alex", "random")


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


@contextlib.contextmanager
def workspace_environment(folder: Path) -> Iterator[Path]:
    """`folder` as the workspace (and its SQLite file as MLflow's store) for the code inside."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MILLIVID_WORKSPACE", str(folder))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        yield folder


@pytest.fixture(scope="session")
def smoke_workspace(tmp_path_factory, ray_session, prefect_harness) -> Path:
    """A workspace where the plain smoke pipeline has run once, so that every stage of `--config
    smoke` is cached there. For the modules that need finished runs rather than a fresh workspace
    (the cache, the command line, the report site): they add runs to it and promote baselines in
    it, and never expect it to be empty. Enter it with `workspace_environment`."""
    from millivid_flows.pipeline import pipeline
    from millivid_platform.pipeline import PipelineParams

    folder = tmp_path_factory.mktemp("smoke") / "workspace"
    with workspace_environment(folder):
        pipeline(PipelineParams(preset="smoke"))
    return folder


# Screenshots and other files a person looks at after the run: MILLIVID_TEST_ARTIFACTS or a folder
# of the session's (the controller's, which xdist workers inherit); the summary at the end of the run names it.
os.environ.setdefault("MILLIVID_TEST_ARTIFACTS", str(_SESSION_DIR / "artifacts"))
TEST_ARTIFACTS = Path(os.environ["MILLIVID_TEST_ARTIFACTS"])


@pytest.fixture
def test_artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's folder of kept files (screenshots), under TEST_ARTIFACTS."""
    folder = TEST_ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The test files that use the session's smoke workspace (a whole pipeline): `make test` runs them in
# one process, so that it is made once. Checked against the tests' fixtures at collection.
SMOKE_WORKSPACE_FILES = frozenset({"test_cached_pipeline.py", "test_cli_commands.py", "test_report_site.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most slow tests first, each file's tests in their own order: `make test`
    hands whole files to two processes in this order, so the long ones start early rather than one
    of them running alone at the end."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: a file's tests keep their order
    using = {item.path.name for item in items if "smoke_workspace" in item.fixturenames}
    if not using <= SMOKE_WORKSPACE_FILES:
        raise pytest.UsageError(f"tests/conftest.py: add {sorted(using - SMOKE_WORKSPACE_FILES)} to SMOKE_WORKSPACE_FILES "
                                "(they use the smoke_workspace fixture)")


def work_unit(nodeid: str) -> str:
    """What `make test` hands one test process at a time: the test's file, or "smoke_workspace" for
    the files of SMOKE_WORKSPACE_FILES."""
    file = nodeid.split("::", 1)[0]
    return "smoke_workspace" if Path(file).name in SMOKE_WORKSPACE_FILES else file


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: unknown to a run with `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile` (make test), its units from `work_unit`."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByWorkUnit(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


def pytest_terminal_summary(terminalreporter) -> None:
    if TEST_ARTIFACTS.is_dir() and any(TEST_ARTIFACTS.rglob("*.png")):
        terminalreporter.write_line(f"test artifacts (screenshots): {TEST_ARTIFACTS}")


def pytest_sessionfinish(session, exitstatus) -> None:
    """The session's folder goes when the run passed (workspaces, Ray's and Prefect's state: hundreds
    of MB over many runs), all but the test artifacts the summary names; after a failure it stays,
    with the logs to look at."""
    import shutil

    if exitstatus != 0 or not _SESSION_DIR.is_dir():
        return
    for path in _SESSION_DIR.iterdir():
        if path == TEST_ARTIFACTS and any(path.rglob("*.png")):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        _SESSION_DIR.rmdir()  # empty unless artifacts are kept
