"""Diffusion transformer throughput per rollout method, at the `cpu` preset sizes (32x32 frames,
64/16/4 tokens of 16 channels, DiT width 256 depth 6, the preset's methods):

- training tokens/s and achieved FLOP/s (vs this run's bf16 matmul peak) through the real loop
  (`millivid.training.fit`, bf16 autocast, AdamW) on random latents, timed between two progress
  reports; FLOPs counted by torch's FlopCounterMode (forward + backward of one batch);
- rollout speed: generated frames/s and seconds per model call for a batch of `sampler.batch_size`
  rollouts with `sampler.steps` DDIM steps from ground-truth context frames, and seconds per
  steady-state chunk (a chunk's model calls, adding `stride` frames; the first chunk after the
  context skips the steps whose frames are ground truth);
- peak memory while sampling: the largest resident-set growth seen during the rollout (freed heap
  pages are returned to the OS first, so memory the training left behind does not hide it).
`--quick` keeps the geometry but uses a tiny model, 2 DDIM steps and a few frames.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from millivid.ae.pyramid import pool_latent
from millivid.config import ExperimentConfig, load_config
from millivid.diffusion.rollout import rollout
from millivid.diffusion.schedule import Schedule, plan_rollout
from millivid.diffusion.task import DiffusionTask, InMemoryClips
from millivid.training import Hooks, autocast, fit
from millivid_bench.matmul import matmul_peak

QUICK = ["diffusion.model.width=64", "diffusion.model.depth=2", "diffusion.train.batch_size=4",
         "diffusion.sampler.steps=2", "diffusion.sampler.batch_size=2"]


def random_clips(tokens_per_level: tuple[int, ...], channels: int, frames: int, videos: int = 4, seed: int = 0) -> InMemoryClips:
    rng = np.random.default_rng(seed)
    latents = [np.tanh(rng.normal(size=(videos, frames, n, channels))).astype(np.float16) for n in tokens_per_level]
    return InMemoryClips(latents, rng.integers(0, 3, (videos, frames)).astype(np.int8))


def model_flops(task: DiffusionTask, model: torch.nn.Module) -> int:
    """Forward + backward FLOPs of one training batch (math attention kernel: the counter has no
    formula for the CPU flash kernel, whose arithmetic is the same)."""
    batch = task.batch(0, 0, 1, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), autocast(torch.device("cpu"), "bf16"):
        loss, _ = task.loss(model, batch, torch.Generator().manual_seed(0))
        loss.backward()
    return counter.get_total_flops()


def train_throughput(task: DiffusionTask, cfg: ExperimentConfig, warmup: int, steps: int, peak: float,
                     device: torch.device | None = None, compile: bool = False) -> tuple[torch.nn.Module, dict]:
    """Seconds per training step through the real loop, and what they achieve against `peak`;
    `compile` wraps the model in torch.compile (its compilation falls in the untimed warm-up)."""
    device = device or torch.device("cpu")
    # progress reports at step `warmup` and at the end bracket the timed steps
    train = cfg.diffusion.train.model_copy(update={"steps": warmup + steps, "log_every": warmup, "eval_every": 10**9,
                                                   "checkpoint_every": 10**9, "warmup_steps": 1})
    reported: list[float] = []
    model = fit(task, train, device=device, compile=compile,
                hooks=Hooks(progress=lambda step, total, metrics: reported.append(time.perf_counter())))
    seconds_per_step = (reported[-1] - reported[0]) / steps
    host = host_batch_seconds(task, device)
    tokens = train.batch_size * task.schedule.max_tokens
    flops = model_flops(task, model.cpu())
    model.to(device)
    return model, {
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": train.batch_size,
        "tokens_per_step": task.schedule.max_tokens,
        "seconds_per_step": seconds_per_step,
        "tokens_per_s": tokens / seconds_per_step,
        "model_flops_per_step": flops,
        "achieved_flops": flops / seconds_per_step,
        "fraction_of_bf16_peak": flops / seconds_per_step / peak,
        "compiled": compile,
        "host_batch_seconds": host,
        "host_fraction_of_step": host / seconds_per_step,
        "attention_mask": "padding mask" if task_padded(task) else "none (every step has the same token count)",
    }


def host_batch_seconds(task: DiffusionTask, device: torch.device, batches: int = 5) -> float:
    """Seconds to assemble one training batch on the host and move it to `device` (on the
    critical path of every step: the loop builds batch k before step k)."""
    task.batch(0, 0, 1, device)
    started = time.perf_counter()
    for step in range(1, batches + 1):
        batch = task.batch(step, 0, 1, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    del batch
    return (time.perf_counter() - started) / batches


def task_padded(task: DiffusionTask) -> bool:
    """Whether a batch can mix steps of different token counts, so attention needs a padding mask
    (and cannot take the flash kernel)."""
    return len(set(task.schedule.tokens_per_step)) > 1


def resident_bytes() -> int:
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * resource.getpagesize()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the peak so far


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so that reused memory shows up as growth."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_during(work: Callable[[], Any], every_s: float = 0.005) -> tuple[Any, int]:
    """(result of work(), largest resident-set growth over the start seen while it ran, bytes)."""
    release_free_memory()
    start, peak, done = resident_bytes(), [0], threading.Event()

    def watch() -> None:
        while not done.wait(every_s):
            peak[0] = max(peak[0], resident_bytes() - start)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = work()
    finally:
        done.set()
        watcher.join()
    return result, max(peak[0], resident_bytes() - start)


def rollout_speed(model: torch.nn.Module, schedule: Schedule, cfg: ExperimentConfig, clips: InMemoryClips, known: int, generated: int) -> dict:
    sampler = cfg.diffusion.sampler
    batch, total = sampler.batch_size, known + generated
    sample = clips.sample(np.random.default_rng(1), batch, total)
    context = [torch.from_numpy(sample[f"latent_{level}"][:, :known]) for level in range(schedule.levels)]
    actions = torch.from_numpy(sample["actions"])
    plan = plan_rollout(schedule, known, total)

    def sample_rollout():
        start = time.perf_counter()
        rollout(model.eval(), schedule, context, actions, total, sampler, reencode=pooled_levels(schedule))
        return time.perf_counter() - start

    seconds, memory = peak_memory_during(sample_rollout)
    return {
        "batch_size": batch,
        "ddim_steps": sampler.steps,
        "context_frames": known,
        "generated_frames": generated,
        "model_calls": len(plan),
        "seconds": seconds,
        "generated_frames_per_s": batch * generated / seconds,
        "seconds_per_model_call": seconds / len(plan),
        "seconds_per_chunk": seconds / len(plan) * len(schedule.steps),  # steady state: a chunk adds `stride` frames
        "peak_memory_growth_mb": memory / 2**20,
    }


def pooled_levels(schedule: Schedule) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """FramePack's re-encoding stand-in (no autoencoder here): coarser levels = pooled finest latents;
    its cost is the autoencoder's, not the DiT's, so it is left out of the measurement on purpose."""
    return lambda finest: [pool_latent(finest, level) for level in range(schedule.levels)]


def run(quick: bool = False) -> dict:
    cfg = load_config("cpu", QUICK if quick else [])
    peak = matmul_peak(torch.bfloat16, *((1024, 3) if quick else (2048, 10)))
    warmup, steps, generated = (1, 2, 2) if quick else (3, 10, 16)
    geometry, channels = cfg.geometry, cfg.autoencoder.model.latent_channels
    schedules = cfg.schedules
    known = max(schedule.span for schedule in schedules.values())
    clips = random_clips(geometry.tokens_per_level, channels, known + generated + 8)
    result: dict[str, Any] = {
        "benchmark": "diffusion",
        "preset": "cpu",
        "quick": quick,
        "threads": torch.get_num_threads(),
        "bf16_matmul_peak_flops": peak,
        "model": cfg.diffusion.model.model_dump(),
        "tokens_per_level": list(geometry.tokens_per_level),
        "latent_channels": channels,
    }
    for name, schedule in schedules.items():
        task = DiffusionTask(schedule, cfg.diffusion.model, channels, clips, cfg.diffusion.train.batch_size, eval_examples=2)
        model, train = train_throughput(task, cfg, warmup, steps, peak)
        result[name] = {"schedule": schedule.describe(), "train": train, "rollout": rollout_speed(model, schedule, cfg, clips, known, generated)}
    return result
