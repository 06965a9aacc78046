"""Cost of the evaluation's metric computation at the cpu preset's sizes, per example and method.

Per example and method: LPIPS, PSNR + SSIM, sharpness of every rollout frame, and the stand-in
video features of every chunk. Per comparison: bootstrap curves and Fréchet distances. Rollouts
themselves are not timed (see bench/diffusion.py). One thread, so numbers on a shared machine
are comparable between runs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from millivid.config import load_config
from millivid.eval.consistency import sharpness
from millivid.eval.fvd import RandomVideoFeatures, chunk_frames, frechet_distance, video_features
from millivid.eval.stats import bootstrap_mean
from millivid.metrics import lpips_distance, psnr, ssim
from millivid.perceptual import Lpips


def seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up: first calls pay for allocation and kernel selection
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    cfg = load_config("cpu")
    size, rollout, chunk = cfg.data.size, (32 if quick else cfg.eval.rollout), cfg.eval.fvd_chunk
    examples, resamples, repeats = cfg.eval.examples, (100 if quick else cfg.eval.bootstrap), (1 if quick else 3)
    generator = torch.Generator().manual_seed(0)
    truth, generated = (torch.rand(rollout, 3, size, size, generator=generator) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random backbone costs the same as a pretrained one
        lpips = Lpips("alex", cfg.eval.lpips_backbone, cfg.eval.lpips_weights_path)
    standin = RandomVideoFeatures()
    chunks = chunk_frames(generated, chunk)
    features = video_features(standin, chunks)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        per_example = {
            "lpips_s": seconds(lambda: lpips_distance(lpips, generated, truth), repeats),
            "psnr_ssim_s": seconds(lambda: (psnr(generated, truth), ssim(generated, truth)), repeats),
            "sharpness_s": seconds(lambda: sharpness(generated), repeats),
            "standin_features_s": seconds(lambda: video_features(standin, chunks), repeats),
        }
    sample = rng.normal(size=(examples, features.shape[1]))
    other = rng.normal(size=(examples, features.shape[1]))
    per_comparison = {
        "frechet_per_chunk_s": seconds(lambda: frechet_distance(sample, other), repeats),
        "bootstrap_curve_s": seconds(lambda: bootstrap_mean(rng.random((examples, rollout)), resamples, 0), repeats),
    }
    total = sum(per_example.values())
    return {
        "benchmark": "evaluation",
        "threads": torch.get_num_threads(),
        "frame_size": size,
        "rollout_frames": rollout,
        "fvd_chunk": chunk,
        "examples": examples,
        "bootstrap": resamples,
        "lpips_backbone": lpips.status.tag,
        "per_example_per_method": {**per_example, "total_s": total, "frames_per_s": rollout / total},
        "per_comparison_per_method": {
            **per_comparison,
            "frechet_all_chunks_s": per_comparison["frechet_per_chunk_s"] * (rollout // chunk),
            "bootstrap_all_metrics_s": per_comparison["bootstrap_curve_s"] * 4 * 2,  # 4 metrics, all + revisit frames
        },
    }
