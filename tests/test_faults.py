"""Faults the platform survives and machine state it must not depend on or leave behind: first runs
at once in a new workspace, many cached reruns, resumed runs, a driver killed with SIGKILL, other
Ray clusters on the machine; and the addresses a local run listens on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import beyond_loopback, descendants

from millivid.config import load_config
from millivid_platform.stack import command_line


def test_first_runs_at_once_in_a_new_workspace_set_it_up_once(tmp_path):
    """Four processes create the MLflow store of one new workspace together; none crashes."""
    code = ("from millivid_platform.settings import load_settings\n"
            "from millivid_platform import tracking\n"
            "print(tracking.configure(load_settings()))")
    env = {**os.environ, "MILLIVID_WORKSPACE": str(tmp_path / "workspace")}
    env.pop("MLFLOW_TRACKING_URI", None)
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1  # one experiment, the same for all


def test_a_finished_run_is_found_behind_any_number_of_cached_reruns(mlflow_store, settings):
    from millivid_platform.stages import PipelineContext, run_stage

    bodies = []
    ctx = PipelineContext(settings, mlflow_store)
    for _ in range(23):  # each rerun adds a cached stand-in with the same key
        result = run_stage(ctx, "report", {"x": 1}, {}, lambda run: bodies.append(run.run_id) or {"answer": "42"})
    assert len(bodies) == 1 and result.cached and result.outputs == {"answer": "42"}


def test_schedule_metrics_are_logged_once_however_often_the_stage_resumes(mlflow_store, settings):
    import mlflow

    from millivid_platform import tracking
    from millivid_platform.diffusion_stage import log_schedule
    from millivid_platform.stages import StageRun

    run_id = tracking.create_run(mlflow_store, "diffusion:millivid", "diffusion:millivid")
    run = StageRun("diffusion:millivid", "key", run_id, settings, "0")
    for _ in range(3):  # the first run, then two resumes (a killed worker, a --time-limit pause)
        log_schedule(run, load_config("smoke"), "millivid")
    client = mlflow.MlflowClient()
    for key in ("schedule/reach", "schedule/max_tokens_per_step", "schedule/reach_level0"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0]


@pytest.mark.integration
def test_tests_keep_ray_state_in_their_own_temp_dir(ray_session):
    from ray._common.utils import get_ray_address_file

    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    assert session.is_relative_to(os.environ["RAY_TMPDIR"])
    assert Path(get_ray_address_file(None)).is_relative_to(os.environ["RAY_TMPDIR"])


LOCAL_RAY_SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
from processes import descendants, listening
from millivid_platform.compute import ensure_ray, map_tasks
from millivid_platform.settings import load_settings
def worker_pid(_):
    return os.getpid()
ensure_ray(load_settings(num_cpus=2))
map_tasks(worker_pid, [1, 2])  # start workers
print(json.dumps(listening([os.getpid(), *descendants(os.getpid())])))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_local_ray_listens_on_the_loopback_only(tmp_path):
    """GCS, raylet, workers, agents and the driver of the local cluster a pipeline starts (`ensure_ray`)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    script = LOCAL_RAY_SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sockets = [tuple(pair) for pair in json.loads(result.stdout.strip().splitlines()[-1])]
    assert {"gcs_server", "raylet"} <= {name for _, name in sockets}
    assert beyond_loopback(sockets) == []


def prefect_servers_of(workspace: Path) -> list[int]:
    """Prefect API server processes whose home is in `workspace` (this test's; nobody else's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and "prefect.server.api.server:create_app" in command_line(int(entry.name)):
            try:
                environment = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PREFECT_HOME={workspace / 'prefect'}".encode() in environment:
                found.append(int(entry.name))
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_a_prefect_server_too_slow_to_start_is_one_error_line(tmp_path):
    """On a busy machine Prefect's temporary server may miss its start-up deadline: the command says
    what happened and which setting to raise, without a traceback."""
    env = {**os.environ, "MILLIVID_WORKSPACE": str(tmp_path / "workspace"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0"}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "PREFECT_API_URL"):
        env.pop(key, None)
    result = subprocess.run([sys.executable, "-m", "millivid_cli.main", "pipeline", "--config", "smoke", "--until", "data"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: Prefect's temporary server did not start within 0 s" in result.stderr
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in result.stderr and "Traceback" not in result.stderr


def test_the_temporary_server_gets_two_minutes_to_start_unless_the_user_says_otherwise(monkeypatch):
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as TIMEOUT

    from millivid_platform.embedded_prefect import STARTUP_SECONDS, startup_budget

    monkeypatch.delenv(TIMEOUT.name, raising=False)
    with startup_budget(TIMEOUT):
        assert TIMEOUT.value() == STARTUP_SECONDS == 120
    monkeypatch.setenv(TIMEOUT.name, "7")  # Prefect reads it at start-up (test_a_prefect_server_too_slow_...)
    before = TIMEOUT.value()
    with startup_budget(TIMEOUT):
        assert TIMEOUT.value() == before  # left alone


def test_the_embedded_prefect_server_does_not_outlive_a_killed_driver(tmp_path):
    workspace = tmp_path / "workspace"
    env = {**os.environ, "MILLIVID_WORKSPACE": str(workspace)}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    driver = subprocess.Popen([sys.executable, "-m", "millivid_cli.main", "pipeline", "--config", "smoke"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = []
    try:
        deadline = time.time() + 240
        while not prefect_servers_of(workspace):
            assert driver.poll() is None and time.time() < deadline, "the pipeline ended before its server was seen"
            time.sleep(0.5)
        servers, left = prefect_servers_of(workspace), descendants(driver.pid)
        driver.kill()  # while the server may still be starting: that, too, must not leave it running
        driver.wait()
        deadline = time.time() + 30
        while prefect_servers_of(workspace) and time.time() < deadline:
            time.sleep(0.5)
        assert servers and prefect_servers_of(workspace) == []
    finally:  # what SIGKILL left of the driver's processes (e.g. its local Ray's) is this test's to stop
        for pid in [*left, *prefect_servers_of(workspace)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
