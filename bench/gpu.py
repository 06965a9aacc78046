"""The GPU path: CUDA, bf16 autocast and NCCL, with the cpu preset's models on one GPU.

- `device`: what torch sees (name, capability, bf16 support, torch and CUDA versions);
- `nccl`: a one-rank NCCL process group: a float64 all-reduce on the GPU (what the Ray Train
  workers' rank-mean metrics do, `millivid.training.mean_across_ranks`) and a few training steps of the autoencoder wrapped in
  DistributedDataParallel under bf16 autocast, checked to finish with a finite loss;
- `autoencoder`: training tokens/s and fraction of this GPU's bf16 matmul peak (measured in the
  same run) at the preset's batch and at a GPU-sized batch, with and without LPIPS; encode frames/s;
- `diffusion`: per rollout method of `--preset` (cpu, or paper: the paper's 313M-parameter DiT at
  batch 8, training only), eager and under torch.compile: seconds per step, fraction of the bf16
  peak, peak GPU memory, host time to assemble a batch (and its share of the step), whether
  attention needs a padding mask (no mask: the flash kernel can run); generated frames/s (cpu).

    millivid bench gpu --preset paper --json

The measuring code is the CPU benchmarks' (`autoencoder`, `diffusion`), given a CUDA device.
Without CUDA the result says so and measures nothing.
"""

from __future__ import annotations

import functools
import os
import socket
import warnings
from typing import Any

import torch

from millivid.config import load_config
from millivid.diffusion.task import DiffusionTask
from millivid_bench import autoencoder as ae_bench
from millivid_bench import diffusion as dit_bench
from millivid_bench.matmul import matmul_peak

GPU_BATCH = 512  # frames per autoencoder step once the preset's 32 leave the GPU idle


def device_facts(device: torch.device) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": props.total_memory / 2**30,
        "multiprocessors": props.multi_processor_count,
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nccl_check(device: torch.device, steps: int) -> dict[str, Any]:
    """One-rank NCCL group: a float64 all-reduce and DDP training steps under bf16 autocast."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from millivid.ae.frames import ArrayFrames, synthetic_frames
    from millivid.ae.task import AutoencoderTask
    from millivid.training import Hooks, fit, mean_across_ranks

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    try:
        values = torch.tensor([1.5, 2.5], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        cfg = load_config("cpu").autoencoder
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps, "log_every": 1, "eval_every": 10**9,
                                                                           "checkpoint_every": 10**9})})
        task = AutoencoderTask(cfg, 32, ArrayFrames(synthetic_frames(64, 32), synthetic_frames(4, 32, seed=1)))
        losses: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-LPIPS-backbone warning
            fit(task, cfg.train, device=device, precision="bf16",
                wrap=lambda model: DistributedDataParallel(model, device_ids=[device.index or 0]),
                reduce=functools.partial(mean_across_ranks, device=device),
                hooks=Hooks(progress=lambda step, total, metrics: losses.append(metrics["train/loss"])))
        return {"backend": dist.get_backend(), "all_reduce": values.tolist(), "ddp_steps": len(losses),
                "ddp_losses_finite": all(torch.isfinite(torch.tensor(losses)).tolist()), "ddp_last_loss": losses[-1]}
    finally:
        dist.destroy_process_group()


def autoencoder(device: torch.device, peak: float, quick: bool) -> dict[str, Any]:
    cfg = load_config("cpu")
    warmup, steps, encoded = (2, 3, 256) if quick else (10, 50, 16384)
    preset = cfg.autoencoder
    big = preset.model_copy(update={"train": preset.train.model_copy(update={"batch_size": GPU_BATCH})})
    without_lpips = {"loss": preset.loss.model_copy(update={"lpips_weight": 0.0})}
    setups = {
        f"batch_{preset.train.batch_size}": preset,
        f"batch_{GPU_BATCH}": big,
        f"batch_{GPU_BATCH}_without_lpips": big.model_copy(update=without_lpips),
    }
    result: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, setup in setups.items():
            result[name] = ae_bench.train_throughput(setup, cfg.data.size, warmup, steps, peak, device)
    result["encode"] = ae_bench.encode_throughput(preset, cfg.data.size, encoded, device)
    return result


# The paper preset's DiT (width 1024, depth 24) at the batch one 80-141 GB card trains; rollouts of
# it take minutes, so that preset measures training only.
PAPER = ["diffusion.train.batch_size=8"]


def diffusion(device: torch.device, peak: float, quick: bool, preset: str) -> dict[str, Any]:
    """Per method: training step time, fraction of peak, peak memory and host batch time, eager and
    torch.compile'd; rollout speed (not for the paper preset)."""
    overrides = dit_bench.QUICK if quick else PAPER if preset == "paper" else ["diffusion.sampler.batch_size=64"]
    cfg = load_config(preset, overrides)
    warmup, steps, generated = (1, 2, 2) if quick else (5, 20, 32)
    geometry, channels = cfg.geometry, cfg.autoencoder.model.latent_channels
    known = max(schedule.span for schedule in cfg.schedules.values())
    clips = dit_bench.random_clips(geometry.tokens_per_level, channels, known + generated + 8, videos=2)
    result: dict[str, Any] = {"preset": preset, "model": cfg.diffusion.model.model_dump(), "sampler": cfg.diffusion.sampler.model_dump()}
    for name, schedule in cfg.schedules.items():
        task = DiffusionTask(schedule, cfg.diffusion.model, channels, clips, cfg.diffusion.train.batch_size, eval_examples=2)
        entry: dict[str, Any] = {}
        for compiled in (False, True):
            torch.cuda.reset_peak_memory_stats(device)
            model, train = dit_bench.train_throughput(task, cfg, warmup, steps, peak, device, compile=compiled)
            train["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            entry["train_compiled" if compiled else "train"] = train
        if preset != "paper":
            torch.cuda.reset_peak_memory_stats(device)
            entry["rollout"] = dit_bench.rollout_speed(model, schedule, cfg, clips, known, generated)
            entry["rollout"]["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result[name] = entry
        del model
        torch.cuda.empty_cache()
    return result


def run(quick: bool = False, preset: str = "cpu") -> dict[str, Any]:
    """`preset` sizes the diffusion part (`cpu`, or `paper`: the paper's DiT, training only); the
    autoencoder and NCCL checks are the cpu preset's."""
    if not torch.cuda.is_available():
        return {"benchmark": "gpu", "cuda": False, "preset": preset, "skipped": "torch sees no CUDA device"}
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    peak = matmul_peak(torch.bfloat16, *((1024, 3) if quick else (8192, 20)), device="cuda")
    return {
        "benchmark": "gpu",
        "cuda": True,
        "quick": quick,
        "device": device_facts(device),
        "bf16_matmul_peak_flops": peak,
        "nccl": nccl_check(device, steps=3 if quick else 20),
        "autoencoder": autoencoder(device, peak, quick),
        "diffusion": diffusion(device, peak, quick, preset),
    }
