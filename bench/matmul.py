"""Matmul peak of this machine in fp32 and bf16: the reference for achieved-FLOP/s fractions."""

from __future__ import annotations

import time

import torch


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """Achieved FLOP/s of an n x n matmul in `dtype`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()  # the warm-up's kernels finish before the clock starts
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def run(quick: bool = False) -> dict:
    n, repeats = (1024, 3) if quick else (2048, 10)
    return {
        "benchmark": "matmul",
        "n": n,
        "threads": torch.get_num_threads(),
        "fp32_flops": matmul_peak(torch.float32, n, repeats),
        "bf16_flops": matmul_peak(torch.bfloat16, n, repeats),
    }
