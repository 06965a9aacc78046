"""One training loop for every trained stage (autoencoder, diffusion), independent of Ray/MLflow.

A stage supplies a `Task`; the loop owns optimisation, precision, checkpoint state and the
metric buffer. Orchestration plugs in through `Hooks` (the platform's Ray Train hooks persist
checkpoints and log metrics; tests use plain callbacks).

Reproducibility: the batch and the noise of step s depend only on (seed, step, rank), never on
how many steps this process has already run, so a resumed run follows the same trajectory.
Exactly-once metrics: metrics are buffered and travel inside each checkpoint; hooks publish them
after the checkpoint is durable, and a resumed run republishes only steps not published yet.
Stopping early: a `stop` hook can end training at a log step (e.g. at a time limit); the loop then
checkpoints that step, so training split over several runs adds up to one uninterrupted run. The
checkpoint state's `train_seconds` sums the loop's wall time over every run that led to it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from millivid.schema import Precision, TrainConfig


@dataclass
class Evaluation:
    """Held-out metrics plus pictures (name -> PNG bytes) of one evaluation."""

    metrics: dict[str, float]
    images: dict[str, bytes] = field(default_factory=dict)


class Task(Protocol):
    def build_model(self) -> nn.Module: ...

    def batch(self, step: int, rank: int, world_size: int, device: torch.device) -> Any:
        """The batch of `step` for `rank`: a pure function of (seed, step, rank, world_size)."""

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss and named metrics (0-d tensors, or floats); random draws only from `generator`."""

    def evaluate(self, model: nn.Module, device: torch.device) -> Evaluation: ...


@dataclass
class Hooks:
    """Where the loop's outputs go. Every hook has a do-nothing default.

    `checkpoint(step, state)` gets the full training state; `state["metrics"]` holds the metric
    rows (step, {name: value}) logged since the previous checkpoint. `evaluation(step, result)`
    runs on rank 0 after each held-out evaluation (its metrics are also in the metric rows).
    `stop(step)` is asked at every log step before the last; True ends training there, after a
    checkpoint of that step. It runs on every rank at the same step and must answer the same on
    all of them (asking at log steps keeps every logged window of metrics complete).
    """

    progress: Callable[[int, int, dict[str, float]], None] = lambda step, total, metrics: None
    checkpoint: Callable[[int, dict[str, Any]], None] = lambda step, state: None
    evaluation: Callable[[int, Evaluation], None] = lambda step, result: None
    stop: Callable[[int], bool] = lambda step: False


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(((seed * 1_000_003) + step) * 1_009 + rank)
    return generator


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def mean_across_ranks(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """`fit`'s `reduce` for distributed training: each metric averaged over the process group's
    ranks, in one all-reduce of a tensor on `device` (NCCL needs it on the rank's GPU)."""
    import torch.distributed as dist

    names = sorted(metrics)
    values = torch.tensor([metrics[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(names, (values / dist.get_world_size()).tolist(), strict=True))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def unwrap(model: nn.Module) -> nn.Module:
    """The trained module inside torch.compile's and DistributedDataParallel's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if hasattr(model, "module") else model


def fit(
    task: Task,
    cfg: TrainConfig,
    *,
    precision: Precision = "bf16",
    device: torch.device | None = None,
    hooks: Hooks | None = None,
    state: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap: Callable[[nn.Module], nn.Module] = lambda model: model,
    reduce: Callable[[dict[str, float]], dict[str, float]] = lambda metrics: metrics,
    compile: bool = False,
) -> nn.Module:
    """Train `task` from `state` (a checkpoint's state, or None) to `cfg.steps`, or until `hooks.stop`
    says so; returns the model. The last checkpoint's step tells which of the two happened.
    `compile`: run the (wrapped) model through torch.compile; checkpoints hold the plain weights."""
    device = device or torch.device("cpu")
    hooks = hooks or Hooks()
    torch.manual_seed(cfg.seed)  # parameter init: identical on every rank before DDP broadcasts
    model = task.build_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    start, seconds_before, pending = 0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        seconds_before = float(state.get("train_seconds", 0.0))  # checkpoints older than this field: 0
    model = wrap(model)
    if compile:
        model = torch.compile(model)
    window: list[dict[str, torch.Tensor]] = []
    started = time.perf_counter()

    def train_seconds() -> float:
        return seconds_before + time.perf_counter() - started

    for step in range(start + 1, cfg.steps + 1):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        batch = task.batch(step, rank, world_size, device)
        with autocast(device, precision):
            loss, metrics = task.loss(model, batch, step_generator(cfg.seed, step, rank, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        window.append({"train/loss": loss.detach(), "train/grad_norm": grad_norm.detach(), **metrics})
        log_step = step % cfg.log_every == 0 or step == cfg.steps
        if log_step:  # metrics stay on the device until here: no host sync per step on a GPU
            averaged = reduce({key: float(sum(row[key] for row in window) / len(window)) for key in window[0]})
            averaged["train/lr"] = learning_rate(cfg, step)
            averaged["train/steps_per_s"] = (step - start) / (time.perf_counter() - started)
            averaged["train/wall_seconds_total"] = train_seconds()
            pending.append((step, averaged))
            window = []
            hooks.progress(step, cfg.steps, averaged)
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            model.eval()
            with torch.no_grad(), autocast(device, precision):
                evaluation = task.evaluate(unwrap(model), device)
            pending.append((step, {f"eval/{k}": v for k, v in evaluation.metrics.items()}))
            hooks.evaluation(step, evaluation)
        stopping = log_step and step < cfg.steps and hooks.stop(step)
        if stopping or step % cfg.checkpoint_every == 0 or step == cfg.steps:
            state = copy.deepcopy({  # hooks may keep it; it must not alias the live weights
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "metrics": pending,
                "train_seconds": train_seconds(),
            })
            hooks.checkpoint(step, state)
            pending = []
        if stopping:
            break
    return unwrap(model)
