"""The local stack for real, as a user drives it: `millivid stack up` (MLflow and Prefect servers, a
Ray head, the served deployments), `prefect deploy --all` with a process worker, the CLI pointed at
the stack, `millivid ui`, and the UIs in headless Chromium (screenshots kept, see TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from processes import beyond_loopback, descendants, listening, stop_group
from services import (
    MILLIVID,
    REPO,
    browser_page,
    fetch,
    free_port,
    hide_mlflow_assistant,
    millivid_ui,
    prefect_cli,
    prefect_client,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOWS = {"pipeline", "prepare-data", "train-autoencoder", "encode-latents", "train-diffusion", "evaluate", "nightly-regression"}

def mlflow_runs(settings) -> dict[str, object]:
    """The stack's MLflow runs by name (latest first)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{settings.stack_mlflow_port}")
    experiment = client.get_experiment_by_name("millivid")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    return {run.info.run_name: run for run in reversed(runs)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`millivid stack up` on free ports in a new workspace; `down` at the end (the last test checks it)."""
    from millivid_platform import stack as local_stack
    from millivid_platform.settings import PlatformSettings

    workspace = tmp_path_factory.mktemp("stack") / "workspace"
    ports = {name: free_port() for name in ("MLFLOW", "PREFECT", "RAY")}
    env = {**os.environ, "MILLIVID_WORKSPACE": str(workspace), **{f"MILLIVID_STACK_{k}_PORT": str(v) for k, v in ports.items()}}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # the tests' Ray setting (conftest): the stack must bring its own
    settings = PlatformSettings(workspace=workspace, stack_mlflow_port=ports["MLFLOW"], stack_prefect_port=ports["PREFECT"],
                                stack_ray_port=ports["RAY"])
    try:
        up = subprocess.run([MILLIVID, "stack", "up"], env=env, capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        client_env = {**env, **local_stack.client_environment(settings)}
        yield settings, env, client_env, up.stdout
    finally:
        local_stack.down(settings, echo=lambda line: None)


def test_stack_up_reports_progress_and_serves_the_deployments(stack):
    from millivid_platform import stack as local_stack

    settings, _, client_env, output = stack
    for name in ("mlflow", "prefect", "ray", "deployments"):  # a line when each starts and when it is ready
        assert re.search(rf"^ +{name}: starting \(pid \d+, log ", output, re.M), output
        ready = re.search(rf"^ +{name}: ready after (\d+) s at ", output, re.M)
        assert ready, output
        if int(ready.group(1)) > local_stack.PROGRESS_SECONDS:  # and while it waits
            assert re.search(rf"^ +{name}: still starting after \d+ s", output, re.M), output
    assert "export MLFLOW_TRACKING_URI=" in output
    rows = local_stack.status(settings)
    assert {row["name"] for row in rows} == {"mlflow", "prefect", "ray", "deployments"}
    assert all(row["healthy"] and "127.0.0.1" in row["url"] for row in rows)

    deployments = prefect_client(client_env, "deployments")
    assert {f"{flow}/local" for flow in FLOWS} <= set(deployments)
    assert deployments["nightly-regression/local"]["crons"] == ["0 2 * * *"]
    assert deployments["pipeline/local"]["description"] == "The whole experiment: data to report."
    schema = deployments["pipeline/local"]["schema"]
    form = schema["definitions"]["PipelineParams"]
    assert form["description"] == "Which experiment to run, and how."
    assert "all" in form["properties"]["force"]["items"]["enum"]
    assert form["properties"]["methods"]["items"]["enum"] == ["millivid", "full_res", "framepack", "framepack_kernel"]
    assert "pattern" in form["properties"]["overrides"]["items"]
    assert {"data", "autoencoder", "diffusion", "eval", "compute"} <= set(schema["definitions"]["ExperimentConfig"]["properties"])


def test_every_stack_process_listens_on_the_loopback_only(stack):
    """MLflow, Prefect, the Ray head (GCS, raylet, agents, workers) and the deployments' Ray driver."""
    from millivid_platform import stack as local_stack

    settings = stack[0]
    processes = [pid for entry in local_stack.read_state(settings) for pid in (entry.pid, *descendants(entry.pid))]
    sockets = listening(processes)
    assert {"gcs_server", "raylet"} <= {name for _, name in sockets}
    assert beyond_loopback(sockets) == []


def test_a_served_deployment_runs_and_the_uis_show_it(stack, test_artifacts):
    settings, _, client_env, _ = stack
    refused = prefect_client(client_env, "create", "prepare-data/local", json.dumps({"params": {"overrides": ["data.sise=16"]}}))
    assert "refused" in refused and "overrides" in refused["refused"], refused  # by the server, when the run is created

    run = prefect_client(client_env, "run", "prepare-data/local", json.dumps({"params": {"preset": "smoke"}}))
    assert run["state"] == "COMPLETED", run
    assert run["name"] == "smoke"
    mlflow_ui = f"http://127.0.0.1:{settings.stack_mlflow_port}"
    assert any(line.startswith(f"data: running; follow it in MLflow: {mlflow_ui}/#/experiments/") for line in run["logs"]), run["logs"]
    summary = run["artifacts"]["prepare-data-smoke-summary"]
    assert summary.startswith("# prepare-data · smoke") and f"]({mlflow_ui}/#/experiments/" in summary
    runs = mlflow_runs(settings)
    assert {"prepare-data · smoke", "data · smoke"} <= set(runs)
    assert runs["data · smoke"].data.tags["millivid.prefect_flow_run"] == run["id"]
    assert runs["data · smoke"].data.tags["millivid.prefect_flow_run_url"].endswith(f"/runs/flow-run/{run['id']}")

    with browser_page() as page:
        prefect_ui = f"http://127.0.0.1:{settings.stack_prefect_port}"
        page.goto(f"{prefect_ui}/deployments")
        page.get_by_text("nightly-regression").first.wait_for()
        page.screenshot(path=test_artifacts / "prefect-deployments.png")
        page.goto(f"{prefect_ui}/runs/flow-run/{run['id']}")
        page.get_by_text("data: running; follow it in MLflow").first.wait_for()
        page.screenshot(path=test_artifacts / "prefect-flow-run-logs.png")
        page.get_by_text("Artifacts", exact=True).first.click()  # the run page's tab
        page.get_by_text("prepare-data-smoke-summary").first.wait_for()
        page.screenshot(path=test_artifacts / "prefect-flow-run-artifacts.png")
        page.get_by_text("prepare-data-smoke-summary").first.click()
        page.get_by_role("link", name="the pipeline's run").wait_for()  # the summary, rendered
        page.screenshot(path=test_artifacts / "prefect-pipeline-summary.png")
        page.goto(f"{mlflow_ui}/#/experiments/{runs['data · smoke'].info.experiment_id}/runs")
        page.get_by_text("prepare-data · smoke").first.wait_for()
        hide_mlflow_assistant(page)
        page.screenshot(path=test_artifacts / "mlflow-runs.png")


def test_prefect_deploy_all_registers_work_pool_deployments_a_worker_runs_on_the_ray_cluster(stack, tmp_path):
    settings, _, client_env, _ = stack

    prefect_cli(client_env, tmp_path, "work-pool", "create", "millivid", "--type", "process")
    prefect_cli(client_env, tmp_path, "--no-prompt", "deploy", "--all", "--prefect-file", str(REPO / "prefect.yaml"))
    deployments = prefect_client(client_env, "deployments")
    assert {f"{flow}/{flow}" for flow in FLOWS} | {f"{flow}/local" for flow in FLOWS} <= set(deployments)  # neither replaced
    assert deployments["prepare-data/prepare-data"]["work_pool"] == "millivid"
    assert deployments["nightly-regression/nightly-regression"]["crons"] == ["0 2 * * *"]

    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "millivid"],
                              env={**client_env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # a deployment that trains: on the stack's Ray cluster, which the worker's environment names
        run = prefect_client(client_env, "run", "train-autoencoder/train-autoencoder", json.dumps({"params": {"preset": "smoke"}}))
    finally:
        stop_group(worker)
    assert run["state"] == "COMPLETED", (run, (tmp_path / "worker.log").read_text()[-3000:])
    assert any(line.startswith("autoencoder: done in ") for line in run["logs"]), run["logs"]
    trained = mlflow_runs(settings)["autoencoder · smoke"]
    assert trained.data.tags["millivid.prefect_flow_run"] == run["id"]
    head = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print(ray.get_runtime_context().get_node_id())"],
                          env=client_env, capture_output=True, text=True, timeout=300)
    assert head.returncode == 0, head.stderr[-3000:]
    assert trained.data.tags["millivid.ray_node.rank0"] == head.stdout.split()[-1]  # the stack's Ray node trained it


def test_pipeline_json_prints_one_document_on_stdout(stack):
    """Against an MLflow server, MLflow prints "View run ..." lines when runs end: not onto --json's stdout."""
    _, _, client_env, _ = stack
    # forced: an all-cached pipeline is answered from the cache without creating runs (nor their lines)
    result = subprocess.run([MILLIVID, "pipeline", "--config", "smoke", "--until", "data", "--force", "data", "--json"],
                            env=client_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert out["stages"]["data"]["cached"] is False
    assert "View run" in result.stderr


def test_millivid_ui_serves_the_stack_workspace_and_stack_down_stops_everything(stack, test_artifacts):
    from ray._common.utils import get_ray_address_file

    from millivid_platform import stack as local_stack

    settings, env, _, _ = stack
    running = subprocess.run([MILLIVID, "ui"], env=env, capture_output=True, text=True, timeout=120)
    assert running.returncode == 0
    assert running.stdout.startswith(f"MLflow UI: http://127.0.0.1:{settings.stack_mlflow_port} (the local stack's server")

    record = Path(get_ray_address_file(None))
    assert record.read_text().strip().endswith(f":{settings.stack_ray_port}")  # `ray start` recorded the head
    started = local_stack.read_state(settings)
    local_stack.down(settings, echo=lambda line: None)
    assert not record.exists()  # so later local clusters do not look for the dead head
    assert not any(local_stack.group_alive(entry.pid) for entry in started)
    assert local_stack.status(settings) == []
    for port in (settings.stack_mlflow_port, settings.stack_prefect_port, settings.stack_ray_port):
        with socket.socket() as sock:  # nothing listens there any more (TIME_WAIT connections may linger)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))

    # the stack is down: `millivid ui` serves its workspace itself, artifacts of the stack's runs included
    import mlflow

    store = mlflow.MlflowClient(tracking_uri=f"sqlite:///{settings.workspace / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("millivid")
    data_run = store.search_runs([experiment.experiment_id], "attributes.run_name = 'data · smoke'")[-1]
    assert data_run.info.artifact_uri.startswith("mlflow-artifacts:")
    with millivid_ui(env, free_port()) as url:
        png = fetch(f"{url}/get-artifact?path=dataset/preview.png&run_uuid={data_run.info.run_id}")
        assert png[:4] == b"\x89PNG"
        with browser_page() as page:
            page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs/{data_run.info.run_id}/artifacts/dataset/preview.png")
            image = page.locator("img[src^='blob:']").first  # the artifact view shows what it fetched
            image.wait_for()
            assert image.evaluate("img => img.complete && img.naturalWidth") > 0
            hide_mlflow_assistant(page)
            page.screenshot(path=test_artifacts / "mlflow-stack-artifact.png")
