"""Helpers for tests that start real services: free ports, health waits, `millivid ui`, a browser page."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MILLIVID = str(Path(sys.executable).parent / "millivid")  # the console script users run
REPO = Path(__file__).resolve().parent.parent  # the repository root
VIEWPORT = {"width": 1500, "height": 1000}


# What a Prefect client does against a Prefect server, run in a process of its own (this one may
# hold another Prefect API's settings): `deployments`, `run NAME PARAMS` or `create NAME PARAMS`.
PREFECT_CLIENT = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment

async def deployments():
    async with get_client() as client:
        found = {}
        for deployment in await client.read_deployments():
            flow = await client.read_flow(deployment.flow_id)
            found[f"{flow.name}/{deployment.name}"] = {
                "crons": [s.schedule.cron for s in deployment.schedules if hasattr(s.schedule, "cron")],
                "schema": deployment.parameter_openapi_schema, "description": deployment.description,
                "work_pool": deployment.work_pool_name}
        return found

async def all_logs(client, flow_run_id):
    logs = []
    while batch := await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                          limit=200, offset=len(logs), sort=LogSort.TIMESTAMP_ASC):
        logs += batch
    return logs

async def page(flow_run_id):
    async with get_client() as client:
        # The flow's process ships its logs in batches and may still be sending them after its final
        # state is set: read until the engine's last line ("Finished in state ...") is there.
        for _ in range(120):
            logs = await all_logs(client, flow_run_id)
            if any(log.message.startswith("Finished in state") for log in logs):
                break
            await asyncio.sleep(0.5)
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        return [log.message for log in logs], {a.key: a.data for a in artifacts}

action = sys.argv[1]
if action == "deployments":
    print(json.dumps(asyncio.run(deployments())))
elif action == "run":
    flow_run = run_deployment(sys.argv[2], parameters=json.loads(sys.argv[3]), timeout=900)
    logs, artifacts = asyncio.run(page(flow_run.id))
    print(json.dumps({"id": str(flow_run.id), "name": flow_run.name, "state": flow_run.state.type.value,
                      "message": flow_run.state.message, "logs": logs, "artifacts": artifacts}))
elif action == "create":
    try:
        flow_run = run_deployment(sys.argv[2], parameters=json.loads(sys.argv[3]), timeout=0)
        print(json.dumps({"created": str(flow_run.id)}))
    except Exception as err:
        print(json.dumps({"refused": f"{type(err).__name__}: {err}"}))
"""


def prefect_client(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PREFECT_CLIENT, *args], env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def prefect_cli(env: dict[str, str], folder: Path, *args: str) -> None:
    """The `prefect` command line, run in `folder` (not the repository: prefect.yaml must not depend on it)."""
    result = subprocess.run([str(Path(sys.executable).parent / "prefect"), *args], env=env, cwd=folder,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"exited with {process.returncode} before {url} answered"
        with contextlib.suppress(OSError):
            fetch(url, timeout=2.0)
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def millivid_ui(env: dict[str, str], port: int) -> Iterator[str]:
    """`millivid ui --port PORT` as a user runs it; yields the address it prints, stops it afterwards."""
    process = subprocess.Popen([MILLIVID, "ui", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        first = process.stdout.readline()
        assert first.startswith(f"MLflow UI: http://127.0.0.1:{port} "), first
        url = first.split()[2]
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the server and the workers it started
        process.wait(timeout=30)


@contextlib.contextmanager
def browser_page() -> Iterator[object]:
    """A Playwright page in headless Chromium (Debian's), at a fixed viewport."""
    import pytest

    from millivid_dashboards.browser import chromium, chromium_path

    if chromium_path() is None:
        if os.environ.get("MILLIVID_REQUIRE_BROWSER"):
            pytest.fail("chromium is required for the browser checks (apt-get install -y chromium)")
        pytest.skip("chromium not installed (CI installs it)")
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(300_000)  # MLflow's and Prefect's UIs render slowly on 2 busy cores
        yield page


def hide_mlflow_assistant(page) -> None:
    """MLflow 3 opens its assistant panel beside every page; the screenshots are of the runs."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
