"""Scale-out on one machine (issue 16): two Ray nodes started with `ray start`, S3 (moto) as the
storage root and MLflow's artifact store, MLflow on PostgreSQL. The same `millivid pipeline` as on
a laptop, pointed at them by settings alone. Run alone with `make test ARGS="-m scale"`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import MILLIVID, REPO, prefect_cli, prefect_client

from millivid_platform import local_cluster

pytestmark = [pytest.mark.scale, pytest.mark.integration, pytest.mark.slow]

BUCKET = "millivid"
ROOT = f"s3://{BUCKET}/storage"  # LocalCluster.storage_root
HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[local_cluster.LocalCluster]:
    cluster = local_cluster.LocalCluster(tmp_path_factory.mktemp("scale"), BUCKET, HEAD_IP, NODE_IP)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def client_env(cluster: local_cluster.LocalCluster) -> dict[str, str]:
    """The environment of a driver (or a Prefect worker) on the cluster: this one's plus the cluster's settings."""
    return {**os.environ, **cluster.environment()}


def pipeline(cluster: local_cluster.LocalCluster, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([MILLIVID, "pipeline", "--config", "smoke", "--until", "autoencoder", "--json", *overrides],
                            env={**client_env(cluster), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, timeout: float = 900) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return {**json.loads(out), "stderr": err}


def stage(result: dict, name: str) -> dict:
    """A stage's entry in `millivid pipeline --json` (the autoencoder's is by variant)."""
    entry = result["stages"][name]
    return entry["hierarchical"] if name == "autoencoder" else entry


def stage_run(cluster: local_cluster.LocalCluster, run_id: str):
    return cluster.client().get_run(run_id)


def assert_each_step_once(cluster: local_cluster.LocalCluster, run_id: str, every: int, last: int) -> None:
    """Every training metric has each log step exactly once, from the first to the last."""
    client = cluster.client()
    keys = [key for key in client.get_run(run_id).data.metrics if key.startswith("train/") and key != "train/wall_seconds_total"]
    assert "train/loss" in keys, keys
    for key in keys:
        steps = Counter(m.step for m in client.get_metric_history(run_id, key))
        assert all(count == 1 for count in steps.values()), (key, steps)
        if key.endswith("loss"):
            assert sorted(steps) == list(range(every, last + 1, every)), (key, sorted(steps))


def s3():
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"], key="testing", secret="testing")


@contextlib.contextmanager
def prefect_worker(cluster: local_cluster.LocalCluster, folder: Path) -> Iterator[dict[str, str]]:
    """A Prefect server on the cluster's PostgreSQL, a process work pool, prefect.yaml's
    train-autoencoder deployment and a worker whose environment is the cluster's (as on a cluster
    node: RAY_ADDRESS, MLFLOW_TRACKING_URI, MILLIVID_STORAGE_ROOT); yields the clients' environment."""
    cluster.postgres.create_database("prefect")
    api, server = local_cluster.prefect_server(folder, cluster.postgres.uri("prefect", driver="asyncpg"))
    worker = None
    try:
        env = {**client_env(cluster), "PREFECT_API_URL": api}
        prefect_cli(env, folder, "work-pool", "create", "millivid", "--type", "process")
        prefect_cli(env, folder, "--no-prompt", "deploy", "--name", "train-autoencoder", "--prefect-file", str(REPO / "prefect.yaml"))
        worker = local_cluster.start("prefect-worker", [str(local_cluster.BIN / "prefect"), "worker", "start", "--pool", "millivid"],
                                     folder, {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"})
        yield env
    finally:
        for process in (worker, server):
            if process is not None:
                process.stop()


def stage_runs_of_flow_run(cluster: local_cluster.LocalCluster, flow_run_id: str) -> dict[str, object]:
    """The MLflow stage runs a Prefect flow run made, by stage."""
    client = cluster.client()
    experiment = client.get_experiment_by_name("millivid")
    runs = client.search_runs([experiment.experiment_id], f"tags.`millivid.prefect_flow_run` = '{flow_run_id}'")
    return {run.data.tags["millivid.stage"]: run for run in runs if "millivid.stage" in run.data.tags}


def parent_run(cluster: local_cluster.LocalCluster, run_id: str):
    """The pipeline's MLflow run that a stage's run `run_id` is nested in."""
    client = cluster.client()
    return client.get_run(client.get_run(run_id).data.tags["mlflow.parentRunId"])


def assert_overlap(cli_run, worker_run) -> None:
    """The two pipelines' MLflow parent runs (each open from the pipeline's start to its end) overlap in time."""
    spans = {name: (run.info.start_time, run.info.end_time) for name, run in (("cli", cli_run), ("worker", worker_run))}
    assert all(end is not None for _, end in spans.values()), spans
    (cli_start, cli_end), (worker_start, worker_end) = spans["cli"], spans["worker"]
    assert cli_start < worker_end and worker_start < cli_end, (
        f"the pipelines ran one after the other, not at once: command line {cli_start}-{cli_end} ms, "
        f"Prefect worker {worker_start}-{worker_end} ms (MLflow parent runs' start/end times)")


def test_a_cli_pipeline_and_a_worker_deployment_at_once_train_on_both_nodes_and_hand_over_s3_uris(cluster, tmp_path, monkeypatch):
    """At once: `millivid pipeline` from the command line, and prefect.yaml's train-autoencoder
    deployment run by a Prefect worker (both flow runs on one Prefect server on PostgreSQL) — each training the autoencoder
    with 2 workers on the Ray cluster. MLflow on PostgreSQL gets every step of both once; the ranks ran
    on different nodes; every output is an s3:// URI. The two trainings run one after the other
    (each needs both 1-CPU nodes), the two pipeline runs overlap in time."""
    with prefect_worker(cluster, tmp_path) as env:
        # started once the worker is up, so that both run at once; its flow run is on the same Prefect server
        from_cli = pipeline(cluster, "compute.workers=2", env={"PREFECT_API_URL": env["PREFECT_API_URL"]})
        try:
            flow_run = prefect_client(env, "run", "train-autoencoder/train-autoencoder",
                                      json.dumps({"params": {"preset": "smoke", "overrides": ["compute.workers=2", "autoencoder.train.lr=2e-3"]}}))
            # the command line's flow run reports to this Prefect server until it ends: wait for it before the server stops
            cli_result = finished(from_cli)
        finally:
            if from_cli.poll() is None:
                from_cli.kill()
    assert flow_run["state"] == "COMPLETED", (flow_run, (tmp_path / "prefect-worker.log").read_text()[-3000:])
    from_worker = stage_runs_of_flow_run(cluster, flow_run["id"])
    assert set(from_worker) >= {"data", "autoencoder"}, from_worker
    cli_parent = parent_run(cluster, stage(cli_result, "autoencoder")["run_id"])
    assert_overlap(cli_parent, parent_run(cluster, from_worker["autoencoder"].info.run_id))
    server_ui = env["PREFECT_API_URL"].removesuffix("/api")
    assert cli_parent.data.tags["millivid.prefect_flow_run_url"].startswith(f"{server_ui}/runs/flow-run/"), cli_parent.data.tags
    outputs = {("cli", name): stage(cli_result, name)["outputs"] for name in ("data", "autoencoder")}
    outputs |= {("worker", name): json.loads(from_worker[name].data.tags["millivid.outputs"]) for name in ("data", "autoencoder")}
    monkeypatch.setenv("AWS_ENDPOINT_URL", cluster.store.endpoint)
    fs = s3()
    for where, stage_outputs in outputs.items():
        uris = [value for key, value in stage_outputs.items() if key.endswith("_uri")]
        assert uris and all(uri.startswith(f"{ROOT}/") for uri in uris), (where, stage_outputs)  # nothing that lives on one node
        assert all(fs.exists(uri) for uri in uris), (where, stage_outputs)
    run_ids = {stage(cli_result, "autoencoder")["run_id"], from_worker["autoencoder"].info.run_id}
    assert len(run_ids) == 2
    for run_id in run_ids:
        run = stage_run(cluster, run_id)
        assert run.info.status == "FINISHED"
        nodes = {run.data.tags[f"millivid.ray_node.rank{rank}"] for rank in (0, 1)}
        assert len(nodes) == 2, run.data.tags  # each node has one CPU: the two ranks cannot share one
        assert_each_step_once(cluster, run.info.run_id, every=5, last=20)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server to S3:
        assert fs.exists(f"{BUCKET}/mlartifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/model/model.pt")
    params = stage_run(cluster, from_worker["autoencoder"].info.run_id).data.params
    assert float(params["autoencoder.train.lr"]) == 2e-3, {key: value for key, value in params.items() if "lr" in key}
    assert fs.glob(f"{BUCKET}/storage/checkpoints/autoencoder-*/checkpoint_*/state.pt")  # Ray Train's checkpoints on S3


def test_evaluation_tasks_spread_over_both_nodes(cluster):
    """`compute.map_tasks`, which the evaluation stage splits its examples with, uses every node."""
    code = ("import json, ray; from millivid_platform.compute import ensure_ray, map_tasks;"
            "from millivid_platform.settings import load_settings; ensure_ray(load_settings());"
            "nodes = map_tasks(lambda i: (__import__('time').sleep(2), ray.get_runtime_context().get_node_id())[1], list(range(4)));"
            "print(json.dumps({'tasks': nodes, 'alive': [n['NodeID'] for n in ray.nodes() if n['Alive']]}))")
    result = subprocess.run([sys.executable, "-c", code], env=client_env(cluster), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    placed = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(placed["tasks"]) == set(placed["alive"]) and len(placed["alive"]) == 2, placed


def training_run_under_way(cluster: local_cluster.LocalCluster, process: subprocess.Popen, timeout: float = 600) -> str:
    """The id of the pipeline's autoencoder run, once its first durable checkpoint's metrics are in MLflow."""
    client = cluster.client()
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        experiment = client.get_experiment_by_name("millivid")  # None until the pipeline creates it
        runs = client.search_runs([experiment.experiment_id], "tags.`millivid.stage` = 'autoencoder' and attributes.status = 'RUNNING'") if experiment else []
        published = [(run, client.get_metric_history(run.info.run_id, "train/published_step")) for run in runs]
        ready = [run for run, history in published if history and max(m.step for m in history) >= 10]
        if ready:
            return ready[0].info.run_id
        time.sleep(1)
    raise AssertionError("training never published a checkpoint's metrics")


def test_a_killed_node_resumes_training_in_the_same_run_with_every_step_once(cluster):
    # enough steps that training is still under way when the node dies (60 could finish between the
    # first published checkpoint and the kill on an idle machine)
    process = pipeline(cluster, "compute.workers=2", "autoencoder.train.steps=200", "autoencoder.train.lr=3e-3")
    run_id = training_run_under_way(cluster, process)
    client = cluster.client()
    placed_before = {value for key, value in client.get_run(run_id).data.tags.items() if key.startswith("millivid.ray_node.rank")}
    os.kill(local_cluster.raylet_pid(cluster.node), signal.SIGKILL)  # the second machine is gone
    cluster.replace_node("node-replacement")
    result = finished(process)
    assert stage(result, "autoencoder")["run_id"] == run_id  # the same MLflow run finished
    run = stage_run(cluster, run_id)
    assert run.info.status == "FINISHED"
    placed_after = {value for key, value in run.data.tags.items() if key.startswith("millivid.ray_node.rank")}
    assert len(placed_after) == 2 and placed_after - placed_before, (placed_before, placed_after)  # restarted, on the new node
    assert_each_step_once(cluster, run_id, every=5, last=200)


def test_an_mlflow_server_restart_mid_training_loses_no_step(cluster):
    """The tracking server goes away for a while as rank 0 publishes metrics and the driver tags its
    runs: MLflow's client retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, with backoff) and the run
    finishes in place with every step once; nothing is written twice when the server comes back."""
    process = pipeline(cluster, "autoencoder.train.steps=150", "autoencoder.train.lr=5e-3")
    run_id = training_run_under_way(cluster, process)
    published = max(m.step for m in cluster.client().get_metric_history(run_id, "train/published_step"))
    cluster.restart_mlflow(down_seconds=5)
    assert published < 150, "training was over before the server went away: nothing was tested"
    result = finished(process)
    assert stage(result, "autoencoder")["run_id"] == run_id
    assert stage_run(cluster, run_id).info.status == "FINISHED"
    assert_each_step_once(cluster, run_id, every=5, last=150)


def test_an_unreachable_object_store_fails_after_retries_with_a_clear_error(cluster):
    dead = f"http://127.0.0.1:{local_cluster.free_port()}"
    started = time.monotonic()
    process = pipeline(cluster, "autoencoder.train.lr=4e-3",
                       env={"AWS_ENDPOINT_URL": dead, "MLFLOW_S3_ENDPOINT_URL": dead, "MILLIVID_OBJECT_STORE_MAX_ATTEMPTS": "3"})
    out, err = process.communicate(timeout=600)
    assert process.returncode != 0
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert message and f"the object store at {dead} (AWS_ENDPOINT_URL)" in message[0], err[-3000:]
    assert "after 3 attempts" in message[0] and "MILLIVID_STORAGE_ROOT" in message[0]
    assert "Traceback" not in err
    assert time.monotonic() - started < 300
    client = cluster.client()  # it failed before creating anything: no run half-recorded
    experiment = client.get_experiment_by_name("millivid")
    labels = {run.data.tags.get("millivid.run_label", "") for run in client.search_runs([experiment.experiment_id])}
    assert not any("4e-3" in label or "0.004" in label for label in labels), labels
