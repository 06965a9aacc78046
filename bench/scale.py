"""Scale-out on one machine (issue 16): training samples/s by workers and nodes, recovery from a
lost node, checkpoint throughput to the object store.

Starts the local cluster of tests/test_scale.py once (`local_cluster.LocalCluster`, the same class): moto's
S3 server, PostgreSQL with an MLflow server on it (artifacts on S3), a Ray head and a second Ray
node with one CPU each. This process is the driver and runs the ordinary pipeline (the
`train-autoencoder` flow of the smoke preset, the autoencoder stage forced every time) pointed at
them by settings alone: RAY_ADDRESS, MLFLOW_TRACKING_URI, MILLIVID_STORAGE_ROOT=s3://..., AWS_*.

- checkpoint: a torch state dict of random float32 tensors (64 MB; 16 MB with --quick) written to
  and read from s3:// through `millivid.storage` (fsspec/s3fs, what stages hand over) and through
  Ray Train's own checkpoint upload/download (pyarrow over the same fsspec filesystem); MB/s, best
  of the repeats. moto keeps objects in memory: an upper bound for a real store on this machine.
- training: samples/s of the autoencoder stage, from the `train/steps_per_s` the training loop
  logs (steps between the first and the last log step over the time between them, so Ray Train's
  start-up and the first steps are left out) times the global batch (`batch_size` is summed over
  workers: 2 workers each take half). 1 worker; 2 workers on one node (0.5 CPU each, so both fit
  on one node); 2 workers on two nodes (1 CPU each, so they cannot share one). Every worker uses
  one torch thread. The nodes the ranks ran on come from the run's `millivid.ray_node.rank*` tags.
- recovery (not with --quick): the 2-worker, 2-node run again; once metrics up to step
  `KILL_AFTER_STEP` are published, the second node's raylet gets SIGKILL and a replacement node is
  started at once (what an autoscaler does, minus the machine's boot). Seconds from the kill to the
  replacement node, and to the first metric step published after it (metrics are published with
  each checkpoint, every 5 steps here), and the stage's extra time over the unkilled run.

Everything it starts is stopped by process group, and its temporary folders are removed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from millivid_platform import local_cluster

BUCKET = "millivid-bench"
HEAD_IP, NODE_IP = "127.0.0.12", "127.0.0.13"  # not the scale tests' 127.0.0.2/.3
NODE_CPUS = 1
LOG_EVERY = 5  # also the checkpoint interval: metrics are published with each checkpoint
KILL_AFTER_STEP = 15
PUBLISHED = "train/published_step"  # training.MARKER_KEY
NODE_TAG = "millivid.ray_node.rank"  # training.TAG_NODE_PREFIX
SCENARIOS = {  # name -> (workers, CPUs per worker), on nodes of NODE_CPUS CPUs each
    "1_worker_1_node": (1, 1.0),
    "2_workers_1_node": (2, 0.5),
    "2_workers_2_nodes": (2, 1.0),
}
QUICK_SCENARIOS = ("1_worker_1_node", "2_workers_2_nodes")


def run(quick: bool = False) -> dict:
    started = time.perf_counter()
    load_start = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="millivid-bench-scale-"))
    cleanups: list = []  # run last to first
    saved_environment = dict(os.environ)
    # What goes to stdout while the cluster runs (Ray relays its workers' output to the driver's
    # stdout, MLflow prints links) goes to stderr: `millivid bench scale --json` prints one document.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            os.environ.update(local_cluster.ray_environment())  # before anything imports ray
            os.environ.pop("PREFECT_API_URL", None)  # Prefect's temporary server, in the folder
            result = measure(quick, folder, cleanups)
    except BaseException:
        for name in ("moto", "mlflow", "ray-head", "ray-node", "ray-node-replacement"):
            log = folder / f"{name}.log"
            if log.exists():
                print(f"--- {log.name} (last lines)\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        raise
    finally:
        for cleanup in reversed(cleanups):
            with contextlib.suppress(BaseException):  # a second Ctrl-C must not leave the rest running
                cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.clear()
        os.environ.update(saved_environment)
    result["machine"] = {**machine(), "loadavg_1_5_15_start": [round(x, 2) for x in load_start],
                         "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()]}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def measure(quick: bool, folder: Path, cleanups: list) -> dict:
    started = time.perf_counter()
    cluster = local_cluster.LocalCluster(folder, BUCKET, HEAD_IP, NODE_IP, NODE_CPUS)
    cleanups.append(cluster.stop)
    cluster.start_object_store()
    os.environ.update({**cluster.store.environment(), "MILLIVID_STORAGE_ROOT": cluster.storage_root,
                       "MILLIVID_WORKSPACE": str(folder / "workspace")})
    from millivid_platform.object_store import ObjectStoreSettings

    ObjectStoreSettings().export_environment()
    checkpoint = checkpoint_throughput(cluster.storage_root, megabytes=16 if quick else 64, repeats=1 if quick else 2)

    cluster_started = time.perf_counter()
    cluster.start_tracking_and_ray()
    os.environ.update(cluster.environment())
    startup_s = time.perf_counter() - cluster_started

    driver_started = time.perf_counter()
    start_driver(cleanups)
    driver_s = time.perf_counter() - driver_started

    steps = 10 if quick else 60
    results: dict[str, Any] = {}
    for name in QUICK_SCENARIOS if quick else SCENARIOS:
        workers, cpus = SCENARIOS[name]
        stage = train_stage(overrides(steps, workers, cpus))
        results[name] = {"workers": workers, "cpus_per_worker": cpus, **training_numbers(cluster.client(), stage, steps)}
    base = results["1_worker_1_node"]["samples_per_s"]
    for entry in results.values():
        entry["samples_per_s_vs_1_worker"] = round(entry["samples_per_s"] / base, 3)
    recovery = {"skipped": "--quick"} if quick else kill_and_recover(cluster, steps, results["2_workers_2_nodes"])
    return {
        "benchmark": "scale",
        "quick": quick,
        "cluster": {
            "ray_nodes": {"head": f"{HEAD_IP}, {NODE_CPUS} CPU", "node": f"{NODE_IP}, {NODE_CPUS} CPU"},
            "object_store": "moto_server (S3 API, objects in memory) on 127.0.0.1",
            "tracking": "mlflow server on PostgreSQL, artifacts on S3",
            "startup_s": round(startup_s, 1),
            "driver_connect_s": round(driver_s, 1),
            "s3_and_checkpoint_s": round(cluster_started - started, 1),
        },
        "checkpoint": checkpoint,
        "training": {
            "stage": "autoencoder (smoke preset)",
            "steps": steps,
            "batch_size": 8,
            "measured_between_steps": [LOG_EVERY, steps],
            "scenarios": results,
        },
        "recovery": recovery,
    }


# --- checkpoint throughput -------------------------------------------------------------------


def checkpoint_throughput(root: str, megabytes: int = 64, repeats: int = 2) -> dict:
    """Write and read a `megabytes` torch state dict under `root` (any fsspec URI; s3:// here):
    with `millivid.storage` (the bytes of `torch.save`) and with Ray Train's checkpoint upload and
    download of a folder holding it. MB/s (1e6 bytes), best of `repeats`; the objects are removed."""
    import torch
    from ray.train._internal.storage import _download_from_fs_path, _upload_to_fs_path

    from millivid import storage
    from millivid_platform.compute import pyarrow_filesystem

    generator = torch.Generator().manual_seed(0)
    state = {"model": {f"block{i}.weight": torch.randn(1024, 1024, generator=generator) for i in range(max(1, megabytes // 4))},
             "step": 1}
    seconds: dict[str, list[float]] = {key: [] for key in ("serialize", "write", "read", "deserialize", "ray_upload", "ray_download")}

    def timed(key: str, fn):
        begin = time.perf_counter()
        value = fn()
        seconds[key].append(time.perf_counter() - begin)
        return value

    size = 0
    with tempfile.TemporaryDirectory(prefix="millivid-bench-checkpoint-") as local:
        for repeat in range(repeats):
            uri = storage.join(root, f"bench-checkpoint-{os.getpid()}-{repeat}")
            try:
                buffer = io.BytesIO()
                timed("serialize", lambda buffer=buffer: torch.save(state, buffer))
                data = buffer.getvalue()
                size = len(data)
                timed("write", lambda uri=uri, data=data: storage.write_bytes(storage.join(uri, "state.pt"), data))
                back = timed("read", lambda uri=uri: storage.read_bytes(storage.join(uri, "state.pt")))
                loaded = timed("deserialize", lambda back=back: torch.load(io.BytesIO(back), map_location="cpu", weights_only=True))
                if not torch.equal(loaded["model"]["block0.weight"], state["model"]["block0.weight"]):
                    raise AssertionError(f"{uri}: the state read back differs from the one written")
                upload = Path(local) / f"upload-{repeat}"
                upload.mkdir()
                (upload / "state.pt").write_bytes(data)
                fs, path = pyarrow_filesystem(storage.join(uri, "ray"))
                timed("ray_upload", lambda fs=fs, path=path, upload=upload: _upload_to_fs_path(str(upload), fs, path))
                download = Path(local) / f"download-{repeat}"
                timed("ray_download", lambda fs=fs, path=path, download=download: _download_from_fs_path(fs, path, str(download), filelock=False))
                if (download / "state.pt").stat().st_size != size:
                    raise AssertionError(f"{uri}: Ray Train's download has {(download / 'state.pt').stat().st_size} bytes, not {size}")
                shutil.rmtree(upload)
                shutil.rmtree(download)
            finally:
                with contextlib.suppress(Exception):
                    storage.remove(uri, recursive=True)
    mb = size / 1e6
    return {"root": root, "megabytes": round(mb, 1), "repeats": repeats,
            **{f"{key}_mb_per_s": round(mb / min(values), 1) for key, values in seconds.items()}}


# --- the driver --------------------------------------------------------------


def start_driver(cleanups: list) -> None:
    """What `millivid pipeline` does before its flow: settings, Ray, Prefect's temporary server."""
    from millivid_platform import embedded_prefect
    from millivid_platform.compute import ensure_ray, shutdown_ray
    from millivid_platform.settings import load_settings

    settings = load_settings()
    settings.export_environment()
    cleanups.append(shutdown_ray)  # before the nodes stop (cleanups run last to first)
    ensure_ray(settings)
    cleanups.append(stop_prefect_server)
    embedded_prefect.start(settings)


def stop_prefect_server() -> None:
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()  # the instance `embedded_prefect.start` started


def overrides(steps: int, workers: int, cpus: float) -> list[str]:
    return [f"autoencoder.train.steps={steps}", f"autoencoder.train.log_every={LOG_EVERY}",
            f"autoencoder.train.checkpoint_every={LOG_EVERY}", f"autoencoder.train.eval_every={steps}",
            f"compute.workers={workers}", f"compute.cpus_per_worker={cpus:g}", "compute.torch_threads=1"]


def train_stage(stage_overrides: list[str]):
    """The `train-autoencoder` flow, as `millivid pipeline --until autoencoder --force autoencoder`
    runs it; returns the autoencoder's `StageResult`."""
    from millivid_flows import pipeline as flows
    from millivid_platform.pipeline import PipelineParams

    params = PipelineParams(preset="smoke", overrides=stage_overrides, force=["autoencoder"])
    state = flows.train_autoencoder(params, return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"train-autoencoder {params.label}: {state.type.value} {state.message}")
    return state.result()["autoencoder"]["hierarchical"]


def training_numbers(client, stage, steps: int) -> dict:
    """Steps/s between the first and the last log step (elapsed time at a log step = its step over
    the `train/steps_per_s` logged there: the loop's rate since it started), samples/s, placement."""
    history = sorted(client.get_metric_history(stage.run_id, "train/steps_per_s"), key=lambda m: m.step)
    first, last = history[0], history[-1]
    steps_per_s = (last.step - first.step) / (last.step / last.value - first.step / first.value)
    batch_size = int(client.get_run(stage.run_id).data.params.get("autoencoder.train.batch_size", 8))
    tags = client.get_run(stage.run_id).data.tags
    ranks = {key: value for key, value in tags.items() if key.startswith(NODE_TAG)}
    return {
        "steps_per_s": round(steps_per_s, 2),
        "samples_per_s": round(steps_per_s * batch_size, 1),
        "nodes_used": len(set(ranks.values())),
        "stage_s": round(stage.seconds, 1),
        "train_s": seconds_tag(tags),
        "run_id": stage.run_id,
        "steps": steps,
    }


def seconds_tag(tags: dict[str, str]) -> float | None:
    value = tags.get("millivid.train_seconds")  # training.TAG_TRAIN_SECONDS
    return float(value) if value else None


# --- a lost node ------------------------------------------------------------------------------


class NodeKiller(threading.Thread):
    """Once a running autoencoder stage has published step `after_step`, SIGKILL the second node's
    raylet and start a replacement node."""

    def __init__(self, cluster: local_cluster.LocalCluster, after_step: int):
        super().__init__(name="node-killer", daemon=True)
        self.cluster, self.after_step = cluster, after_step
        self.done = threading.Event()
        self.run_id = self.error = None
        self.killed_at = self.replaced_at = 0.0
        self.step_at_kill = 0

    def run(self) -> None:
        try:
            client = self.cluster.client()
            experiment = client.get_experiment_by_name("millivid").experiment_id
            while not self.done.is_set():
                for run in client.search_runs([experiment], "tags.`millivid.stage` = 'autoencoder' and attributes.status = 'RUNNING'"):
                    history = client.get_metric_history(run.info.run_id, PUBLISHED)
                    if history and max(m.step for m in history) >= self.after_step:
                        self.run_id, self.step_at_kill = run.info.run_id, int(max(m.step for m in history))
                        raylet = local_cluster.raylet_pid(self.cluster.node)
                        self.killed_at = time.time()
                        os.kill(raylet, signal.SIGKILL)  # the second machine is gone
                        self.cluster.replace_node("node-replacement")
                        self.replaced_at = time.time()
                        return
                time.sleep(0.5)
        except BaseException as err:  # reported by kill_and_recover
            self.error = err


def kill_and_recover(cluster: local_cluster.LocalCluster, steps: int, unkilled: dict) -> dict:
    killer = NodeKiller(cluster, KILL_AFTER_STEP)
    killer.start()
    try:
        stage = train_stage(overrides(steps, 2, 1.0))
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    finally:
        killer.done.set()
        killer.join(timeout=120)
    if killer.error is not None or not killer.killed_at:
        return {"error": f"no node was killed: {killer.error!r}" if killer.error else "training finished before a node was killed",
                "stage_s": round(stage.seconds, 1)}
    client = cluster.client()
    published = sorted(client.get_metric_history(stage.run_id, PUBLISHED), key=lambda m: m.timestamp)
    after = [m for m in published if m.timestamp / 1000 > killer.killed_at]
    tags = client.get_run(stage.run_id).data.tags
    steps_logged = sorted(m.step for m in client.get_metric_history(stage.run_id, "train/loss"))
    return {
        "killed": "raylet of the second node (SIGKILL); a replacement node started right after",
        "same_mlflow_run": stage.run_id == killer.run_id,
        "step_published_at_kill": killer.step_at_kill,
        "kill_to_replacement_node_s": round(killer.replaced_at - killer.killed_at, 1),
        "first_step_published_after_kill": int(after[0].step) if after else None,
        "kill_to_next_published_step_s": round(after[0].timestamp / 1000 - killer.killed_at, 1) if after else None,
        "stage_s": round(stage.seconds, 1),
        "unkilled_stage_s": unkilled["stage_s"],
        "overhead_s": round(stage.seconds - unkilled["stage_s"], 1),
        "overhead_fraction": round(stage.seconds / unkilled["stage_s"] - 1, 3),
        "train_s": seconds_tag(tags),  # summed over the attempts
        "nodes_after": len({value for key, value in tags.items() if key.startswith(NODE_TAG)}),
        "each_loss_step_once": steps_logged == list(range(LOG_EVERY, steps + 1, LOG_EVERY)),
        "run_id": stage.run_id,
    }


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    import torch

    return {"cpus": os.cpu_count(), "cpu_model": model, "gpu": torch.cuda.is_available(), "torch_device": "cpu"}
