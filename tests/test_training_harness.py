"""The generic training loop in-process, and on real Ray Train workers with real MLflow."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import descendants
from torch import nn

from millivid.schema import ComputeConfig, TrainConfig
from millivid.training import Evaluation, Hooks, fit, learning_rate
from millivid_platform.stack import command_line

TARGET = torch.tensor([[1.5, -2.0, 0.5]])


class LinearTask:
    """y = x @ TARGET.T: small enough to train in milliseconds, deterministic per (seed, step, rank)."""

    def __init__(self, seed: int = 0, step_delay: float = 0.0):
        self.seed = seed
        self.step_delay = step_delay  # lets a test kill the run mid-way

    def build_model(self) -> nn.Module:
        return nn.Linear(3, 1, bias=False)

    def batch(self, step, rank, world_size, device):
        time.sleep(self.step_delay)
        generator = torch.Generator().manual_seed(self.seed * 100_000 + step * 100 + rank)
        x = torch.randn(8, 3, generator=generator)
        return x.to(device), (x @ TARGET.T).to(device)

    def loss(self, model, batch, generator):
        x, y = batch
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
        return loss, {"train/abs_error": float((model(x).float() - y).abs().mean().detach())}

    def evaluate(self, model, device):
        weight_error = float((model.weight.float().cpu() - TARGET).abs().max())
        return Evaluation({"weight_error": weight_error}, {"dummy": b"\x89PNG"})


def train_config(**overrides) -> TrainConfig:
    base = dict(steps=60, batch_size=8, lr=0.1, warmup_steps=5, checkpoint_every=20, log_every=10, eval_every=30)
    return TrainConfig(**{**base, **overrides})


def test_fit_learns_and_checkpoints_in_process():
    states = []
    model = fit(LinearTask(), train_config(), precision="fp32", hooks=Hooks(checkpoint=lambda step, state: states.append(state)))
    assert float((model.weight.detach() - TARGET).abs().max()) < 0.2
    assert [s["step"] for s in states] == [20, 40, 60]
    logged = [step for state in states for step, _ in state["metrics"]]
    assert logged == [10, 20, 30, 30, 40, 50, 60, 60]  # eval rows at 30 and 60


def test_resume_from_state_follows_the_same_trajectory():
    cfg = train_config()
    straight = fit(LinearTask(), cfg, precision="fp32")
    states = {}
    fit(LinearTask(), cfg.model_copy(update={"steps": 60}), precision="fp32",
        hooks=Hooks(checkpoint=lambda step, state: states.__setitem__(step, state)))
    resumed = fit(LinearTask(), cfg, precision="fp32", state=states[40])
    assert torch.equal(straight.weight, resumed.weight)


def test_stop_hook_pauses_at_a_log_step_and_resuming_matches_one_straight_run():
    cfg = train_config()  # log every 10, checkpoint every 20, evaluate every 30, 60 steps
    delay = 0.01  # per step, so that each run's share of the summed wall time is measurable
    straight = fit(LinearTask(), cfg, precision="fp32")
    asked, first = [], []

    def stop(step):
        asked.append(step)
        return step >= 30

    fit(LinearTask(0, delay), cfg, precision="fp32",
        hooks=Hooks(stop=stop, checkpoint=lambda step, state: first.append(state)))
    assert asked == [10, 20, 30]  # only at log steps, so no logged window is cut short
    assert [s["step"] for s in first] == [20, 30]  # 30 is no checkpoint step: stopping adds one
    second = []
    resumed = fit(LinearTask(0, delay), cfg, precision="fp32", state=first[-1],
                  hooks=Hooks(checkpoint=lambda step, state: second.append(state)))
    assert torch.equal(straight.weight, resumed.weight)
    logged = [step for state in first + second for step, _ in state["metrics"]]
    assert logged == [10, 20, 30, 30, 40, 50, 60, 60]
    assert second[-1]["train_seconds"] >= first[-1]["train_seconds"] + 30 * delay  # summed over both runs


def test_learning_rate_schedule():
    cfg = train_config(lr=1.0, warmup_steps=10, steps=110)
    assert learning_rate(cfg, 5) == pytest.approx(0.5)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 110) == pytest.approx(0.1)


def test_bf16_autocast_runs():
    model = fit(LinearTask(), train_config(), precision="bf16")
    assert float((model.weight.detach() - TARGET).abs().max()) < 0.2


def make_job(root: str, run_id: str | None, tracking_uri: str | None, workers: int = 1, steps: int = 60,
             name: str = "toy", step_delay: float = 0.0, deadline: float | None = None):
    from millivid_platform.training import TrainingJob

    return TrainingJob(
        stage="toy",
        make_task=functools.partial(LinearTask, 0, step_delay),
        train=train_config(steps=steps),
        compute=ComputeConfig(workers=workers, cpus_per_worker=0.5, precision="fp32"),
        checkpoint_root=root,
        run_name=name,
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        deadline=deadline,
    )


def test_a_stage_run_gives_its_job_the_checkpoints_mlflow_run_and_deadline(settings):
    from millivid_platform.stages import StageRun
    from millivid_platform.training import TrainingJob

    run = StageRun(stage="diffusion:millivid", key="k1", run_id="r1", settings=settings, attempt="a1", deadline=12.5)
    compute = ComputeConfig(precision="fp32")
    job = TrainingJob.for_stage(run, LinearTask, train_config(), compute)
    assert (job.stage, job.make_task, job.train, job.compute) == ("diffusion:millivid", LinearTask, train_config(), compute)
    assert (job.checkpoint_root, job.run_name) == (run.checkpoint_root, "diffusion-millivid-k1-a1")
    assert (job.mlflow_run_id, job.tracking_uri, job.deadline) == ("r1", settings.resolved_tracking_uri, 12.5)


def metric_steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    import mlflow

    return [m.step for m in mlflow.MlflowClient(tracking_uri).get_metric_history(run_id, key)]


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_train_logs_each_step_once(ray_session, mlflow_store, settings, tmp_path, workers):
    from millivid_platform import tracking
    from millivid_platform.training import run_training

    uri = settings.resolved_tracking_uri
    run_id = tracking.create_run(mlflow_store, f"toy-{workers}", "toy")
    result = run_training(make_job(str(tmp_path / "ckpt"), run_id, uri, workers=workers, name=f"toy{workers}"))
    assert result.state["step"] == 60
    weight = result.state["model"]["weight"]
    assert float((weight - TARGET).abs().max()) < 0.2
    assert metric_steps(uri, run_id, "train/loss") == [10, 20, 30, 40, 50, 60]
    assert metric_steps(uri, run_id, "eval/weight_error") == [30, 60]
    # rerunning a finished job resumes at its last checkpoint: nothing new is trained or logged
    again = run_training(make_job(str(tmp_path / "ckpt"), run_id, uri, workers=workers, name=f"toy{workers}"))
    assert torch.equal(again.state["model"]["weight"], weight)
    assert metric_steps(uri, run_id, "train/loss") == [10, 20, 30, 40, 50, 60]


@pytest.mark.integration
def test_deadline_pauses_every_rank_at_a_checkpoint_and_a_rerun_continues(ray_session, mlflow_store, settings, tmp_path):
    """Two DDP ranks agree to stop at the first log step past the deadline; the rerun picks up there."""
    import mlflow

    from millivid_platform import tracking
    from millivid_platform.stages import StagePaused
    from millivid_platform.training import TAG_TRAIN_SECONDS, run_training

    uri = settings.resolved_tracking_uri
    run_id = tracking.create_run(mlflow_store, "toy-deadline", "toy")
    delay = 0.05  # per step: the cumulative wall time below must grow by at least this much per step
    job = make_job(str(tmp_path / "ckpt"), run_id, uri, workers=2, name="toy-deadline", step_delay=delay,
                   deadline=time.time())
    with pytest.raises(StagePaused) as paused:
        run_training(job)
    assert (paused.value.step, paused.value.total) == (10, 60)
    assert metric_steps(uri, run_id, "train/loss") == [10]  # the pause checkpoint's metrics are published

    result = run_training(dataclasses.replace(job, deadline=None))
    assert result.state["step"] == 60
    assert metric_steps(uri, run_id, "train/loss") == [10, 20, 30, 40, 50, 60]
    assert metric_steps(uri, run_id, "eval/weight_error") == [30, 60]
    wall = {m.step: m.value for m in mlflow.MlflowClient(uri).get_metric_history(run_id, "train/wall_seconds_total")}
    assert wall[20] >= wall[10] + 10 * delay  # the second run counts on from the first run's total
    assert result.state["train_seconds"] >= wall[60] >= 60 * delay
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    assert tags[TAG_TRAIN_SECONDS] == f"{result.state['train_seconds']:.0f}"


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_training_harness as t
from millivid_platform.compute import ensure_ray
from millivid_platform.settings import load_settings
from millivid_platform.training import run_training
ensure_ray(load_settings(num_cpus=2))
run_training(t.make_job({root!r}, {run_id!r}, {uri!r}, steps=200, step_delay=0.05))
print("DONE", flush=True)
"""


@pytest.mark.integration
@pytest.mark.slow
def test_killed_training_resumes_without_lost_or_repeated_steps(mlflow_store, settings, tmp_path):
    """SIGKILL the whole training process tree mid-run; a rerun resumes from the last checkpoint."""
    from millivid_platform import tracking

    uri = settings.resolved_tracking_uri
    run_id = tracking.create_run(mlflow_store, "toy-kill", "toy")
    script = KILL_SCRIPT.format(tests=str(Path(__file__).resolve().parent), root=str(tmp_path / "ckpt"), run_id=run_id, uri=uri)

    def launch() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    first = launch()
    deadline = time.time() + 240
    while max(metric_steps(uri, run_id, "train/published_step"), default=0) < 40:
        assert first.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = metric_steps(uri, run_id, "train/loss")
    assert 40 <= killed_at[-1] < 200

    second = launch()
    output, _ = second.communicate(timeout=300)
    assert "DONE" in output, output[-3000:]
    assert metric_steps(uri, run_id, "train/loss") == list(range(10, 201, 10))
    assert metric_steps(uri, run_id, "eval/weight_error") == [30, 60, 90, 120, 150, 180, 200]


def _mean_on_rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    from millivid.training import mean_across_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = mean_across_ranks({"loss": float(rank), "lr": 0.5}, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_mean_across_ranks_averages_every_metric_over_the_group():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_mean_on_rank, args=(port, results), nprocs=2)
        assert dict(results) == {0: {"loss": 0.5, "lr": 0.5}, 1: {"loss": 0.5, "lr": 0.5}}


def train_workers() -> list[int]:
    """This test process's Ray Train worker processes (its local cluster's; nobody else's)."""
    return [pid for pid in descendants(os.getpid()) if command_line(pid).startswith("ray::RayTrainWorker")]


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_training_finishes_in_the_same_run(ray_session, mlflow_store, settings, tmp_path):
    """SIGKILL one Ray Train worker mid-run: Ray Train restarts the group from the last checkpoint
    (compute.max_failures, default 2) and every step is logged once in the same MLflow run."""
    import threading

    from millivid_platform import tracking
    from millivid_platform.training import run_training

    uri = settings.resolved_tracking_uri
    run_id = tracking.create_run(mlflow_store, "toy-worker-kill", "toy")
    killed: list[int] = []

    def kill_a_worker_after_step_20() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            workers = train_workers()
            if workers and max(metric_steps(uri, run_id, "train/published_step"), default=0) >= 20:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_after_step_20, daemon=True)
    killer.start()
    result = run_training(make_job(str(tmp_path / "ckpt"), run_id, uri, steps=100, name="toy-worker-kill", step_delay=0.1))
    killer.join(timeout=5)
    assert killed, "no worker was killed: training ended first"
    assert result.state["step"] == 100
    assert metric_steps(uri, run_id, "train/loss") == list(range(10, 101, 10))
