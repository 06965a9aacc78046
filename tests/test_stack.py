"""The local stack for real: MLflow and Prefect servers, a Ray head, served deployments, a browser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

CLIENT_SCRIPT = """
import asyncio, json, mlflow
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

async def deployments():
    async with get_client() as client:
        found = await client.read_deployments()
        pipeline = await client.read_deployment_by_name("pipeline/pipeline")
        return {d.name: [s.schedule.cron for s in d.schedules if hasattr(s.schedule, "cron")] for d in found}, pipeline.parameter_openapi_schema

served, schema = asyncio.run(deployments())
flow_run = run_deployment("prepare-data/prepare-data", parameters={"params": {"preset": "smoke"}}, timeout=600)
client = mlflow.MlflowClient()
experiment = client.get_experiment_by_name("millivid")
runs = client.search_runs([experiment.experiment_id])
print(json.dumps({"served": served, "schema": schema, "state": flow_run.state.type.value,
                  "experiment_id": experiment.experiment_id, "runs": [r.info.run_name for r in runs]}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_text(url: str) -> str:
    """The DOM of `url` after its scripts ran, from headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        ).stdout


@pytest.fixture
def running_stack(tmp_path, monkeypatch):
    from millivid_platform import stack
    from millivid_platform.settings import load_settings

    for name in ("MLFLOW", "PREFECT", "RAY"):
        monkeypatch.setenv(f"MILLIVID_STACK_{name}_PORT", str(free_port()))
    monkeypatch.setenv("MILLIVID_WORKSPACE", str(tmp_path / "workspace"))
    settings = load_settings()
    try:
        yield settings, stack.up(settings, echo=lambda line: None)
    finally:
        stack.down(settings, echo=lambda line: None)


def test_stack_serves_deployments_runs_flows_and_shows_them_in_the_uis(running_stack):
    from millivid_platform import stack

    settings, started = running_stack
    assert {entry.name for entry in started} == {"mlflow", "prefect", "ray", "deployments"}
    assert all(row["healthy"] for row in stack.status(settings))
    for entry in started:  # everything listens on loopback
        assert "127.0.0.1" in entry.url

    env = {**os.environ, **stack.client_environment(settings)}
    result = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"pipeline", "prepare-data", "train-autoencoder", "encode-latents", "train-diffusion", "evaluate",
            "nightly-regression"} <= set(report["served"])
    assert report["served"]["nightly-regression"] == ["0 2 * * *"]
    definitions = report["schema"]["definitions"]
    assert {"data", "autoencoder", "diffusion", "eval", "compute"} <= set(definitions["ExperimentConfig"]["properties"])
    assert "width" in definitions["AutoencoderModelConfig"]["properties"]
    assert report["state"] == "COMPLETED"
    assert {"data", "prepare-data-smoke"} <= set(report["runs"])

    if shutil.which("chromium") is None:
        if os.environ.get("MILLIVID_REQUIRE_BROWSER"):
            pytest.fail("chromium is required for the browser check (apt-get install -y chromium)")
        pytest.skip("chromium not installed (CI installs it)")
    prefect_ui = page_text(f"http://127.0.0.1:{settings.stack_prefect_port}/deployments")
    assert "nightly-regression" in prefect_ui and "train-autoencoder" in prefect_ui
    mlflow_ui = page_text(f"http://127.0.0.1:{settings.stack_mlflow_port}/#/experiments/{report['experiment_id']}/runs")
    assert "prepare-data-smoke" in mlflow_ui

    from ray._common.utils import get_ray_address_file

    record = Path(get_ray_address_file(None))
    assert record.read_text().strip().endswith(f":{settings.stack_ray_port}")  # `ray start` recorded the head
    stack.down(settings, echo=lambda line: None)
    assert not record.exists()  # so later local clusters do not look for the dead head
    assert not any(stack.group_alive(entry.pid) for entry in started)
    assert stack.status(settings) == []
    for port in (settings.stack_mlflow_port, settings.stack_prefect_port, settings.stack_ray_port):
        with socket.socket() as sock:  # nothing listens there any more (TIME_WAIT connections may linger)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
