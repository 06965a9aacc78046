"""Run a science `Task` on Ray Train: DDP workers, durable checkpoints, resume, MLflow logging.

The driver creates the stage's MLflow run and passes its id; rank 0 logs into it. Checkpoints go
to `checkpoint_root/run_name` on any fsspec filesystem; rerunning with the same pair resumes from
the latest checkpoint (Ray Train restores its checkpoint manager from storage). Metrics travel
inside checkpoints and are published once the checkpoint is durable, skipping steps MLflow
already has, so a killed and resumed run has no lost or repeated steps in its metric history.
A job with a deadline stops at the first log step past it, on every rank at once, checkpoints
there and raises `StagePaused`; the next run with the same pair continues from that checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from millivid.schema import ComputeConfig, TrainConfig
from millivid.training import Evaluation, Hooks, Task, fit, mean_across_ranks
from millivid_platform.ray_metrics import record_progress
from millivid_platform.stages import StagePaused, StageRun

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MARKER_KEY = "train/published_step"  # logged last with each batch: how far MLflow has the history
TAG_TRAIN_SECONDS = "millivid.train_seconds"  # training wall time summed over every run that resumed it
TAG_NODE_PREFIX = "millivid.ray_node.rank"  # + rank: the Ray node id that rank ran on


@dataclass(frozen=True)
class TrainingJob:
    """Everything a worker needs; pickled to the Ray Train workers."""

    stage: str
    make_task: Callable[[], Task]
    train: TrainConfig
    compute: ComputeConfig
    checkpoint_root: str
    run_name: str
    mlflow_run_id: str | None
    tracking_uri: str | None
    deadline: float | None = None  # time.time() at which training pauses (None: train to the end)

    @classmethod
    def for_stage(cls, run: StageRun, make_task: Callable[[], Task], train: TrainConfig,
                  compute: ComputeConfig) -> TrainingJob:
        """The job of a stage run: its checkpoints, MLflow run and deadline come from `run`."""
        return cls(
            stage=run.stage,
            make_task=make_task,
            train=train,
            compute=compute,
            checkpoint_root=run.checkpoint_root,
            run_name=run.checkpoint_name,
            mlflow_run_id=run.run_id,
            tracking_uri=run.settings.resolved_tracking_uri,
            deadline=run.deadline,
        )


@dataclass(frozen=True)
class TrainingResult:
    state: dict[str, Any]  # the final checkpoint's state (model, optimizer, step, metrics, train_seconds)
    checkpoint_uri: str


def run_training(job: TrainingJob) -> TrainingResult:
    """Train to `job.train.steps`; raises `StagePaused` when the deadline stopped it first."""
    from millivid_platform.compute import fit_torch

    result = fit_torch(
        worker_loop,
        {"job": job},
        job.compute,
        storage_uri=job.checkpoint_root,
        name=job.run_name,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"{job.stage}: training finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    if job.mlflow_run_id:
        tag_train_seconds(job, state)
    if state["step"] < job.train.steps:
        raise StagePaused(job.stage, int(state["step"]), job.train.steps)
    return TrainingResult(state=state, checkpoint_uri=result.checkpoint.path)


def tag_train_seconds(job: TrainingJob, state: dict[str, Any]) -> None:
    """After every invocation, paused or finished: on a finished run it is the whole training time."""
    import mlflow

    seconds = f"{state.get('train_seconds', 0.0):.0f}"  # checkpoints from before this field: 0
    mlflow.MlflowClient(tracking_uri=job.tracking_uri).set_tag(job.mlflow_run_id, TAG_TRAIN_SECONDS, seconds)


def worker_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch

    job: TrainingJob = config["job"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if job.mlflow_run_id:  # where each rank runs (the latest attempt's placement after a restart)
        import mlflow

        node = ray.get_runtime_context().get_node_id()
        mlflow.MlflowClient(tracking_uri=job.tracking_uri).set_tag(job.mlflow_run_id, f"{TAG_NODE_PREFIX}{rank}", node)
    torch.set_num_threads(job.compute.torch_threads or max(1, int(job.compute.cpus_per_worker)))
    publisher = MetricPublisher(job.mlflow_run_id, job.tracking_uri) if rank == 0 and job.mlflow_run_id else None
    state = load_checkpoint_state(ray.train.get_checkpoint())
    device = ray.train.torch.get_device()
    if state is not None:
        log.info("%s: resuming from step %d", job.stage, state["step"])
        if publisher:
            publisher.publish(state["metrics"])
    fit(
        job.make_task(),
        job.train,
        precision=job.compute.precision,
        device=device,
        hooks=Hooks(
            progress=lambda step, total, metrics: rank == 0 and log_progress(job.stage, step, total, metrics, job.train.batch_size),
            checkpoint=lambda step, new_state: report_checkpoint(new_state, rank, publisher),
            evaluation=lambda step, result: publisher and publisher.images(step, result),
            stop=deadline_check(job.deadline, world_size > 1),
        ),
        state=state,
        rank=rank,
        world_size=world_size,
        wrap=ray.train.torch.prepare_model if world_size > 1 else (lambda model: model),
        reduce=functools.partial(mean_across_ranks, device=device) if world_size > 1 else (lambda metrics: metrics),
        compile=job.compute.compile,
    )


def load_checkpoint_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def report_checkpoint(state: dict[str, Any], rank: int, publisher: MetricPublisher | None) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint, then publishes its metrics."""
    import ray.train

    metrics = {"step": state["step"]}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, os.path.join(folder, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    if publisher:
        publisher.publish(state["metrics"])


def deadline_check(deadline: float | None, distributed: bool) -> Callable[[int], bool]:
    """The loop's `stop` hook: the deadline has passed, on any rank's clock (so all ranks stop together)."""
    if deadline is None:
        return lambda step: False
    if not distributed:
        return lambda step: time.time() >= deadline
    return lambda step: true_on_any_rank(time.time() >= deadline)


def true_on_any_rank(flag: bool) -> bool:
    import ray.train.torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=ray.train.torch.get_device())  # nccl needs it on the GPU
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def log_progress(stage: str, step: int, total: int, metrics: dict[str, float], batch_size: int) -> None:
    shown = ", ".join(f"{key.split('/')[-1]}={value:.4g}" for key, value in sorted(metrics.items()) if key.startswith("train/"))
    log.info("%s step %d/%d (%.0f%%): %s", stage, step, total, 100 * step / total, shown)
    record_progress(stage, step, total, metrics, batch_size)  # Prometheus, for dashboards/grafana


class MetricPublisher:
    """Logs metric rows to one MLflow run exactly once, whatever restarts happen in between."""

    def __init__(self, run_id: str, tracking_uri: str | None):
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        history = self.client.get_metric_history(run_id, MARKER_KEY)
        self.published_until = max((m.step for m in history), default=0)

    def publish(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        import time

        from mlflow.entities import Metric

        fresh = [(step, values) for step, values in rows if step > self.published_until]
        if not fresh:
            return
        now = int(time.time() * 1000)
        last = max(step for step, _ in fresh)
        metrics = [Metric(key, float(value), now, step) for step, values in fresh for key, value in values.items()]
        metrics.append(Metric(MARKER_KEY, float(last), now, last))
        for start in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 500])
        self.published_until = last

    def images(self, step: int, evaluation: Evaluation) -> None:
        with tempfile.TemporaryDirectory() as folder:
            for name, png in evaluation.images.items():
                path = Path(folder) / f"{name}_step{step:07d}.png"
                path.write_bytes(png)
                self.client.log_artifact(self.run_id, str(path), "images")
