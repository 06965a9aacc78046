"""Autoencoder throughput: training tokens/s and achieved FLOP/s (vs this run's bf16 matmul peak),
and encoding frames/s.

Training runs the real loop (`millivid.training.fit`, bf16 autocast, AdamW, LPIPS in the loss) on
synthetic frames and times the steps between two progress reports. Tokens count every level's
tokens (what the encoder and decoder process). FLOPs are the model's forward + backward counted by
torch's FlopCounterMode (matmuls and attention; LPIPS and the optimizer are not counted, their
time is), so the fraction of peak is a conservative model-FLOP utilisation.
`train_without_lpips` times the same loop with lpips_weight 0: the model's own efficiency.
"""

from __future__ import annotations

import time
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from millivid.ae.config import AutoencoderConfig
from millivid.ae.encode import encode_frames
from millivid.ae.frames import ArrayFrames, synthetic_frames
from millivid.ae.task import AutoencoderTask
from millivid.config import load_config
from millivid.training import Hooks, autocast, fit
from millivid_bench.matmul import matmul_peak


def setups(quick: bool) -> dict[str, tuple[AutoencoderConfig, int]]:
    """name -> (autoencoder config, frame size)."""
    smoke = load_config("smoke")
    if quick:
        return {"smoke": (smoke.autoencoder, smoke.data.size)}
    cpu = load_config("cpu")
    paper_tokens = load_config("cpu", ["data.size=64", "autoencoder.model.levels=4", "autoencoder.train.batch_size=8"])
    return {
        "cpu": (cpu.autoencoder, cpu.data.size),  # 32x32, 64/16/4 tokens
        "paper_tokens": (paper_tokens.autoencoder, paper_tokens.data.size),  # 64x64, 256/64/16/4 tokens
    }


def model_flops(task: AutoencoderTask, model: torch.nn.Module) -> int:
    """Forward + backward FLOPs of one training batch through the model.

    Counted with the math attention kernel: the counter has no formula for the CPU flash kernel,
    the math kernel's matmuls do the same arithmetic.
    """
    batch = task.batch(0, 0, 1, torch.device("cpu"))
    levels = torch.randint(task.cfg.model.levels, (batch.shape[0],))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        with autocast(torch.device("cpu"), "bf16"):
            pyramid = model(batch, levels)
        sum(level.float().mean() for level in pyramid).backward()
    return counter.get_total_flops()


def train_throughput(cfg: AutoencoderConfig, size: int, warmup: int, steps: int, peak: float,
                     device: torch.device | None = None) -> dict:
    device = device or torch.device("cpu")
    frames = ArrayFrames(synthetic_frames(256, size), synthetic_frames(4, size, seed=1))
    # progress reports at step `warmup` and at the end bracket the timed steps
    train = cfg.train.model_copy(update={"steps": warmup + steps, "log_every": warmup,
                                         "eval_every": 10**9, "checkpoint_every": 10**9, "warmup_steps": 1})
    task = AutoencoderTask(cfg, size, frames, eval_frames=4, grid_frames=1)
    reported: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-LPIPS-backbone warning
        model = fit(task, train, device=device,
                    hooks=Hooks(progress=lambda step, total, metrics: reported.append(time.perf_counter())))
    seconds_per_step = (reported[-1] - reported[0]) / steps
    tokens = train.batch_size * sum(model.tokens_per_level)
    flops = model_flops(task, model.cpu())
    return {
        "size": size,
        "tokens_per_level": list(model.tokens_per_level),
        "batch_size": train.batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "lpips_in_loss": cfg.loss.lpips_weight > 0,
        "seconds_per_step": seconds_per_step,
        "tokens_per_s": tokens / seconds_per_step,
        "model_flops_per_step": flops,
        "achieved_flops": flops / seconds_per_step,
        "fraction_of_bf16_peak": flops / seconds_per_step / peak,
    }


def encode_throughput(cfg: AutoencoderConfig, size: int, count: int, device: torch.device | None = None) -> dict:
    device = device or torch.device("cpu")
    torch.manual_seed(0)
    task = AutoencoderTask(cfg, size, None)
    model = task.build_model().eval().to(device)
    frames = synthetic_frames(count, size)
    encode_frames(model, frames[: min(count, 64)])  # warm-up
    start = time.perf_counter()
    encode_frames(model, frames)
    seconds = time.perf_counter() - start
    return {"frames": count, "frames_per_s": count / seconds, "tokens_per_s": count * sum(model.tokens_per_level) / seconds}


def run(quick: bool = False) -> dict:
    peak = matmul_peak(torch.bfloat16, *((1024, 3) if quick else (2048, 10)))
    warmup, steps, encoded = (2, 3, 64) if quick else (5, 20, 1024)
    result = {"benchmark": "autoencoder", "threads": torch.get_num_threads(), "bf16_matmul_peak_flops": peak}
    for name, (cfg, size) in setups(quick).items():
        without_lpips = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"lpips_weight": 0.0})})
        result[name] = {
            "train": train_throughput(cfg, size, warmup, steps, peak),
            "train_without_lpips": train_throughput(without_lpips, size, warmup, steps, peak),
            "encode": encode_throughput(cfg, size, encoded),
        }
    return result
